"""The `mqar` task: Zoology's MQAR layout (stores first, power-law query gaps) with a library."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cram.core.errors import ConfigError
from cram.tasks import (
    IGNORE_INDEX,
    MQARConfig,
    MQARTask,
    batch_stats,
    check_task,
    list_tasks,
    load_task,
)
from cram.tasks.batch import QUERY_MASK

ROOT = Path(__file__).resolve().parents[1]
SEQS = 256


def draw(seed: int = 0, n: int = SEQS, **fields):
    task = MQARTask(MQARConfig(**fields))
    return task, task.sample(n, np.random.default_rng(seed))


def queries(task: MQARTask, batch) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) stored keys and the position of each key's query (the one later occurrence)."""
    n = task.config.n_pairs
    keys = batch.tokens[:, 0:2 * n:2]
    pos = np.full(keys.shape, -1)
    for b in range(len(batch)):
        for i, k in enumerate(keys[b]):
            later = 2 * n + np.flatnonzero(batch.tokens[b, 2 * n:] == k)
            assert later.size == 1, (b, i, later)  # each stored key comes back exactly once
            pos[b, i] = later[0]
    return keys, pos


@pytest.mark.parametrize("fields", [{}, {"n_fillers": 5, "library_share": 0.5, "length": 97}])
def test_layout_stores_first_each_key_queried_once_labelled_with_its_value(fields):
    task, batch = draw(**fields)
    c = task.config
    n = c.n_pairs
    batch.validate(task.vocab_size, task.n_library)
    assert batch.tokens.shape == batch.labels.shape == (SEQS, c.length)
    keys, values = batch.tokens[:, 0:2 * n:2], batch.tokens[:, 1:2 * n:2]
    assert ((keys >= c.key_base) & (keys < c.value_base)).all()  # the stores, all first
    assert ((values >= c.value_base) & (values < c.vocab_size)).all()
    assert all(len(set(row)) == n for row in keys)  # keys distinct within a sequence
    _, pos = queries(task, batch)
    assert ((pos - 2 * n) % 2 == 0).all()  # a query opens a two-token slot
    rows = np.arange(SEQS)[:, None]
    assert np.array_equal(batch.labels[rows, pos], values)  # the label at a query: its value
    scored = batch.labels != IGNORE_INDEX
    assert (scored.sum(1) == n).all() and scored[rows, pos].all()  # ... and nothing else
    rest = np.ones_like(scored)
    rest[:, :2 * n] = False
    rest[rows, pos] = False
    assert (batch.tokens[rest] < c.n_fillers).all()  # everything else is filler
    if c.n_fillers == 1:
        assert (batch.tokens[rest] == 0).all()
    else:
        assert len(np.unique(batch.tokens[rest])) == c.n_fillers
    assert c.query_share == n / c.length
    assert c.vocab_size == c.n_fillers + c.n_library + c.n_novel_keys + c.n_values


def test_defaults_are_cpu_sized_and_plain_mqar():
    c = MQARConfig()
    assert (c.length, c.n_pairs, c.power_a, c.library_share) == (128, 8, 0.01, 0.0)
    assert c.vocab_size == 257 and c.n_library + c.n_novel_keys == c.n_values  # key/value halves
    assert c.floor == c.query_share == 8 / 128
    _, batch = draw()
    assert (batch.pattern == -1).all()  # no library pair at share 0


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.9])
def test_library_share_within_binomial_tolerance(share):
    task, batch = draw(library_share=share)
    scored = batch.labels != IGNORE_INDEX
    measured = (batch.pattern[scored] >= 0).mean()
    se = math.sqrt(max(share * (1 - share), 1e-12) / scored.sum())
    assert abs(measured - share) <= 5.5 * se + 1e-12
    assert batch_stats(batch)["floor"] == pytest.approx(scored.mean() * (1 - measured))
    assert task.config.floor == pytest.approx(task.config.query_share * (1 - share))


