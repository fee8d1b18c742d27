"""`cram bench sweep` and `--model-set`: each model's best setting from a stated grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cram.cli import main
from cram.core.errors import ConfigError
from cram.experiments.sweep import (
    best_per_model,
    convergence,
    grid_points,
    parse_grid,
    point_slug,
)


def test_grid_is_every_combination_in_axis_order():
    axes = parse_grid(["train.lr=0.001,0.01", "model.n_heads=1,2,4"])
    points = grid_points(axes)
    assert len(points) == 6
    assert points[0] == ["train.lr=0.001", "model.n_heads=1"]
    assert points[-1] == ["train.lr=0.01", "model.n_heads=4"]
    assert point_slug(points[1]) == "lr0.001_nheads2"


@pytest.mark.parametrize("spec,what", [
    ("train.lr", "expected FIELD=V1,V2"),
    ("lr=0.1,0.2", "names a config section"),
    ("train.lr=", "expected FIELD=V1,V2"),
    ("train.lr=0.1,0.1", "a value repeats"),
])
def test_bad_grid_specs_say_what_is_wrong(spec, what):
    with pytest.raises(ConfigError, match=what):
        parse_grid([spec])


def test_a_field_swept_twice_is_refused():
    with pytest.raises(ConfigError, match="swept twice"):
        parse_grid(["train.lr=0.1", "train.lr=0.2"])


def test_convergence_reads_the_curve():
    steps = list(range(0, 1100, 100))
    plateau = [0.1, 0.5, 0.9, 0.98, 0.99, 0.99, 0.985, 0.99, 0.99, 0.99, 0.99]
    found = convergence(steps, plateau)
    assert found == {"best_acc": 0.99, "steps_to_converge": 300, "converged": True}
    rising = [0.1, 0.2, 0.3, 0.35, 0.4, 0.42, 0.45, 0.47, 0.5, 0.55, 0.62]
    found = convergence(steps, rising)
    assert found["converged"] is False and found["steps_to_converge"] == 1000
    # a late jump (a phase transition in the last quarter) is not convergence either
    late = [0.5] * 8 + [0.5, 0.9, 1.0]
    assert convergence(steps, late)["converged"] is False
    assert convergence(steps[:3], plateau[:3])["converged"] is None  # too short to say


def test_best_per_model_takes_the_best_score_then_the_faster():
    rows = [
        {"model": "a", "setting": "train.lr=0.001", "score": 0.5, "steps_to_converge": 100,
         "converged": True},
        {"model": "a", "setting": "train.lr=0.01", "score": 0.9, "steps_to_converge": 800,
         "converged": False},
        {"model": "b", "setting": "train.lr=0.001", "score": 0.9, "steps_to_converge": 800,
         "converged": True},
        {"model": "b", "setting": "train.lr=0.01", "score": 0.9, "steps_to_converge": 200,
         "converged": True},
    ]
    best = {r["model"]: r for r in best_per_model(rows)}
    assert best["a"]["best_setting"] == "train.lr=0.01" and best["a"]["converged"] is False
    assert best["b"]["best_setting"] == "train.lr=0.01"
    assert best["b"]["model_set"] == "--model-set b:train.lr=0.01"


def _tiny(*extra):
    return ["--preset", "cpu-tiny", "--task", "recall-unmarked", "--task-arg", "length=32",
            "--task-arg", "n_bindings=2", "--task-arg", "n_fillers=8", "--quiet",
            "--set", "train.steps=20", "--set", "train.log_every=5", *extra]


def test_sweep_trains_every_point_and_names_each_models_best(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    code = main(["bench", "sweep", "--models", "transformer", "--grid",
                 "train.lr=0.001,0.01", *_tiny("--runs-dir", str(runs), "--results",
                                               str(results))])
    assert code == 0
    assert sorted(p.name for p in runs.iterdir()) == ["transformer-lr0.001-seed0",
                                                      "transformer-lr0.01-seed0"]
    for lr in ("0.001", "0.01"):
        config = json.loads((runs / f"transformer-lr{lr}-seed0" / "config.json").read_text())
        assert config["train"]["lr"] == float(lr)
    studies = {p.name: p for p in results.iterdir()}
    assert len(studies) == 2  # every run, and the winners
    winners = next(p for name, p in studies.items() if name.startswith("sweep-winners"))
    result = json.loads(next(winners.iterdir()).read_text())
    (row,) = result["rows"]
    assert row["model"] == "transformer" and row["best_setting"] in ("train.lr=0.001",
                                                                     "train.lr=0.01")
    assert "grid train.lr=0.001,0.01" in result["title"]


def test_model_set_trains_one_model_at_its_own_setting(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["bench", "srcd", "--models", "transformer,cram", "--seeds", "1",
                 "--model-set", "transformer:train.lr=0.02", "--runs-dir", str(runs),
                 "--json", *_tiny()])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    # the routing schedule's decision is a column: cpu-tiny's fixed warm-up for CRAM, none for
    # the dense Transformer
    assert (rows["cram"]["warmup_end"], rows["cram"]["warmup_ended_by"]) == (10, "fixed")
    assert rows["transformer"]["warmup_ended_by"] is None
    lr = {m: json.loads((runs / f"{m}-seed0" / "config.json").read_text())["train"]["lr"]
          for m in ("transformer", "cram")}
    assert lr["transformer"] == 0.02 and lr["cram"] != 0.02


@pytest.mark.parametrize("spec,what", [
    ("transformer=train.lr=0.1", "expected MODEL:FIELD=VALUE"),
    ("transformer:lr=0.1", "expected MODEL:FIELD=VALUE"),
    ("mod:train.lr=0.1", "is not one of --models"),
])
def test_bad_model_set_is_one_line_and_trains_nothing(tmp_path, capsys, spec, what):
    runs = tmp_path / "runs"
    code = main(["bench", "srcd", "--models", "transformer", "--seeds", "1", "--model-set", spec,
                 "--runs-dir", str(runs), "--no-results", *_tiny()])
    err = capsys.readouterr().err.strip()
    assert code != 0 and what in err and len(err.splitlines()) == 1
    assert not runs.exists()


def test_novel_queries_finds_each_store_and_the_keys_before_it():
    from cram.experiments.recall_breakdown import novel_queries

    # keys are 10..19, values 20..; one library binding (pattern 0) and two novel ones
    tokens = np.array([[10, 20, 1, 11, 21, 12, 22, 11, 21, 10, 20, 12, 22]])
    labels = np.full(tokens.shape, -100)
    labels[0, [7, 9, 11]] = [21, 20, 22]
    pattern = np.full(tokens.shape, -1)
    pattern[0, [0, 1, 9, 10]] = 0  # key 10 is from the library: not a novel query
    q = novel_queries(tokens, labels, pattern, key_lo=10, key_hi=20)
    assert q["pos"].tolist() == [7, 11]
    assert q["distance"].tolist() == [4, 6]
    assert q["keys_before"].tolist() == [3, 3]
    assert q["novel_before"].tolist() == [2, 2]


def test_breakdown_table_of_a_trained_recall_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results folder is ./results
    monkeypatch.delenv("CRAM_RESULTS_DIR", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--model", "transformer", "--out", str(run), "--steps", "5",
                 *_tiny()[:11]]) == 0
    capsys.readouterr()
    assert main(["bench", "breakdown", str(run), "--sequences", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "results").exists()  # --json alone writes no file
    results = tmp_path / "tables"
    assert main(["bench", "breakdown", str(run), "--sequences", "32", "--label", "tiny",
                 "--results", str(results)]) == 0
    # a dense Transformer reads attention at every token in every layer: no routing table
    (accuracy,) = results.iterdir()
    table = json.loads(next(accuracy.iterdir()).read_text())
    assert table["title"] == ("Recall breakdown: novel accuracy by store distance and keys in "
                              "context (tiny)")
    assert {"steps_to_converge", "converged", "setting"} <= set(table["columns"])
    overall = next(r for r in rows if r["by"] == "all")
    for by in ("distance", "keys_before", "novel_before"):
        mine = [r for r in rows if r["by"] == by]
        assert mine and sum(r["n"] for r in mine) == overall["n"] > 0
        assert all(0 <= r["novel_acc"] <= 1 for r in mine)


def test_attention_by_class_of_a_routed_read_pattern():
    from types import SimpleNamespace

    from cram.experiments.recall_breakdown import attention_by_class

    tokens = np.array([[10, 20, 1, 10, 20]])  # store, filler, query (keys 10..19, values 20..)
    labels = np.array([[-100, -100, -100, 20, -100]])
    batch = SimpleNamespace(tokens=tokens, labels=labels, pattern=np.full((1, 5), -1))
    reads = np.array([[[True, False, False, True, False]],  # layer 0: the store key, the query
                      [[False, False, False, False, True]]])  # layer 1: the last value
    rows = {(r["layer"], r["token_class"]): r for r in attention_by_class(batch, (10, 20), reads)}
    assert rows[("0", "store_key")]["attention"] == 1.0
    assert rows[("0", "query_novel")]["attention"] == 1.0
    assert rows[("0", "value")]["attention"] == 0.0
    assert rows[("1", "value")]["attention"] == 0.5 and rows[("1", "value")]["per_sequence"] == 2
    assert rows[("any", "other")]["attention"] == 0.0
    assert ("0", "query_library") not in rows  # no library query in this sequence


def test_breakdown_refuses_a_run_without_a_key_range(tmp_path, capsys):
    run = tmp_path / "srcd"
    assert main(["train", "--model", "transformer", "--preset", "cpu-tiny", "--out", str(run),
                 "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["bench", "breakdown", str(run), "--no-results"]) != 0
    err = capsys.readouterr().err.strip()
    assert "needs a key-value recall task" in err and len(err.splitlines()) == 1


def test_breakdown_names_runs_by_their_path_and_a_routed_runs_cost_gate(tmp_path):
    from cram.commands.bench_breakdown import run_names, run_setting

    a, b = tmp_path / "table" / "cram-seed0", tmp_path / "gate" / "none" / "cram-seed0"
    assert run_names([a, b]) == ["table/cram-seed0", "gate/none/cram-seed0"]
    assert run_names([a, a.parent / "mod-seed0"]) == ["cram-seed0", "mod-seed0"]
    config = {"model": "cram", "task": {"spec": "mqar", "args": {"library_share": "0.7"}},
              "train": {"steps": 1500, "lr": 0.003, "cost_gate": "replaceable"},
              "model_config": {"n_heads": 4}}
    assert run_setting(config) == ("mqar library_share=0.7 steps=1500 lr=0.003 n_heads=4 "
                                   "cost_gate=replaceable")
    assert "cost_gate" not in run_setting({**config, "model": "transformer"})
    off = {**config, "model_config": {"n_heads": 4, "working_layout": "off"}}
    assert "working_layout=off" in run_setting(off)
    assert "working_layout" not in run_setting(
        {**config, "model_config": {"n_heads": 4, "working_layout": "serial"}})
