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


# ---------------------------------------------------------------- given routes (--routes-of)
@pytest.mark.parametrize("kw", [dict(mode="soft"), dict(mode="hard", force="working"),
                                dict(mode="hard", attention_budget=0.1)])
def test_given_routes_replace_only_a_plain_hard_choice(kw):
    with pytest.raises(ConfigError, match="choices"):
        Route(**kw, choices=(torch.zeros(1, 4, dtype=torch.long),))


def _model_and_batch(run):
    from cram.consolidation.api import run_task
    from cram.consolidation.checkpoint import load_trained

    model, config, _ = load_trained(run)
    task = run_task(run, config)
    return model.eval(), task.eval_set(8, 123).slice(0, 8).to_torch(torch.device("cpu"))


def test_a_model_routed_by_its_own_choices_is_the_model(tiny_run):
    model, batch = _model_and_batch(tiny_run)
    with torch.no_grad():
        hard = model(batch, Route("hard"))
        own = tuple(s.choice for s in hard.layers)  # L x (B, T)
        given = model(batch, Route("hard", choices=own))
        working = model(batch, Route("hard", choices=tuple(torch.full_like(c, W) for c in own)))
        forced = model(batch, Route("hard", force="working"))
    assert any(bool((c == E).any()) for c in own), "the tiny run must attend somewhere"
    assert torch.equal(given.value_logits, hard.value_logits)
    assert torch.equal(working.value_logits, forced.value_logits)
    assert not torch.equal(working.value_logits, hard.value_logits)
    with pytest.raises(ConfigError, match="layers"):
        model(batch, Route("hard", choices=own[:1]))
    with pytest.raises(ConfigError, match="shape"):
        model(batch, Route("hard", choices=tuple(c[:, :3] for c in own)))


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "other"
    return train("cram", resolve("cram", "cpu-tiny"), out, seed=1, progress=False)


def test_a_run_routed_by_another_spends_what_the_other_chose(tiny_run, other_run):
    free = evaluate_run(tiny_run)
    mine = evaluate_run(tiny_run, routes_of=tiny_run)
    for key in ("retrieval_acc_library", "retrieval_acc_novel", "attention_fraction"):
        assert mine[key] == free[key]
    assert mine["routes_of"] == str(tiny_run) and "acc_library_unattended" in mine
    theirs = evaluate_run(other_run)
    routed = evaluate_run(tiny_run, routes_of=other_run)
    shares = [k for k in theirs if k.startswith("share_")]
    assert shares and all(routed[k] == theirs[k] for k in shares)  # the other run's routes
    assert any(free[k] != theirs[k] for k in shares), "two seeds should route differently"


def test_given_routes_need_two_cram_runs_and_no_budget(tiny_run, tmp_path):
    run = train("transformer", resolve("transformer", "cpu-tiny", ["train.steps=2"]),
                tmp_path / "t", seed=0, progress=False)
    with pytest.raises(ConfigError, match="transformer"):
        evaluate_run(tiny_run, routes_of=run)
    with pytest.raises(ConfigError, match="choose one"):
        evaluate_run(tiny_run, routes_of=tiny_run, attention_budget=0.1)
    proc = subprocess.run([sys.executable, "-m", "cram", "eval", str(run), "--routes-of",
                           str(tiny_run)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--routes-of" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cram", "eval", str(tiny_run), "--routes-of",
                           str(tiny_run), "--json", "--set", "train.eval_sequences=8"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["routes_of"] == str(tiny_run)


def test_the_budget_script_pairs_given_routes_by_seed(tiny_run, other_run, tmp_path):
    script = load_script("attention_budget")
    runs = [("ref", tiny_run), ("ref", other_run), ("cand", other_run), ("cand", tiny_run)]
    jobs = script.given_route_jobs(runs, "ref")
    assert [(name, run, src) for name, run, (_, src) in jobs] == [
        ("cand", other_run, other_run), ("cand", tiny_run, tiny_run)]
    row = script.budget_row("cand", tiny_run, None, sequences=16, routes_of=("ref", other_run))
    assert row["routes"] == "ref seed 1" and row["budget"] != row["budget"]  # NaN
    own = script.budget_row("cand", tiny_run, 1.0, sequences=16)
    assert own["routes"] == "own"
    import pandas as pd
    script.plot(pd.DataFrame([row, own]), tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no run"):
        script.given_route_jobs(runs, "missing")


def test_the_budget_script_reuses_an_earlier_row_only_for_the_same_evaluation(
        tiny_run, other_run, tmp_path, monkeypatch):
    """--reuse: an earlier row stands in only for the same run, budget, routes, sequences, step."""
    from cram.core.benchlog import utc_now
    from cram.core.results import ResultFile, write_result

    script = load_script("attention_budget")
    own = script.budget_row("tiny", tiny_run, 0.0, sequences=16)
    given = script.budget_row("cand", tiny_run, None, sequences=16, routes_of=("ref", other_run))
    earlier = write_result(ResultFile(
        study="budget-reuse", title="budget reuse", command="python x", machine="m", load="l",
        commit="c", date=utc_now(), columns=script.COLUMNS, rows=[own, given], seeds=[0]),
        tmp_path)
    reuse = script.reusable_rows(earlier)
    assert len(reuse) == 2
    calls = []
    monkeypatch.setattr(script, "budget_row", lambda *a, **k: calls.append(a) or {"fresh": 1})
    same = script.evaluated_row("renamed", tiny_run, 0.0, 16, None, reuse)
    assert calls == [] and same["candidate"] == "renamed"
    assert same["attention_tokens"] == own["attention_tokens"]
    routed = script.evaluated_row("cand", tiny_run, None, 16, ("ref", other_run), reuse)
    assert calls == [] and routed["budget"] != routed["budget"]  # NaN read back as a float
    assert script.evaluated_row("tiny", tiny_run, 1.0, 16, None, reuse) == {"fresh": 1}
    assert script.evaluated_row("tiny", tiny_run, 0.0, 32, None, reuse) == {"fresh": 1}
    stale = {k: {**r, "step": r["step"] - 1} for k, r in reuse.items()}
    assert script.evaluated_row("tiny", tiny_run, 0.0, 16, None, stale) == {"fresh": 1}
    assert len(calls) == 3
