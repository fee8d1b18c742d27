"""CRAM's hard routing.

Forced-semantic computes no attention, and the routed read equals the dense read at the routed rows.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cram.core.errors import ConfigError
from cram.models import HARD, DataSpec, ModelConfig, Route, build_model
from cram.models.attention import CausalSelfAttention
from cram.models.tiers import Tier
from cram.tasks.srcd_stream import SRCD, SRCDConfig

EPISODIC, SEMANTIC = Tier.EPISODIC, Tier.SEMANTIC

B, T = 3, 48


def make(seed: int = 0, **changes):
    cfg = SRCDConfig(length=T, query_rate=0.1, n_library=6, n_novel_keys=30, n_values=5)
    batch = SRCD(cfg).sample(B, seed=seed).to_torch()
    torch.manual_seed(seed)
    model = build_model("cram", ModelConfig(d_model=16, n_heads=2, d_ff=16, ct_dim=8,
                                            semantic_rank=4, familiarity_hidden=8, **changes),
                        DataSpec(cfg.n_keys, cfg.n_values))
    return model.eval(), batch


def test_router_biased_to_semantic_computes_no_attention():
    model, batch = make()
    for block in model.blocks:
        with torch.no_grad():
            block.router.weight.zero_()
            block.router.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    out = model(batch, HARD)
    for s in out.layers:
        assert (s.choice == SEMANTIC).all()
        assert not s.computed.any() and (s.episodic == 0).all()
        assert s.r_episodic is None  # nothing dense was computed either (diagnose_dense=False)


def test_force_semantic_in_hard_mode_computes_no_attention():
    model, batch = make(seed=1)
    calls = []
    for block in model.blocks:
        block.episodic.forward_dense = \
            lambda h, _f=block.episodic.forward_dense: calls.append(1) or _f(h)
    out = model(batch, Route("hard", force="semantic"))
    assert not any(s.computed.any() for s in out.layers)
    assert calls == []  # the dense path was never entered


def test_routed_read_equals_dense_read_at_routed_rows():
    model, batch = make(seed=2)
    for block in model.blocks:  # a router that sends some tokens to episodic memory, not all
        with torch.no_grad():
            block.router.weight.normal_(0.0, 3.0)
            block.router.bias.zero_()
    seen = []
    for block in model.blocks:
        attn = block.episodic
        original = attn.forward_routed

        def spy(h, selected, _attn=attn, _orig=original):
            out = _orig(h, selected)
            seen.append((_attn, h.detach(), selected, out.detach()))
            return out

        attn.forward_routed = spy
    with torch.no_grad():
        out = model(batch, HARD)
    assert len(seen) == len(model.blocks)
    for (attn, h, selected, routed), s in zip(seen, out.layers):
        assert torch.equal(selected, s.choice == EPISODIC) and torch.equal(selected, s.computed)
        assert 0 < selected.sum() < selected.numel()  # a real mix of routed and skipped tokens
        with torch.no_grad():
            dense = attn.forward_dense(h)  # (B, T, d)
        torch.testing.assert_close(routed[selected], dense[selected], rtol=1e-5, atol=1e-6)
        assert (routed[~selected] == 0).all()


def test_hard_all_episodic_equals_soft_all_episodic():
    """Whole-model check: forced episodic, the routed and dense forwards agree.

    Forcing every token to episodic memory, the routed (hard) forward and the dense (soft) forward
    give the same outputs.
    """
    model, batch = make(seed=3)
    with torch.no_grad():
        soft = model(batch, Route(force="episodic"))
        hard = model(batch, Route("hard", force="episodic"))
    torch.testing.assert_close(hard.value_logits, soft.value_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hard.signal_pred, soft.signal_pred, rtol=1e-5, atol=1e-5)


def test_routed_attention_module_with_window():
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 2, window=5)
    h = torch.randn(2, 30, 16)
    selected = torch.rand(2, 30) < 0.3
    with torch.no_grad():
        routed, dense = attn.forward_routed(h, selected), attn.forward_dense(h)
    torch.testing.assert_close(routed[selected], dense[selected], rtol=1e-5, atol=1e-6)
    assert (routed[~selected] == 0).all()


def _router_reads_only_its_feature(model, value_logit: float) -> None:
    """The router's episodic logit is its familiarity feature alone.

    The familiarity head outputs the constant log-odds ``value_logit``; the router's episodic logit
    is its feature input alone (no h, no bias).
    """
    for block in model.blocks:
        with torch.no_grad():
            torch.nn.init.zeros_(block.familiarity.net[-1].weight)
            torch.nn.init.constant_(block.familiarity.net[-1].bias, value_logit)
            block.router.weight.zero_()
            block.router.bias.zero_()
            block.router.weight[EPISODIC, -1] = 1.0


def test_router_feature_logit_reads_the_log_odds_of_qhat():
    for feature, expected in (("prob", torch.sigmoid(torch.tensor(1.5)).item()), ("logit", 1.5)):
        model, batch = make(seed=3, router_feature=feature)
        _router_reads_only_its_feature(model, 1.5)
        out = model(batch, HARD)
        for s in out.layers:
            qhat = torch.sigmoid(torch.tensor(1.5)).item()
            assert torch.allclose(s.qhat, torch.full_like(s.qhat, qhat))
            assert torch.allclose(s.logits[..., EPISODIC], torch.full_like(s.qhat, expected),
                                  atol=1e-6)


def test_oracle_router_feature_logit_reads_the_log_odds_of_q():
    model, batch = make(seed=4, router_feature="logit", router_reads="q")
    _router_reads_only_its_feature(model, 0.0)
    out = model(batch, HARD)
    for s in out.layers:
        assert torch.allclose(s.logits[..., EPISODIC], torch.logit(s.q, eps=1e-4), atol=1e-5)


def test_bad_router_feature_is_refused():
    import pytest

    from cram.core.errors import ConfigError

    with pytest.raises(ConfigError, match="router_feature"):
        ModelConfig(router_feature="odds")


def _first_layer_read(model, batch) -> torch.Tensor:
    """Layer 0's dense episodic read r_E (B, T, d) under forced attention."""
    with torch.no_grad():
        return model(batch, Route("hard", force="episodic"), diagnose_dense=True
                     ).layers[0].r_episodic


