"""The objective's cost term.

Ungated, it charges the router's expected episodic share; with ``cost_gate="familiarity"`` each
token's share is weighted by its stop-grad q̂.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cram.consolidation.config import TrainConfig, resolve
from cram.consolidation.losses import compute_loss
from cram.core.errors import ConfigError
from cram.models import DataSpec, Route, build_model
from cram.tasks.srcd_stream import SRCD


def _model_and_batch(seed: int = 0):
    config = resolve("cram", "cpu-tiny")
    batch = SRCD(config.data).sample(4, seed=seed).to_torch()
    torch.manual_seed(seed)
    spec = DataSpec(config.data.n_keys, config.data.n_values)
    return build_model("cram", config.model, spec), batch, config.train


def _cost(model, batch, train: TrainConfig, step: int) -> tuple[float, torch.Tensor]:
    """The logged cost term and the gradient it alone puts on the first router's bias."""
    out = model(batch, Route(temperature=1.0, generator=torch.Generator().manual_seed(0)))
    bias = model.blocks[0].router.bias
    with_cost = compute_loss(out, batch, train, step)
    free = dataclasses.replace(train, cost_query=0.0, cost_nonquery=0.0)
    without_cost = compute_loss(out, batch, free, step)
    grad = torch.autograd.grad(with_cost.total, bias, retain_graph=True, allow_unused=True)[0]
    grad_free = torch.autograd.grad(without_cost.total, bias, allow_unused=True)[0]
    zero = torch.zeros_like(bias)
    return with_cost.terms["loss_cost"], (zero if grad is None else grad) - (
        zero if grad_free is None else grad_free)


def _set_qhat(model, logit: float) -> None:
    """Make every familiarity head output q̂ = sigmoid(logit) for all tokens."""
    for block in model.blocks:
        torch.nn.init.zeros_(block.familiarity.net[-1].weight)
        torch.nn.init.constant_(block.familiarity.net[-1].bias, logit)


@pytest.mark.parametrize("logit, qhat", [(-30.0, 0.0), (0.0, 0.5), (30.0, 1.0)])
def test_familiarity_gate_scales_cost_by_qhat(logit, qhat):
    model, batch, train = _model_and_batch()
    step = train.warmup_steps + train.cost_ramp_steps  # full cost
    _set_qhat(model, logit)  # the router reads q̂, so both costs are taken on this same state
    ungated, ungated_grad = _cost(model, batch, dataclasses.replace(train, cost_gate="none"), step)
    gated, gated_grad = _cost(model, batch, dataclasses.replace(train, cost_gate="familiarity"),
                              step)
    assert ungated > 0.1
    assert gated == pytest.approx(qhat * ungated, rel=1e-4, abs=1e-9)
    assert torch.allclose(gated_grad, qhat * ungated_grad, atol=1e-7)
    if qhat == 0.0:  # an unfamiliar token is never pushed off attention
        assert gated_grad.abs().max() < 1e-7 and ungated_grad.abs().max() > 1e-4


def test_cost_is_zero_during_warmup():
    model, batch, train = _model_and_batch(seed=1)
    cost, grad = _cost(model, batch, train, step=0)
    assert cost == 0.0 and grad.abs().max() < 1e-7


def test_unknown_cost_gate_is_refused():
    with pytest.raises(ConfigError, match="cost_gate"):
        resolve("cram", "cpu-tiny", ["train.cost_gate=sometimes"])


def test_familiarity_queries_gate_charges_nonquery_tokens_ungated():
    model, batch, train = _model_and_batch(seed=2)
    step = train.warmup_steps + train.cost_ramp_steps
    _set_qhat(model, -30.0)  # q̂ = 0 everywhere: gated queries cost nothing
    gated, gated_grad = _cost(model, batch,
                              dataclasses.replace(train, cost_gate="familiarity-queries"),
                              step)
    nonquery_only, nonquery_grad = _cost(
        model, batch, dataclasses.replace(train, cost_gate="none", cost_query=0.0), step)
    assert nonquery_only > 0.01
    assert gated == pytest.approx(nonquery_only, rel=1e-5)
    assert torch.allclose(gated_grad, nonquery_grad, atol=1e-7)


