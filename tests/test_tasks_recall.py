"""Statistics of the recall tasks: what the generator produces matches what its parameters say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cram.core.errors import ConfigError
from cram.tasks import IGNORE_INDEX, RecallConfig, RecallTask, batch_stats
from cram.tasks.recall import QUERY_TOKEN

SEQS = 256


def draw(seed: int = 0, **fields):
    task = RecallTask(RecallConfig(**fields))
    return task, task.sample(SEQS, np.random.default_rng(seed))


def token_class(task: RecallTask, tokens: np.ndarray) -> np.ndarray:
    """0 marker, 1 filler, 2 library key, 3 novel key, 4 value."""
    c = task.config
    edges = [1, c.key_base, c.key_base + c.n_library, c.value_base]
    return np.searchsorted(edges, tokens, side="right")


def total_variation(a: np.ndarray, b: np.ndarray, n_classes: int = 5) -> float:
    pa = np.bincount(a, minlength=n_classes) / a.size
    pb = np.bincount(b, minlength=n_classes) / b.size
    return 0.5 * float(np.abs(pa - pb).sum())


@pytest.mark.parametrize("marked", [False, True])
def test_shapes_dtypes_and_exact_label_share(marked):
    task, batch = draw(marked=marked, n_repeats=2)
    batch.validate(task.vocab_size, task.n_library)
    assert batch.tokens.shape == batch.labels.shape == (SEQS, 256)
    assert batch.tokens.dtype == batch.labels.dtype == np.int64
    assert ((batch.labels != IGNORE_INDEX).sum(1) == 8 * 2).all()
    assert task.config.query_share == 16 / 256


def test_seeded_determinism_and_a_fixed_eval_set():
    task, a = draw(seed=3)
    _, b = draw(seed=3)
    _, c = draw(seed=4)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)
    e1, e2 = task.eval_set(16, seed=7), RecallTask().eval_set(16, seed=7)
    assert np.array_equal(e1.tokens, e2.tokens) and np.array_equal(e1.pattern, e2.pattern)
    assert not np.array_equal(e1.tokens, task.eval_set(16, seed=8).tokens)
    assert not np.array_equal(e1.tokens, task.sample(16, np.random.default_rng(7)).tokens)


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.9])
def test_library_share_within_binomial_tolerance(share):
    _task, batch = draw(library_share=share)
    scored = batch.labels != IGNORE_INDEX
    measured = (batch.pattern[scored] >= 0).mean()
    se = math.sqrt(max(share * (1 - share), 1e-12) / scored.sum())
    assert abs(measured - share) <= 5.5 * se + 1e-12
    stats = batch_stats(batch)
    assert stats["floor"] == pytest.approx(stats["label_share"] * (1 - measured))


def test_library_bindings_are_fixed_and_novel_ones_vary():
    task, batch = draw(library_share=0.5)
    c = task.config
    keys = batch.tokens[:, :-1]
    nxt = batch.tokens[:, 1:]
    lib = (keys >= c.key_base) & (keys < c.key_base + c.n_library)
    # every library key, in every sequence, is followed by its fixed value
    expected = task.library_values[keys[lib] - c.key_base] + c.value_base
    assert np.array_equal(nxt[lib], expected)
    assert np.array_equal(batch.pattern[:, :-1][lib], keys[lib] - c.key_base)
    # a second generator with the same library seed agrees; another seed does not
    assert np.array_equal(RecallTask(RecallConfig()).library_values, task.library_values)
    assert not np.array_equal(RecallTask(RecallConfig(library_seed=9)).library_values,
                              task.library_values)
    # novel keys: across sequences, the same key takes many values
    novel = (keys >= c.key_base + c.n_library) & (keys < c.value_base)
    seen: dict[int, list] = {}
    for k, v in zip(keys[novel], nxt[novel]):
        seen.setdefault(int(k), []).append(int(v))
    busy = [len(set(v)) for v in seen.values() if len(v) >= 6]  # >= 3 sequences, 2 each
    assert len(busy) > 20 and np.mean(busy) > 1.5
    assert (batch.pattern[:, :-1][novel] == -1).all()


def test_every_query_is_answerable_from_earlier_in_the_sequence():
    _task, batch = draw(n_repeats=2)
    for b in range(SEQS):
        for t in np.flatnonzero(batch.labels[b] != IGNORE_INDEX):
            key, answer = batch.tokens[b, t], batch.labels[b, t]
            assert batch.tokens[b, t + 1] == answer  # the next token is the target
            earlier = np.flatnonzero(batch.tokens[b, :t] == key)
            assert earlier.size >= 1 and batch.tokens[b, earlier[0] + 1] == answer
            first = earlier[0]
            assert batch.labels[b, first] == IGNORE_INDEX  # the store is not scored


def test_unmarked_queries_look_like_stores():
    task, batch = draw(marked=False)
    scored = batch.labels != IGNORE_INDEX
    cls = token_class(task, batch.tokens)
    is_key = (cls == 2) | (cls == 3)
    stores = is_key & ~scored
    # the token at a query has the key distribution of the stores
    assert total_variation(cls[scored], cls[stores]) < 0.05
    # the token before it too: no marker, nothing that announces a query
    prev = np.zeros_like(cls)
    prev[:, 1:] = cls[:, :-1]
    assert total_variation(prev[scored & (np.arange(256) > 0)],
                           prev[stores & (np.arange(256) > 0)]) < 0.05
    assert not (batch.tokens == QUERY_TOKEN).any()


def test_marked_queries_carry_the_marker_and_only_them():
    task, batch = draw(marked=True)
    scored = batch.labels != IGNORE_INDEX
    markers = batch.tokens == QUERY_TOKEN
    assert markers.sum() == scored.sum()
    assert np.array_equal(markers[:, :-1], scored[:, 1:])
    cls = token_class(task, batch.tokens)
    prev = np.zeros_like(cls)
    prev[:, 1:] = cls[:, :-1]
    stores = ((cls == 2) | (cls == 3)) & ~scored
    assert total_variation(prev[scored], prev[stores]) > 0.9  # the positive control


@pytest.mark.parametrize("marked", [False, True])
def test_unlabelled_library_hides_only_library_labels_in_training(marked):
    """library_labels=False: the same stream, no labels at library queries; eval keeps them."""
    fields = dict(marked=marked, library_share=0.5, n_repeats=2)
    task, open_batch = draw(seed=5, **fields)
    closed_task, closed = draw(seed=5, library_labels=False, **fields)
    assert np.array_equal(open_batch.tokens, closed.tokens)  # the same draws, token for token
    assert np.array_equal(open_batch.pattern, closed.pattern)
    scored_open = open_batch.labels != IGNORE_INDEX
    scored = closed.labels != IGNORE_INDEX
    library = open_batch.pattern >= 0
    assert not (scored & library).any()  # no library query is labelled in training
    assert (scored_open & library).sum() > 0.3 * scored_open.sum()  # ... though half were
    assert np.array_equal(scored, scored_open & ~library)  # novel labels untouched
    assert np.array_equal(closed.labels[scored], open_batch.labels[scored])
    assert np.array_equal(closed.extras["query_mask"], scored_open)  # still queries for the loss
    assert not open_batch.extras  # the open task adds nothing
    with pytest.raises(ConfigError, match="no query would carry a label"):
        RecallConfig(library_share=1.0, library_labels=False)
    ev_open, ev_closed = task.eval_set(32, seed=3), closed_task.eval_set(32, seed=3)
    assert np.array_equal(ev_open.labels, ev_closed.labels)  # evaluation keeps every answer
    assert ((ev_closed.labels != IGNORE_INDEX) & (ev_closed.pattern >= 0)).any()


@pytest.mark.parametrize("field, value, match", [
    ("library_labels", "no", "library_labels='no': must be true or false"),
    ("length", 10, "bindings need 32 tokens"),
    ("library_share", 1.2, "library_share=1.2: must lie in"),
    ("n_values", 1, "n_values=1: must be an integer >= 2"),
    ("n_novel_keys", 4, "fewer than n_bindings=8"),
])
def test_bad_configs_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        RecallConfig(**{field: value})