def test_pattern_marks_store_key_value_and_query_of_library_pairs():
    task, batch = draw(library_share=0.5, n_fillers=3)
    c = task.config
    n = c.n_pairs
    keys, pos = queries(task, batch)
    is_lib = keys < c.key_base + c.n_library
    index = np.where(is_lib, keys - c.key_base, -1)  # (B, n) library index or -1
    rows = np.arange(SEQS)[:, None]
    assert np.array_equal(batch.pattern[:, 0:2 * n:2], index)  # the store key
    assert np.array_equal(batch.pattern[:, 1:2 * n:2], index)  # the store value
    assert np.array_equal(batch.pattern[rows, pos], index)  # the query
    marked = np.zeros(batch.pattern.shape, bool)
    marked[:, :2 * n] = True
    marked[rows, pos] = True
    assert (batch.pattern[~marked] == -1).all()  # nothing else


def test_library_values_are_fixed_and_novel_values_fresh():
    task, batch = draw(library_share=0.5)
    c = task.config
    n = c.n_pairs
    keys, values = batch.tokens[:, 0:2 * n:2], batch.tokens[:, 1:2 * n:2]
    lib = keys < c.key_base + c.n_library
    assert np.array_equal(values[lib], task.library_values[keys[lib] - c.key_base] + c.value_base)
    assert np.array_equal(MQARTask().library_values, task.library_values)  # fixed by the seed
    assert not np.array_equal(MQARTask(MQARConfig(library_seed=9)).library_values,
                              task.library_values)
    seen: dict[int, set] = {}
    for k, v in zip(keys[~lib], values[~lib]):
        seen.setdefault(int(k), set()).add(int(v))
    assert len(seen) > 40 and np.mean([len(v) for v in seen.values()]) > 3  # fresh per sequence


def test_seeded_determinism_and_an_eval_set_apart_from_training():
    task, a = draw(seed=3, library_share=0.5)
    _, b = draw(seed=3, library_share=0.5)
    _, c = draw(seed=4, library_share=0.5)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.pattern, b.pattern)
    assert not np.array_equal(a.tokens, c.tokens)
    e1 = task.eval_set(64, seed=7)
    e2 = MQARTask(MQARConfig(library_share=0.5)).eval_set(64, seed=7)
    assert np.array_equal(e1.tokens, e2.tokens) and np.array_equal(e1.pattern, e2.pattern)
    assert not np.array_equal(e1.tokens, task.eval_set(64, seed=8).tokens)
    train = task.sample(64, np.random.default_rng(7))  # the training stream of seed 7
    shared = {r.tobytes() for r in e1.tokens} & {r.tobytes() for r in train.tokens}
    assert not shared  # no evaluation sequence is a training sequence of the same seed
    check_task(task)


def _gap_shares(gaps: np.ndarray, slots: int, bins: int = 4) -> np.ndarray:
    edges = np.linspace(0, slots, bins + 1)
    return np.histogram(gaps, bins=edges)[0] / gaps.size


@pytest.mark.parametrize("power_a", [0.01, 0.5, 1.0])
def test_query_gaps_follow_the_power_law(power_a):
    """Gap shares per quarter of the query region match numpy's own weighted draw."""
    task, batch = draw(seed=11, n=512, power_a=power_a)
    c = task.config
    _, pos = queries(task, batch)
    gaps = (pos - 2 * c.n_pairs) // 2  # slot index from the end of the stores
    p = c.gap_weights() / c.gap_weights().sum()
    ref_rng = np.random.default_rng(99)
    ref = np.concatenate([ref_rng.choice(c.query_slots, c.n_pairs, replace=False, p=p)
                          for _ in range(512)])
    ours, theirs = _gap_shares(gaps, c.query_slots), _gap_shares(ref, c.query_slots)
    assert 0.5 * np.abs(ours - theirs).sum() < 0.05  # ~4000 draws each: se of a share < 0.01
    if power_a < 1:  # short gaps are more frequent than long ones, quarter by quarter
        assert (np.diff(ours) < 0).all() and ours[0] > 2 * ours[-1]
    else:
        assert np.abs(ours - 0.25).max() < 0.04  # power_a = 1: uniform


