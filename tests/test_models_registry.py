"""Every registered model builds, runs soft and hard and has finite gradients.

It also computes attention exactly where it claims to.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from strategies import score_rows

from cram.core.errors import ConfigError
from cram.models import (
    HARD,
    MODEL_NAMES,
    MODEL_VARIANTS,
    DataSpec,
    ModelConfig,
    Route,
    build_model,
)
from cram.models.mod import capacity_k, top_k_mask
from cram.tasks.srcd_stream import EVENT_QUERY, SRCD, SRCDConfig

B, T = 3, 40


def tiny_config(name: str, **changes) -> ModelConfig:
    fields = {"d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 16, "ct_dim": 8,
              "semantic_rank": 4, "familiarity_hidden": 8}
    base = ModelConfig(**{**fields, **changes})
    return MODEL_VARIANTS[name].apply(base)


@pytest.fixture(scope="module", params=["id", "vector"])
def data(request):
    cfg = SRCDConfig(length=T, query_rate=0.1, n_library=6, n_novel_keys=30, n_values=5,
                     key_encoding=request.param, key_dim=6)
    batch = SRCD(cfg).sample(B, seed=0).to_torch()
    spec = DataSpec(cfg.n_keys, cfg.n_values, cfg.key_encoding, cfg.key_dim)
    return batch, spec


def build(name: str, spec: DataSpec, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model(name, tiny_config(name, **changes), spec)


def expected_computed(name: str, model, out, batch, mode: str) -> list[torch.Tensor | None]:
    """What each model claims about where attention is computed; ``None`` = checked elsewhere."""
    n = model.config.n_layers
    ones = torch.ones(B, T, dtype=torch.bool)
    zeros = torch.zeros(B, T, dtype=torch.bool)
    if name in ("transformer", "sliding-window", "cram-oracle-q"):
        return [ones] * n
    if name == "ct-only":
        return [zeros] * n
    if name == "static-hybrid":
        return [ones if i in model.config.attention_layers else zeros for i in range(n)]
    if name == "cram-static":
        return [ones if mode == "soft" else batch["event"] == EVENT_QUERY] * n
    if name.startswith("cram"):
        return [ones if mode == "soft" else s.choice == 1 for s in out.layers]
    if name in ("seqboat", "seqboat-matched"):
        return [ones if mode == "soft" else s.extra["gate"] > model.config.seqboat_threshold
                for s in out.layers]
    if name in ("mod", "mod-matched"):
        return [None] * n
    raise AssertionError(f"no expectation written for model {name!r}")


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_forward_shapes_gradients_and_computed(name, mode, data):
    batch, spec = data
    model = build(name, spec)
    out = model(batch, Route(mode, temperature=0.7, generator=torch.Generator().manual_seed(1)))
    assert out.value_logits.shape == (B, T, spec.n_values)
    assert out.signal_pred.shape == (B, T)
    assert torch.isfinite(out.value_logits).all() and torch.isfinite(out.signal_pred).all()
    assert len(out.layers) == model.config.n_layers
    for s in out.layers:
        assert s.episodic.shape == (B, T) and s.episodic.is_floating_point()
        assert s.computed.shape == (B, T) and s.computed.dtype == torch.bool
        assert torch.isfinite(s.episodic).all()
        assert ((s.episodic >= 0) & (s.episodic <= 1)).all()
        if mode == "hard":  # hard mode: 0/1 choices, and a token reading attention computed it
            assert set(s.episodic.unique().tolist()) <= {0.0, 1.0}
            assert not (s.episodic.bool() & ~s.computed).any()
    for s, want in zip(out.layers, expected_computed(name, model, out, batch, mode)):
        if want is not None:
            assert torch.equal(s.computed, want), name
    loss = out.value_logits.square().mean() + out.signal_pred.square().mean()
    if out.aux_loss is not None:
        assert out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
        loss = loss + out.aux_loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert model.embed.event.weight.grad.abs().sum() > 0


def test_every_registered_name_builds_the_family_it_names():
    spec = DataSpec(n_keys=20, n_values=4)
    for name in MODEL_NAMES:
        model = build(name, spec)
        assert model.num_parameters() > 0
        assert model.model_args()["config"]["d_model"] == 16
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("no-such-model", ModelConfig(), spec)


@pytest.mark.parametrize("capacity", [0.05, 0.125, 0.5, 1.0])
def test_mod_computes_exactly_k_per_sequence_per_layer(capacity, data):
    batch, spec = data
    model = build("mod", spec, mod_capacity=capacity)
    k = capacity_k(capacity, T)
    assert k == max(1, math.ceil(capacity * T - 1e-9))
    for mode in ("soft", "hard"):
        out = model(batch, Route(mode))
        for s in out.layers:
            assert (s.computed.sum(-1) == k).all()
            scores = s.extra["router_scores"]  # (B, T): the chosen tokens are the k best
            worst_in = scores.masked_fill(~s.computed, math.inf).min(-1).values
            best_out = scores.masked_fill(s.computed, -math.inf).max(-1).values
            assert (worst_in >= best_out).all()


def test_mod_router_receives_gradient_through_the_selected_tokens(data):
    batch, spec = data
    model = build("mod", spec)
    out = model(batch, Route())
    out.value_logits.square().mean().backward()
    for block in model.blocks:
        assert block.router.weight.grad.abs().sum() > 0


def test_seqboat_hard_equals_soft_at_gated_rows_when_every_gate_is_open(data):
    """With every gate above threshold, the routed path must reproduce the dense soft path."""
    batch, spec = data
    model = build("seqboat", spec)
    for block in model.blocks:
        with torch.no_grad():
            block.gate.weight.zero_()
            block.gate.bias.fill_(3.0)
    soft, hard = model(batch, Route()), model(batch, HARD)
    assert all(s.computed.all() for s in hard.layers)
    torch.testing.assert_close(hard.value_logits, soft.value_logits, rtol=1e-5, atol=1e-5)


def test_seqboat_sparsity_penalty_pushes_gates_down(data):
    batch, spec = data
    model = build("seqboat", spec)
    out = model(batch, Route())
    out.aux_loss.backward()
    for block in model.blocks:  # d(mean σ(b))/db > 0, so descent lowers the bias
        assert block.gate.bias.grad.item() > 0


@pytest.mark.parametrize("name", ["static-hybrid", "mod", "seqboat"])
def test_forcing_attention_off_computes_none(name, data):
    batch, spec = data
    model = build(name, spec)
    for force in ("working", "semantic", "no-episodic"):
        out = model(batch, Route("hard", force=force))
        assert not any(s.computed.any() for s in out.layers)
        assert all((s.episodic == 0).all() for s in out.layers)


def test_ct_only_is_causal(data):
    """Changing the last position cannot change any earlier output (CT scan runs forward)."""
    batch, spec = data
    model = build("ct-only", spec)
    other = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    other["signal"][:, -1] += 5.0
    a, b = model(batch), model(other)
    torch.testing.assert_close(a.signal_pred[:, :-1], b.signal_pred[:, :-1])
    assert not torch.allclose(a.signal_pred[:, -1], b.signal_pred[:, -1])


def test_static_hybrid_layout_is_data():
    spec = DataSpec(n_keys=20, n_values=4)
    model = build("static-hybrid", spec, n_layers=4, attention_layers=(1, 3))
    kinds = [type(b).__name__ for b in model.blocks]
    assert kinds == ["CTBlock", "TransformerBlock", "CTBlock", "TransformerBlock"]


@settings(max_examples=50, deadline=None)
@given(case=score_rows())
def test_top_k_mask_keeps_exactly_the_k_best(case):
    scores, capacity = case
    t = scores.shape[1]
    k = capacity_k(capacity, t)
    assert 1 <= k <= t and k >= capacity * t - 1e-6
    mask = top_k_mask(torch.from_numpy(scores), k).numpy()
    assert (mask.sum(1) == k).all()
    kth = np.sort(scores, axis=1)[:, -k]  # (B,) the k-th largest score per row
    np.testing.assert_array_equal(mask, scores >= kth[:, None])


def test_mod_force_episodic_opens_every_token(data):
    batch, spec = data
    out = build("mod", spec)(batch, Route("hard", force="episodic"))
    assert all(s.computed.all() for s in out.layers)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shortest_sequences_run(name):
    """T=2 (one store, one query): top-k, routing and the scan must handle the smallest case."""
    cfg = SRCDConfig(length=2, query_rate=0.5, n_library=3, n_novel_keys=5, n_values=3)
    batch = SRCD(cfg).sample(2, seed=0).to_torch()
    model = build(name, DataSpec(cfg.n_keys, cfg.n_values))
    for mode in ("soft", "hard"):
        out = model(batch, Route(mode))
        assert out.value_logits.shape == (2, 2, 3) and torch.isfinite(out.value_logits).all()
