"""The routing config and route spec are typed and validated.

The tier, event and distance vocabulary is one set of definitions; the dense diagnostic pass never
counts as inference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cram.consolidation.evaluate import evaluate
from cram.core.errors import ConfigError
from cram.models import HARD, TIERS, DataSpec, ModelConfig, Route, RoutingConfig, Tier, build_model
from cram.models.tiers import EVENT_QUERY, Event, raw_mse, readout_kl
from cram.tasks import srcd_stream as srcd
from cram.tasks.srcd_stream import SRCD, SRCDConfig

B, T = 3, 48


def make(seed: int = 0, **changes):
    cfg = SRCDConfig(length=T, query_rate=0.1, n_library=6, n_novel_keys=30, n_values=5)
    data = SRCD(cfg).sample(B, seed=seed)
    torch.manual_seed(seed)
    model = build_model("cram", ModelConfig(d_model=16, n_heads=2, d_ff=16, ct_dim=8,
                                            semantic_rank=4, familiarity_hidden=8, **changes),
                        DataSpec(cfg.n_keys, cfg.n_values))
    return model.eval(), data


@pytest.mark.parametrize("field", ["q_space", "q_value_score", "router_reads", "router_feature"])
def test_routing_switches_are_checked_by_name(field):
    with pytest.raises(ConfigError, match=f"RoutingConfig.{field}='nope'"):
        RoutingConfig(**{field: "nope"})
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: "nope"})  # the flat config builds its routing view and fails too


def test_model_config_exposes_its_switches_as_one_routing_config():
    cfg = ModelConfig(q_space="raw", router_reads="q", static_routing=True)
    assert cfg.routing == RoutingConfig(q_space="raw", router_reads="q", static_routing=True)
    assert cfg.routing.oracle and not ModelConfig().routing.oracle
    with pytest.raises(ConfigError, match="static_routing"):
        RoutingConfig(static_routing="yes")


def test_route_is_validated_and_frozen():
    with pytest.raises(ConfigError, match="Route.mode='greedy'"):
        Route("greedy")
    with pytest.raises(ConfigError, match="Route.force='attention'"):
        Route(force="attention")
    with pytest.raises(ConfigError, match="temperature"):
        Route(temperature=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        HARD.mode = "soft"
    assert Route().mixes and Route().samples and not HARD.samples
    assert Route(force="no-episodic").samples and not Route(force="no-episodic").mixes
    assert [Route("hard", force=f).attention_off for f in ("working", "episodic", "none")] \
        == [True, False, False]


def test_force_rewrites_the_choice():
    choice = torch.tensor([[0, 1, 2, 1]])
    assert Route(force="no-episodic").apply_force(choice).tolist() == [[0, 0, 2, 0]]
    assert Route(force="semantic").apply_force(choice).tolist() == [[2, 2, 2, 2]]
    assert Route().apply_force(choice) is choice


def test_one_vocabulary_for_tiers_events_and_distances():
    assert TIERS == ("working", "episodic", "semantic")
    assert [TIERS[t] for t in Tier] == ["working", "episodic", "semantic"]
    assert (srcd.EVENT_NONE, srcd.EVENT_STORE, srcd.EVENT_QUERY) == tuple(Event)
    assert srcd.EVENT_QUERY is EVENT_QUERY
    log_p = torch.log_softmax(torch.randn(4, 6), -1)
    assert torch.allclose(readout_kl(log_p, log_p), torch.zeros(4))
    other = torch.log_softmax(torch.randn(4, 6), -1)
    assert (readout_kl(log_p, other) > 0).all()
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(raw_mse(a, b), ((a - b) ** 2).mean(-1))


def test_kl_score_is_the_loss_distance():
    """With the KL score, q = exp(-KL/σ) of exactly the readouts the consolidation loss uses."""
    model, data = make(seed=5, q_value_score="kl", q_sigma=0.5)
    with torch.no_grad():
        out = model(data.to_torch(), HARD, diagnose_dense=True)
    for s in out.layers:
        kl = readout_kl(torch.log_softmax(s.probe_episodic, -1),
                        torch.log_softmax(s.probe_semantic, -1))
        torch.testing.assert_close(s.q, torch.exp(-kl / 0.5))


def _count_dense(model) -> list:
    calls = []
    for block in model.blocks:
        block.episodic.forward_dense = \
            lambda h, _f=block.episodic.forward_dense: calls.append(1) or _f(h)
    return calls


def test_dense_diagnostic_changes_no_output_and_counts_no_attention():
    model, data = make(seed=6)
    batch = data.to_torch()
    with torch.no_grad():
        calls = _count_dense(model)
        plain = model(batch, HARD)
        assert calls == []  # inference computes routed attention only
        diag = model(batch, HARD, diagnose_dense=True)
        assert len(calls) == len(model.blocks)  # one diagnostic dense pass per layer
    assert torch.equal(plain.value_logits, diag.value_logits)
    for p, d in zip(plain.layers, diag.layers):
        assert torch.equal(p.computed, d.computed) and torch.equal(p.choice, d.choice)
        assert p.q is None and d.q is not None and d.r_episodic is not None


def test_evaluation_reports_q_but_counts_only_routed_attention():
    model, data = make(seed=7)
    for block in model.blocks:  # every token to semantic memory: no attention at inference
        with torch.no_grad():
            block.router.weight.zero_()
            block.router.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    task = SRCD(SRCDConfig(length=T, query_rate=0.1, n_library=6, n_novel_keys=30, n_values=5))
    res = evaluate(model, data, 2, "cpu", task=task)
    assert res.metrics["attention_computed"] == 0.0
    assert np.isfinite(res.metrics["q_library"]) and np.isfinite(res.metrics["qhat_novel"])
    assert res.metrics["share_semantic_l0"] == 1.0