def _silence_working_memory(model) -> None:
    with torch.no_grad():
        for block in model.blocks:
            block.working.readout.weight.zero_()
            block.working.readout.bias.zero_()


def test_working_layout_decides_what_attention_reads():
    """Serial: layer 0's attention reads the CT-ODE's output; parallel: only the layer's input."""
    for layout, changes_read in (("serial", True), ("parallel", False)):
        model, batch = make(seed=3, working_layout=layout)
        before = _first_layer_read(model, batch)
        _silence_working_memory(model)
        after = _first_layer_read(model, batch)
        assert (not torch.allclose(before, after)) == changes_read, layout


def test_working_layout_off_has_no_working_memory_and_trains():
    model, batch = make(seed=4, working_layout="off")
    assert all(block.working is None and block.norm_working is None for block in model.blocks)
    assert not any("working" in name for name, _ in model.named_parameters())
    out = model.train()(batch, Route("hard", force="episodic"))
    out.value_logits.sum().backward()
    assert all(p.grad is not None for p in model.blocks[0].episodic.parameters())
    serial, _ = make(seed=4)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in serial.parameters())


def _soft(seed: int) -> Route:
    return Route(temperature=1.0, generator=torch.Generator().manual_seed(seed))


def test_working_dropout_zero_draws_nothing_and_keeps_the_gumbel_stream():
    """Dropout 0 draws no keep mask and leaves the Gumbel uniforms as they were."""
    plain, batch = make(seed=5, working_dropout=0.0)
    route = plain.train().with_route_noise(_soft(1), batch)
    assert route.working_keep is None
    dropped, _ = make(seed=5, working_dropout=0.5, working_dropout_phase="always")
    noisy = dropped.train().with_route_noise(_soft(1), batch)
    for a, b in zip(route.uniforms, noisy.uniforms, strict=True):
        assert torch.equal(a, b)  # the dropout draws after the Gumbel noise


def test_working_dropout_masks_whole_sequences_in_training_only():
    model, batch = make(seed=6, working_dropout=0.5, working_dropout_phase="always")
    route = model.train().with_route_noise(_soft(2), batch)
    assert len(route.working_keep) == len(model.blocks)
    for keep in route.working_keep:  # (B,): dropped 0, kept 1 / (1 - p)
        assert keep.shape == (B,) and set(keep.tolist()) <= {0.0, 2.0}
    assert model.eval().with_route_noise(_soft(2), batch).working_keep is None
    model.train()
    assert model.with_route_noise(Route("hard", force="working"), batch).working_keep is None


def test_working_dropout_zero_keep_equals_silenced_working_memory():
    """A sequence kept at 0 gets the output of a silenced CT-ODE; one kept at 1 is unchanged."""
    model, batch = make(seed=7, working_dropout=0.5)
    forced = Route("soft", force="episodic")
    keep = torch.tensor([0.0, 1.0, 0.0])  # (B,)
    dropped = model(batch, dataclasses.replace(forced, working_keep=(keep,) * 2)).value_logits
    full = model(batch, forced).value_logits
    _silence_working_memory(model)
    silent = model(batch, forced).value_logits
    assert torch.allclose(dropped[keep == 0], silent[keep == 0], atol=1e-6)
    assert torch.allclose(dropped[1], full[1], atol=1e-6)
    assert not torch.allclose(full[0], silent[0])


def test_working_dropout_is_bounded():
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="working_dropout"):
            ModelConfig(working_dropout=bad)


def test_working_dropout_drawn_before_the_call_is_the_one_used():
    """A forced warm-up route's pre-drawn keep mask is used, not drawn again by the forward."""
    model, batch = make(seed=8, working_dropout=0.5)
    generator = torch.Generator().manual_seed(3)
    route = model.train().with_route_noise(Route(force="episodic", generator=generator), batch)
    assert route.uniforms is None and route.working_keep is not None
    state = generator.get_state()
    model(batch, route)
    assert torch.equal(generator.get_state(), state)


def test_working_dropout_phase_warmup_drops_only_in_the_forced_warmup_forward():
    """``warmup``: a keep mask on the soft route forced to episodic memory, none after it."""
    model, batch = make(seed=9, working_dropout=0.5, working_dropout_phase="warmup")
    model.train()
    warm = model.with_route_noise(Route(force="episodic", generator=torch.Generator()), batch)
    assert warm.working_keep is not None and len(warm.working_keep) == len(model.blocks)
    after = model.with_route_noise(_soft(3), batch)
    assert after.working_keep is None and after.uniforms is not None
    always, _ = make(seed=9, working_dropout=0.5, working_dropout_phase="always")
    assert always.train().with_route_noise(_soft(3), batch).working_keep is not None
    with pytest.raises(ConfigError, match="working_dropout_phase"):
        ModelConfig(working_dropout_phase="late")