def test_query_order_is_not_store_order():
    """The drawn slots go to the stored keys in a random order."""
    task, batch = draw(n=512)
    _, pos = queries(task, batch)
    first = np.argmin(pos, axis=1)  # which stored pair is queried first
    counts = np.bincount(first, minlength=task.config.n_pairs)
    assert counts.min() > 0.5 * 512 / task.config.n_pairs


def test_unlabelled_library_hides_only_library_labels_and_sets_the_query_mask():
    fields = dict(library_share=0.5, n_fillers=4)
    task, open_batch = draw(seed=5, **fields)
    closed_task, closed = draw(seed=5, library_labels=False, **fields)
    assert np.array_equal(open_batch.tokens, closed.tokens)  # the same draws, token for token
    assert np.array_equal(open_batch.pattern, closed.pattern)
    scored_open = open_batch.labels != IGNORE_INDEX
    scored = closed.labels != IGNORE_INDEX
    library = open_batch.pattern >= 0
    assert not (scored & library).any()
    assert (scored_open & library).sum() > 0.3 * scored_open.sum()
    assert np.array_equal(scored, scored_open & ~library)  # novel labels untouched
    assert np.array_equal(closed.labels[scored], open_batch.labels[scored])
    assert np.array_equal(closed.extras[QUERY_MASK], scored_open)  # still queries
    assert not open_batch.extras
    ev_open, ev_closed = task.eval_set(32, seed=3), closed_task.eval_set(32, seed=3)
    assert np.array_equal(ev_open.labels, ev_closed.labels)  # evaluation keeps every answer
    assert ((ev_closed.labels != IGNORE_INDEX) & (ev_closed.pattern >= 0)).any()


def test_library_pool_narrows_and_weights_the_library_slots():
    task = MQARTask(MQARConfig(library_share=1.0, n_pairs=2, length=16))
    pool = np.array([*np.repeat(np.arange(8), 4), *range(8, 16)])  # 0..7 four times over
    batch = task.sample(2000, np.random.default_rng(1), library=pool)
    lib = batch.pattern[:, 0:4:2]
    assert set(np.unique(lib)) == set(range(16)) and (lib[:, 0] != lib[:, 1]).all()
    counts = np.bincount(lib.ravel(), minlength=16)
    assert counts[:8].mean() > 2 * counts[8:].mean()  # repeats weight a binding
    few = task.sample(200, np.random.default_rng(2), library=np.array([5, 5]))
    keys = few.tokens[:, 0:4:2]
    assert ((few.pattern[:, 0:4:2] == 5).sum(1) == 1).all()  # one library slot, the other novel
    assert (keys[:, 0] != keys[:, 1]).all()


def test_hidden_stores_leave_the_query_as_the_only_occurrence():
    task = MQARTask(MQARConfig(library_share=0.5, n_fillers=3))
    c = task.config
    n = c.n_pairs
    patterns = np.array([2, 7, 11, 40])
    probe = task.probe_set(patterns, 256, seed=4)
    probe.validate(task.vocab_size, task.n_library)
    scored = probe.labels != IGNORE_INDEX
    assert (scored.sum(1) == n).all()  # every query scored, the hidden ones included
    lib_query = scored & (probe.pattern >= 0)
    assert lib_query.sum() > 0.3 * scored.sum()
    assert np.isin(probe.pattern[probe.pattern >= 0], patterns).all()
    assert (probe.pattern[:, :2 * n] == -1).all()  # no library store is left
    for b, t in zip(*np.nonzero(lib_query)):
        key = probe.tokens[b, t]
        assert np.flatnonzero(probe.tokens[b] == key).tolist() == [t]  # the only occurrence
        assert probe.labels[b, t] == task.library_values[key - c.key_base] + c.value_base
    block = probe.tokens[:, :2 * n]
    assert ((block < c.n_fillers) | (block >= c.key_base + c.n_library)).all()
    assert np.array_equal((block < c.n_fillers).sum(1), 2 * lib_query.sum(1))  # hidden: filler
    again = task.probe_set(patterns, 256, seed=4)
    assert np.array_equal(probe.tokens, again.tokens)
    assert not np.array_equal(probe.tokens, task.eval_set(256, seed=4).tokens)
    assert task.library_slots_per_sequence == n
    # hide in training draws: the same stream apart from the hidden stores
    rng = np.random.default_rng(8)
    shown = task.sample(64, np.random.default_rng(8), library=patterns)
    hid = task.sample(64, rng, library=patterns, hide=patterns)
    changed = shown.tokens != hid.tokens
    assert changed.any() and (shown.pattern[changed] >= 0).all()
    assert changed[:, 2 * n:].sum() == 0  # queries and filler unchanged