@pytest.mark.parametrize("answered", [0.0, 1.0])
def test_replaceable_gate_charges_queries_in_full_where_no_attention_still_answers(answered):
    # issue 32: q̂ = 0 everywhere. A query the model answers with attention switched off is
    # charged like the ungated cost; one it does not answer is gated (costs nothing); non-query
    # tokens are charged ungated as with "familiarity-queries"
    from cram.consolidation.losses import ANSWERED_WITHOUT_ATTENTION

    model, batch, train = _model_and_batch(seed=2)
    step = train.warmup_steps + train.cost_ramp_steps
    _set_qhat(model, -30.0)
    mask = torch.full(batch["event"].shape, answered)  # (B, T)
    marked = {**batch, ANSWERED_WITHOUT_ATTENTION: mask}
    replaceable, grad = _cost(model, marked, dataclasses.replace(train, cost_gate="replaceable"),
                              step)
    reference = "none" if answered else "familiarity-queries"
    expected, expected_grad = _cost(model, batch, dataclasses.replace(train, cost_gate=reference),
                                    step)
    assert replaceable == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(grad, expected_grad, atol=1e-7)
    # without the mask (warm-up, evaluation) the gate falls back to "familiarity-queries"
    fallback, _ = _cost(model, batch, dataclasses.replace(train, cost_gate="replaceable"), step)
    gated, _ = _cost(model, batch, dataclasses.replace(train, cost_gate="familiarity-queries"),
                     step)
    assert fallback == pytest.approx(gated, rel=1e-5)


def test_answered_without_attention_marks_labelled_tokens_the_working_forward_gets_right():
    from cram.consolidation.routing_schedule import answered_without_attention, no_retrieval_logits

    model, batch, _ = _model_and_batch(seed=4)
    model.train()
    logits = no_retrieval_logits(model, batch)  # (B, T, V)
    answer = logits.argmax(-1).clone()  # the working forward's own guesses: all right ...
    answer[:, ::2] = -100  # ... except where unscored
    answer[0, 1] = (answer[0, 1] + 1) % logits.shape[-1]  # and one wrong label
    mask = answered_without_attention(model, {**batch, "answer": answer}, -100)
    assert model.training  # the mode is restored
    expected = torch.ones_like(mask)
    expected[:, ::2] = 0.0
    expected[0, 1] = 0.0
    assert torch.equal(mask, expected)


def test_router_logit_penalty_is_the_centred_spread_and_pulls_the_bias_in():
    model, batch, train = _model_and_batch(seed=3)
    train = dataclasses.replace(train, router_logit_weight=0.05)
    out = model(batch, Route(temperature=1.0, generator=torch.Generator().manual_seed(0)))
    assert compute_loss(out, batch, train, step=0).terms["loss_router"] == 0.0  # off in warm-up
    step = train.warmup_steps
    loss = compute_loss(out, batch, train, step=step)
    is_query = batch["event"] == 2
    expected = 0.0
    for s in out.layers:
        spread = (s.logits - s.logits.mean(-1, keepdim=True)).pow(2).sum(-1)
        expected += 0.05 * (spread[is_query].mean() + spread[~is_query].mean()).item()
    assert loss.terms["loss_router"] == pytest.approx(expected / len(out.layers), rel=1e-5)
    penalty_only = dataclasses.replace(train, router_logit_weight=0.05)
    free = dataclasses.replace(train, router_logit_weight=0.0)
    bias = model.blocks[0].router.bias  # initialised [0, 2, 0]: episodic-biased
    g_with = torch.autograd.grad(compute_loss(out, batch, penalty_only, step).total, bias,
                                 retain_graph=True)[0]
    g_free = torch.autograd.grad(compute_loss(out, batch, free, step).total, bias)[0]
    assert (g_with - g_free)[1] > 0  # gradient descent lowers the episodic bias toward the others


def test_negative_router_logit_weight_is_refused():
    with pytest.raises(ConfigError, match="router_logit_weight"):
        resolve("cram", "cpu-tiny", ["train.router_logit_weight=-1"])


# ------------------------------------------------------------------ issue 16: sync-free probe loss
@pytest.mark.parametrize("case", ["some", "none", "ignored"])
def test_probe_loss_without_read_back_matches_the_selected_rows(case):
    """The device path's masked mean equals the cross-entropy over the selected rows."""
    from cram.consolidation.losses import _probe_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, 7, generator=gen, requires_grad=True)  # (B, T, V)
    answer = torch.randint(0, 7, (3, 20), generator=gen)
    where = torch.rand(3, 20, generator=gen) < 0.3
    if case == "none":
        where[:] = False
    if case == "ignored":  # an unscored query (e.g. a hidden library label) is left out by both
        answer[where.nonzero()[0].tolist()[0], where.nonzero()[0].tolist()[1]] = -100
    plain = _probe_loss(logits, answer, where, resident=False)
    device = _probe_loss(logits, answer, where, resident=True)
    torch.testing.assert_close(device, plain, rtol=1e-6, atol=1e-7)
    if case != "none":
        g_plain, = torch.autograd.grad(plain, logits)
        g_device, = torch.autograd.grad(device, logits)
        torch.testing.assert_close(g_device, g_plain, rtol=1e-5, atol=1e-7)
    else:
        assert float(plain.detach()) == float(device.detach()) == 0.0


