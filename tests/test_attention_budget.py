"""Evaluation at an attention budget (``Route.attention_budget``, ``cram eval --attention-budget``).

The cap keeps the router's own highest-ranked episodic choices within a share of the batch's
tokens per layer and sends the rest to the better other tier; issue 28 uses it to compare the
control without consolidation with the default at the same compute.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from script_helpers import load_script

from cram.consolidation.api import evaluate_run
from cram.consolidation.config import resolve
from cram.consolidation.train import train
from cram.core.errors import ConfigError
from cram.models.routing import Route
from cram.models.tiers import Tier

W, E, S = int(Tier.WORKING), int(Tier.EPISODIC), int(Tier.SEMANTIC)


@pytest.mark.parametrize("kw", [dict(mode="soft", attention_budget=0.1),
                                dict(mode="hard", force="working", attention_budget=0.1),
                                dict(mode="hard", attention_budget=1.5),
                                dict(mode="hard", attention_budget=-0.1)])
def test_a_budget_is_a_share_on_the_routers_own_hard_choice(kw):
    with pytest.raises(ConfigError, match="attention_budget"):
        Route(**kw)


def test_the_cap_keeps_the_largest_episodic_margins_and_sends_the_rest_to_the_better_tier():
    # (B=2, T=4): six tokens chose attention, episodic margins 3, 0.5, 2 (row 0), 5, 0.3, 0.7
    logits = torch.tensor([[[0, 3, 0], [0, 1, 0.5], [1, 3, 0], [2, 0, 1]],
                           [[0, 5, 0], [0.2, 0.5, 0], [0, 0, 1], [0, 0.9, 0.2]]])
    choice = logits.argmax(-1)  # (2, 4)
    assert int((choice == E).sum()) == 6
    capped = Route("hard", attention_budget=3 / 8).cap_attention(choice, logits)
    # three of the batch's eight tokens may attend: margins 5, 3 and 2 keep it, across rows;
    # 0.5, 0.3 and 0.7 go to their better other tier (semantic, working, semantic)
    assert capped.tolist() == [[E, S, E, W], [E, W, S, S]]
    assert torch.equal(Route("hard").cap_attention(choice, logits), choice)  # no budget
    assert not (Route("hard", attention_budget=0.0).cap_attention(choice, logits) == E).any()
    # a cap, not a quota: a budget above what the router spends changes nothing
    assert torch.equal(Route("hard", attention_budget=1.0).cap_attention(choice, logits), choice)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "run"
    return train("cram", resolve("cram", "cpu-tiny"), out, seed=0, progress=False)


def test_evaluation_under_a_budget_spends_at_most_it_in_every_layer(tiny_run):
    free = evaluate_run(tiny_run)
    assert free["attention_budget"] is None and "acc_library_unattended" not in free
    assert free["attention_fraction"] > 0, "the tiny run must attend for the cap to bind"
    same = evaluate_run(tiny_run, attention_budget=1.0)
    for key in ("retrieval_acc_library", "retrieval_acc_novel", "attention_fraction"):
        assert same[key] == free[key]
    budget = free["attention_fraction"] / 2
    capped = evaluate_run(tiny_run, attention_budget=budget)
    layers = [k for k in capped if k.startswith("share_episodic_l")]
    assert layers and all(capped[k] <= budget + 1e-9 for k in layers)
    assert capped["attention_fraction"] < free["attention_fraction"]
    none = evaluate_run(tiny_run, attention_budget=0.0)
    assert none["attention_tokens"] == 0.0
    # with no attention at all, every query is unattended: the two accuracies coincide
    assert none["acc_library_unattended"] == pytest.approx(none["retrieval_acc_library"])


def test_a_budget_on_a_model_without_a_per_token_router_is_one_clear_error(tmp_path):
    run = train("transformer", resolve("transformer", "cpu-tiny", ["train.steps=2"]),
                tmp_path / "t", seed=0, progress=False)
    with pytest.raises(ConfigError, match="transformer"):
        evaluate_run(run, attention_budget=0.1)
    proc = subprocess.run([sys.executable, "-m", "cram", "eval", str(run),
                           "--attention-budget", "0.1"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--attention-budget" in proc.stderr


def test_the_budget_script_tabulates_and_draws_runs_at_each_budget(tiny_run, tmp_path):
    script = load_script("attention_budget")
    rows = [script.budget_row("tiny", tiny_run, b, sequences=16) for b in (1.0, 0.0)]
    assert [r["budget"] for r in rows] == [1.0, 0.0] and rows[1]["attention_tokens"] == 0.0
    assert set(script.COLUMNS) == set(rows[0])
    png = tmp_path / "budget.png"
    import pandas as pd
    script.plot(pd.DataFrame(rows), png)
    assert png.stat().st_size > 0
    json.dumps(rows)  # rows are plain data (a result file holds them)