def test_the_study_protocol_takes_the_task():
    """tasks/study.py: library slots follow the schedule's pool; the test hides every store."""
    from cram.tasks.study import StudyConfig, studied
    from cram.tasks.view import training_task

    task = studied(training_task(MQARTask(MQARConfig(library_share=0.5))),
                   StudyConfig(protocol="study-test"), 1000)
    batch = task.sample_at(500, 8, np.random.default_rng(0))
    assert np.isin(batch.pattern[batch.pattern >= 0], task.schedule.pool(500)).all()
    test = task.test_set(0)
    lib = (test.labels != IGNORE_INDEX) & (test.pattern >= 0)
    assert lib.sum() > 0 and (test.pattern[:, :16] == -1).all()  # no library store


def test_registered_and_loadable_with_task_args():
    assert "mqar" in list_tasks()
    task = load_task("mqar", ["length=64", "n_pairs=4", "power_a=0.5", "library_share=0.25",
                              "library_labels=false"])  # runs check_task
    assert task.name == "mqar" and task.config.n_pairs == 4 and task.config.power_a == 0.5
    assert task.config.library_labels is False


@pytest.mark.parametrize("field, value, match", [
    ("length", 31, r"MQARConfig.length=31: 8 pairs need 32 tokens"),
    ("n_pairs", 0, r"MQARConfig.n_pairs=0: must be an integer >= 1"),
    ("power_a", 0.0, r"MQARConfig.power_a=0.0: must be a finite number > 0"),
    ("power_a", float("nan"), r"MQARConfig.power_a=nan"),
    ("library_share", 1.5, r"MQARConfig.library_share=1.5: must lie in \[0, 1\]"),
    ("n_values", 1, r"MQARConfig.n_values=1: must be an integer >= 2"),
    ("n_novel_keys", 4, r"MQARConfig.n_novel_keys=4: fewer than n_pairs=8"),
    ("library_labels", "no", r"MQARConfig.library_labels='no': must be true or false"),
])
def test_bad_configs_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        MQARConfig(**{field: value})


def test_config_errors_that_need_two_fields():
    with pytest.raises(ConfigError, match="MQARConfig.n_library=4: fewer than n_pairs=8"):
        MQARConfig(library_share=0.5, n_library=4)
    assert MQARConfig(n_library=4).n_library == 4  # no library pair at share 0: allowed
    with pytest.raises(ConfigError, match="no query would carry a label"):
        MQARConfig(library_share=1.0, library_labels=False)


def test_cli_lists_mqar_and_trains_a_transformer_on_it(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cram", *args], capture_output=True,
                              text=True, env=env, cwd=ROOT)

    listed = cli("tasks")
    assert listed.returncode == 0 and "mqar" in [ln.split()[0] for ln in listed.stdout.splitlines()]
    run = tmp_path / "run"
    proc = cli("train", "--model", "transformer", "--preset", "cpu-tiny", "--task", "mqar",
               "--task-arg", "length=32", "--task-arg", "n_pairs=4", "--steps", "10",
               "--set", "train.log_every=5", "--set", "train.warmup_steps=5",
               "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())
    assert config["task"]["spec"] == "mqar" and config["task"]["vocab_size"] == 257
    assert config["task"]["args"] == {"length": "32", "n_pairs": "4"}
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["step"].iloc[-1] == 10 and metrics["retrieval_acc"].between(0, 1).all()
    assert metrics["query_share"].iloc[-1] == pytest.approx(4 / 32)
