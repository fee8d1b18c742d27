"""Layer-aware familiarity (issue 13 item 2): targets count only where no lower layer attended."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from cram.consolidation.config import resolve
from cram.consolidation.layer_familiarity import attended_below, scoped
from cram.consolidation.losses import compute_loss
from cram.models import DataSpec, Route, build_model
from cram.tasks.srcd_stream import SRCD


def test_attended_below_accumulates_lower_layers():
    choices = [torch.tensor([[1, 0, 2, 0]]), torch.tensor([[0, 1, 0, 0]]),
               torch.tensor([[0, 0, 0, 1]])]
    below = attended_below([SimpleNamespace(choice=c) for c in choices])
    assert below[0] is None
    assert below[1].tolist() == [[True, False, False, False]]
    assert below[2].tolist() == [[True, True, False, False]]


def test_scoped_zeroes_targets_and_masks_consolidation_where_a_lower_layer_attended():
    where = torch.tensor([[True, True, False]])
    q = torch.tensor([[0.9, 0.8, 0.7]])
    own, target = scoped(where, q, torch.tensor([[True, False, False]]))
    assert own.tolist() == [[False, True, False]]
    assert torch.allclose(target, torch.tensor([[0.0, 0.8, 0.7]]))
    own_all, target_all = scoped(where, q, None)
    assert own_all.tolist() == where.tolist() and torch.equal(target_all, q)


def test_retrieving_scope_trains_upper_qhat_toward_zero_in_forced_warmup():
    """Forced episodic routing: layer 1's familiarity target is 0, layer 0 unchanged.

    Layer 0 attends everywhere, so layer 1's consolidation term vanishes.
    """
    config = resolve("cram", "cpu-tiny")
    batch = SRCD(config.data).sample(4, seed=0).to_torch()
    torch.manual_seed(0)
    model = build_model("cram", config.model, DataSpec(config.data.n_keys, config.data.n_values))
    out = model(batch, Route(temperature=1.0, force="episodic"))
    train_all = config.train
    train_scoped = dataclasses.replace(train_all, familiarity_scope="retrieving")
    qhat1 = model.blocks[1].familiarity.net[-1].bias
    losses = {k: compute_loss(out, batch, cfg, 0) for k, cfg in (("all", train_all),
                                                                ("retrieving", train_scoped))}
    assert losses["all"].terms["loss_value"] == losses["retrieving"].terms["loss_value"]
    assert losses["retrieving"].terms["loss_consolidation"] < losses["all"].terms[
        "loss_consolidation"]
    g = {k: torch.autograd.grad(v.total, qhat1, retain_graph=True)[0] for k, v in losses.items()}
    assert g["retrieving"].item() > 0  # pushes layer-1 q̂ down (target 0 < q̂ everywhere)
    assert not torch.allclose(g["all"], g["retrieving"])
