"""Token tasks end to end: cram train --task, cram eval, cram tasks, queries never an input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cram.consolidation.checkpoint import rebuild_model
from cram.consolidation.config import resolve
from cram.consolidation.losses import task_loss
from cram.core.columns import metric_columns
from cram.models import (
    HARD,
    MODEL_NAMES,
    MODEL_VARIANTS,
    DataSpec,
    ModelConfig,
    Route,
    build_model,
    token_spec,
)
from cram.tasks import TokenBatch, load_task
from cram.tasks.metrics import label_loss
from cram.tasks.view import TokenView

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "tests/tasks_example.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_ff=32, ct_dim=16, semantic_rank=4,
                   familiarity_hidden=8)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cram", *args], capture_output=True, text=True,
                          env=ENV, cwd=ROOT)


def test_cli_trains_cpu_tiny_on_a_task_file_and_eval_reloads_it(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", "--model", "cram", "--preset", "cpu-tiny", "--task",
                f"{EXAMPLE}:make_task", "--task-arg", "length=16", "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = pd.read_csv(run / "metrics.csv")
    # SRCD's columns with the same meaning, then the token columns
    assert list(metrics.columns) == [*metric_columns(2), "attention_token", "floor", "floor_pair",
                                     "attention_over_floor", "query_share", "library_share",
                                     "attention_l0", "attention_l1"]
    assert list(metrics["step"]) == [0, 10, 20, 30]
    last = metrics.iloc[-1]
    assert last["floor"] == pytest.approx(1 / 16)  # one scored novel token in 16
    assert last["query_share"] == pytest.approx(1 / 16)
    assert 0 <= last["attention_token"] <= 1 and 0 <= last["retrieval_acc"] <= 1
    assert np.isfinite(metrics["loss_value"].iloc[1:]).all()
    config = json.loads((run / "config.json").read_text())
    # recorded with its resolved path and content hash (tests/test_faults_trust.py)
    assert config["task"]["spec"] == f"{ROOT / EXAMPLE}:make_task"
    assert config["task"]["kind"] == "file" and len(config["task"]["sha256"]) == 64
    assert config["task"]["args"] == {"length": "16"} and config["task"]["vocab_size"] == 16
    assert config["train"]["cost_gate"] == "replaceable"  # the token-task default

    ev = _cli("eval", str(run), "--json", "--trust-task")  # the run's own file, hash-checked
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["task"] == "first-token-recall" and doc["step"] == 30
    for key in ("retrieval_acc", "attention_fraction", "attention_token", "floor"):
        assert doc[key] == pytest.approx(last[key]), key  # same eval set, same model
    other = _cli("eval", str(run), "--json", "--task", f"{EXAMPLE}:make_task",
                 "--task-arg", "vocab_size=8")
    assert other.returncode != 0 and "vocab_size 8 (the model's: 16)" in other.stderr


def test_cram_tasks_lists_the_builtins():
    proc = _cli("tasks")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == ["recall-unmarked", "recall-marked", "phrases", "mqar", "srcd"]
    one = _cli("tasks", "recall-unmarked", "--samples", "64", "--json")
    stats = json.loads(one.stdout)
    assert stats["vocab_size"] == 673 and stats["label_share"] == pytest.approx(8 / 256)


@pytest.mark.parametrize("spec,args,needle", [
    ("missing_dir/nope.py:make_task", [], "no such file"),
    (f"{EXAMPLE}:absent", [], "has no 'absent'"),
    (f"{EXAMPLE}:broken", ["how=range"], "must lie in [0, 8) or -100"),
    (f"{EXAMPLE}:broken", ["how=ignored"], "every label is -100"),
    (f"{EXAMPLE}:make_task", ["width=3"], "no parameter 'width'"),
    ("no-such-task", [], "unknown built-in task"),
])
def test_bad_task_exits_with_one_line_and_no_folder(tmp_path, spec, args, needle):
    out = tmp_path / "run"
    argv = ["train", "--model", "cram", "--preset", "cpu-tiny", "--task", spec, "--out", str(out)]
    for a in args:
        argv += ["--task-arg", a]
    proc = _cli(*argv)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out.exists()


def test_cram_static_is_refused_on_token_tasks(tmp_path):
    proc = _cli("train", "--model", "cram-static", "--preset", "cpu-tiny", "--task",
                "recall-marked", "--out", str(tmp_path / "run"))
    assert proc.returncode != 0
    assert "not available on task 'recall-marked' (tokens input)" in proc.stderr
    assert not (tmp_path / "run").exists()


def _batch(task, seed: int = 0) -> TokenBatch:
    return task.sample(3, np.random.default_rng(seed))


@pytest.mark.parametrize("name", [m for m in MODEL_NAMES if m != "cram-static"])
def test_queries_are_not_a_model_input(name):
    """Outputs depend on tokens (and dtau) only: other labels and patterns change nothing."""
    task = load_task("recall-unmarked", ["length=32", "n_bindings=3"])
    batch = _batch(task)
    torch.manual_seed(0)
    config = MODEL_VARIANTS[name].apply(TINY)
    model = build_model(name, config, token_spec(task.vocab_size)).eval()
    full = batch.to_torch()
    rng = np.random.default_rng(1)
    other = dict(full, labels=torch.from_numpy(rng.integers(0, task.vocab_size, (3, 32))),
                 pattern=torch.from_numpy(rng.integers(-1, task.n_library, (3, 32))))
    bare = {"tokens": full["tokens"], "dtau": full["dtau"]}  # no labels, no pattern at all
    for route in (HARD, Route(temperature=0.5)):
        outs = []
        for b in (full, other, bare):
            gen = torch.Generator().manual_seed(3)
            r = Route(route.mode, temperature=route.temperature, generator=gen)
            with torch.no_grad():
                outs.append(model(b, r).value_logits)
        assert outs[0].shape == (3, 32, task.vocab_size)
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        torch.testing.assert_close(outs[0], outs[2], rtol=0, atol=0)
    # and the tokens do matter
    changed = dict(full, tokens=(full["tokens"] + 1) % task.vocab_size)
    with torch.no_grad():
        assert not torch.equal(model(full, HARD).value_logits, model(changed, HARD).value_logits)


def test_token_loss_is_label_cross_entropy_plus_extras():
    task = load_task("srcd", ["length=48"])  # its extra_loss is SRCD's dynamics term
    b = task.sample(2, np.random.default_rng(0)).to_torch()
    torch.manual_seed(0)
    model = build_model("transformer", TINY, token_spec(task.vocab_size))
    out = model(b, Route(temperature=1.0))
    cfg = resolve("transformer", "cpu-tiny").train
    loss = task_loss(TokenView(task), out, b, cfg, step=0)
    ce = float(label_loss(out.value_logits, b["labels"]).detach())
    extra = float(task.extra_loss(out, b)["signal"].detach())
    assert loss.terms["loss_value"] == pytest.approx(ce, rel=1e-6)
    assert loss.terms["loss_signal"] == pytest.approx(extra, rel=1e-6)
    assert float(loss.total.detach()) == pytest.approx(ce + extra, rel=1e-5)
    view = TokenView(task).loss_view(b)  # the loss-side query mask is the label mask alone
    assert torch.equal(view["event"] == 2, b["labels"] != -100)


def test_hidden_library_queries_stay_queries_for_the_routing_losses():
    """Recall with library_labels=false: its query_mask makes the hidden queries queries again."""
    task = load_task("recall-unmarked", ["length=32", "n_bindings=2", "n_fillers=8",
                                         "library_share=0.5", "library_labels=false"])
    b = task.sample(8, np.random.default_rng(0)).to_torch()
    hidden_queries = b["query_mask"] & (b["labels"] == -100)
    assert hidden_queries.any() and (b["pattern"][hidden_queries] >= 0).all()  # library ones
    view = TokenView(task).loss_view(b)
    assert torch.equal(view["event"] == 2, b["query_mask"])
    b = {**b, "labels": torch.full_like(b["labels"], -100)}  # only the hidden queries count now
    b["query_mask"] = hidden_queries
    torch.manual_seed(0)
    model = build_model("cram", TINY, token_spec(task.vocab_size))
    cfg = resolve("cram", "cpu-tiny").train
    out = model(b, Route(temperature=1.0))
    loss = task_loss(TokenView(task), out, b, cfg, step=0)
    assert float(loss.terms["loss_consolidation"]) > 0  # consolidation reaches hidden queries
    hidden = dict(b)
    del hidden["query_mask"]  # without the mask they are plain tokens: no consolidation
    out = model(hidden, Route(temperature=1.0))
    loss = task_loss(TokenView(task), out, hidden, cfg, step=0)
    assert float(loss.terms["loss_consolidation"]) == 0


def test_exposures_count_scored_library_positions():
    labels = np.array([[-100, 5, -100, 7]])
    pattern = np.array([[1, 1, 0, -1]])
    batch = TokenBatch(np.zeros((1, 4), np.int64), labels, pattern=pattern)
    task = types.SimpleNamespace(name="t", vocab_size=8, n_library=3)
    assert TokenView(task).exposure_counts(batch).tolist() == [0, 1, 0]


def test_old_srcd_checkpoint_spec_rebuilds_with_defaults():
    """A checkpoint written before DataSpec had vocab_size still rebuilds as an SRCD model."""
    torch.manual_seed(0)
    model = build_model("cram", TINY, DataSpec(10, 4))
    args = {"config": dataclasses.asdict(TINY), "spec": {"n_keys": 10, "n_values": 4,
                                                         "key_encoding": "id", "key_dim": 32}}
    back = rebuild_model({"model_name": "cram", "model_args": args, "model": model.state_dict()})
    assert back.spec.encoding == "srcd" and type(back.embed).__name__ == "SRCDEmbedding"


def test_learned_schedule_reads_a_token_task_labels(tmp_path):
    """The learned routing schedule measures its criterion on a token task's labels."""
    run = tmp_path / "run"
    proc = _cli("train", "--model", "cram", "--preset", "cpu-tiny", "--task",
                f"{EXAMPLE}:make_task", "--task-arg", "length=16", "--steps", "20",
                "--set", "train.schedule=learned", "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    schedule = json.loads((run / "transition.json").read_text())["schedule"]
    assert schedule["kind"] == "learned" and schedule["warmup_end"] is not None
    signal = pd.read_csv(run / "metrics.csv")["schedule_signal"]
    assert signal.notna().any()  # the criterion was measured, from the labels


def _cram_in_process(capsys, *args) -> tuple[int, str]:
    """``cram ARGS`` in this process (no interpreter start-up): exit code and stdout."""
    from cram.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


@pytest.mark.parametrize("name,args,subprocess_cli", [
    ("recall-unmarked", ["length=32", "n_bindings=2", "n_fillers=8"], True),
    ("recall-marked", ["length=32", "n_bindings=2", "n_fillers=8"], False),
    ("phrases", ["length=48", "n_phrases=2", "phrase_len=3", "n_words=16"], False),
    ("mqar", ["length=32", "n_pairs=4", "library_share=0.5"], False),
    ("srcd", ["length=48"], False),
])
def test_cli_trains_on_every_builtin_task(tmp_path, capsys, name, args, subprocess_cli):
    """`cram train --task NAME` for each built-in of `cram tasks`; `cram eval` reloads the task.

    One case goes through a real ``python -m cram`` process; the others call the same entry
    point in this process, which saves two interpreter start-ups each.
    """
    run = tmp_path / "run"
    train_args = ["train", "--model", "cram", "--preset", "cpu-tiny", "--task", name,
                  *[x for a in args for x in ("--task-arg", a)], "--steps", "10", "--set",
                  "train.log_every=5", "--set", "train.warmup_steps=5", "--out", str(run),
                  "--quiet"]
    if subprocess_cli:
        proc = _cli(*train_args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert _cram_in_process(capsys, *train_args)[0] == 0
    config = json.loads((run / "config.json").read_text())
    assert config["task"]["spec"] == name and config["task"]["vocab_size"] > 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["step"].iloc[-1] == 10 and metrics["retrieval_acc"].between(0, 1).all()
    last = metrics.iloc[-1]  # per-layer columns are filled on token tasks too (issue 13)
    per_layer = [last[f"attention_{g}_l{i}"] for g in ("library", "novel", "nonquery")
                 for i in (0, 1)]
    assert all(0 <= v <= 1 for v in per_layer), per_layer
    assert last["attention_fraction"] <= last["attention_tokens"] + 1e-9
    assert 0 <= last["qhat_library_l0"] <= 1
    if subprocess_cli:
        proc = _cli("eval", str(run), "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = proc.stdout
    else:
        code, out = _cram_in_process(capsys, "eval", str(run), "--json")
        assert code == 0
    assert 0 <= json.loads(out)["retrieval_acc"] <= 1