def test_compute_loss_is_the_same_on_the_sync_free_path(monkeypatch):
    model, batch, train = _model_and_batch()
    out = model(batch, Route(temperature=1.0, generator=torch.Generator().manual_seed(0)))
    plain = compute_loss(out, batch, train, step=0)
    monkeypatch.setenv("CRAM_SYNC_FREE", "1")
    device = compute_loss(out, batch, train, step=0)
    assert plain.terms.keys() == device.terms.keys()
    for name, value in plain.terms.items():
        assert device.terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


# ------------------------------------------------- router consistency (issue 15's proposed signal)
def test_router_consistency_prefers_the_tier_that_reproduces_attention():
    """Gradient descent on the term moves the router from working memory to the semantic tier.

    Semantic readout close to the episodic one, working memory's far: the working logit goes
    down, the semantic one up by as much (d(E[d])/dz_t = g_t (d_t - E[d]) over the two), and the
    attention logit is untouched (its share is the cost's business).
    """
    from types import SimpleNamespace

    from cram.consolidation.losses import _expected_readout_distance
    from cram.models.tiers import Tier

    vocab = 5
    log_p_e = torch.log_softmax(torch.tensor([[[6.0, 0, 0, 0, 0]]]), -1)  # (1, 1, V) confident
    kl_semantic = torch.tensor([[0.05]])  # (1, 1): the semantic tier almost agrees
    logits = torch.zeros(1, 1, 3, requires_grad=True)
    layer = SimpleNamespace(q_space="value", logits=logits,
                            extra={"probe_bias": torch.zeros(vocab)})  # uniform working readout
    value = _expected_readout_distance(layer, log_p_e, kl_semantic)
    kl_working = float((log_p_e.exp() * (log_p_e - torch.log_softmax(torch.zeros(vocab), -1)))
                       .sum())
    assert float(value) == pytest.approx((kl_working + 0.05) / 2, rel=1e-5)
    grad, = torch.autograd.grad(value.sum(), logits)
    assert grad[0, 0, Tier.WORKING] > 0 > grad[0, 0, Tier.SEMANTIC]
    assert float(grad[0, 0, Tier.WORKING]) == pytest.approx(-float(grad[0, 0, Tier.SEMANTIC]))
    assert float(grad[0, 0, Tier.EPISODIC]) == 0.0


def test_router_consistency_is_off_by_default_and_trains_only_the_router():
    model, batch, train = _model_and_batch()
    out = model(batch, Route(temperature=1.0, generator=torch.Generator().manual_seed(0)))
    step = train.warmup_steps + 5
    off = compute_loss(out, batch, train, step)
    assert "loss_router_consistency" not in off.terms
    on_cfg = dataclasses.replace(train, router_consistency_weight=1.0)
    on = compute_loss(out, batch, on_cfg, step)
    term = on.terms["loss_router_consistency"]
    assert term > 0 and on.terms["loss_total"] == pytest.approx(off.terms["loss_total"] + term)
    warm = compute_loss(out, batch, on_cfg, train.warmup_steps - 1)  # warm-up: not yet
    assert warm.terms["loss_router_consistency"] == 0.0
    # the term's gradient (total with it minus total without) goes through the router's
    # probabilities only: every router moves; the distances are stop-grad, so no value probe and
    # not the last layer's semantic tier (earlier layers' reach it through the residual stream,
    # as the cost term's does)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(on.total - off.total, list(params.values()), allow_unused=True)
    touched = {n for (n, _), g in zip(params.items(), grads, strict=True)
               if g is not None and g.abs().sum() > 0}
    last = f"blocks.{len(model.blocks) - 1}."
    assert all(f"blocks.{i}.router.weight" in touched for i in range(len(model.blocks)))
    assert not any("value_probe" in n or n.startswith(last + "semantic") for n in touched)
