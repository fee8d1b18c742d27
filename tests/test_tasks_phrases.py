"""Statistics of the phrases task: recurring library phrases, repeated novel phrases, Zipf text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cram.core.errors import ConfigError
from cram.tasks import IGNORE_INDEX, PhrasesConfig, PhrasesTask
from cram.tasks.phrases import SENTENCE_END

SEQS = 256


def draw(seed: int = 0, **fields):
    task = PhrasesTask(PhrasesConfig(**fields))
    return task, task.sample(SEQS, np.random.default_rng(seed))


def heads(task: PhrasesTask, batch) -> np.ndarray:
    return batch.tokens >= task.config.head_base  # (B, T)


def test_shapes_dtypes_and_exact_label_share():
    task, batch = draw(n_repeats=2, phrase_len=5)
    batch.validate(task.vocab_size, task.n_library)
    assert batch.tokens.shape == (SEQS, 256) and batch.tokens.dtype == np.int64
    scored = batch.labels != IGNORE_INDEX
    assert (scored.sum(1) == 6 * 2 * 4).all()
    assert (heads(task, batch).sum(1) == 6 * 3).all()  # heads occur only as phrase heads
    # labels are next-token targets
    assert np.array_equal(batch.labels[:, :-1][scored[:, :-1]], batch.tokens[:, 1:][scored[:, :-1]])
    assert not scored[:, -1].any()


def test_seeded_determinism_and_a_fixed_eval_set():
    task, a = draw(seed=1)
    _, b = draw(seed=1)
    _, c = draw(seed=2)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)
    assert np.array_equal(task.eval_set(8, 5).tokens, PhrasesTask().eval_set(8, 5).tokens)
    assert not np.array_equal(task.eval_set(8, 5).tokens, task.eval_set(8, 6).tokens)


@pytest.mark.parametrize("share", [0.0, 0.5, 0.8])
def test_library_share_within_binomial_tolerance(share):
    task, batch = draw(library_share=share)
    head = heads(task, batch)
    first = np.zeros_like(head)  # one count per phrase: its first appearance
    for b in range(SEQS):
        _, idx = np.unique(batch.tokens[b][head[b]], return_index=True)
        first[b, np.flatnonzero(head[b])[idx]] = True
    n = first.sum()
    measured = (batch.pattern[first] >= 0).mean()
    se = math.sqrt(max(share * (1 - share), 1e-12) / n)
    assert abs(measured - share) <= 5.5 * se + 1e-12


def test_library_phrases_are_fixed_and_novel_ones_vary():
    task, batch = draw()
    c = task.config
    span = c.phrase_len
    novel_cont: dict[int, set] = {}
    for b, t in zip(*np.nonzero(heads(task, batch))):
        phrase = batch.tokens[b, t:t + span]
        lib_id = phrase[0] - c.head_base
        if lib_id < c.n_library:
            assert np.array_equal(phrase[1:], task.library_words[lib_id])
            assert (batch.pattern[b, t:t + span] == lib_id).all()
        else:
            assert (batch.pattern[b, t:t + span] == -1).all()
            novel_cont.setdefault(int(phrase[0]), set()).add(tuple(phrase[1:]))
    assert np.mean([len(v) for v in novel_cont.values()]) > 1.5
    assert not np.array_equal(PhrasesTask(PhrasesConfig(library_seed=2)).library_words,
                              task.library_words)


def test_every_scored_token_is_recoverable_from_an_earlier_appearance():
    task, batch = draw(n_repeats=2)
    for b in range(SEQS):
        head_pos = np.flatnonzero(heads(task, batch)[b])
        for t in np.flatnonzero(batch.labels[b] != IGNORE_INDEX):
            start = head_pos[head_pos <= t][-1]
            k = t - start
            earlier = head_pos[(head_pos < start) & (batch.tokens[b, head_pos] ==
                                                     batch.tokens[b, start])]
            assert earlier.size >= 1
            assert batch.tokens[b, earlier[0] + k + 1] == batch.labels[b, t]
            assert batch.labels[b, earlier[0]] == IGNORE_INDEX  # the first appearance is unscored


def test_repeats_are_unmarked():
    task, batch = draw()
    head = heads(task, batch)
    repeat = head & (batch.labels != IGNORE_INDEX)
    first = head & ~repeat
    prev = np.zeros_like(batch.tokens)
    prev[:, 1:] = batch.tokens[:, :-1]
    # the token before a phrase: ".", a word or a head, equally often before first and repeat
    cls = np.searchsorted([1, task.config.head_base], prev, side="right")
    pa = np.bincount(cls[repeat], minlength=3) / repeat.sum()
    pb = np.bincount(cls[first], minlength=3) / first.sum()
    assert 0.5 * np.abs(pa - pb).sum() < 0.05


def test_filler_text_follows_zipf_with_sentence_ends():
    task, batch = draw()
    filler = (batch.pattern == -1) & ~heads(task, batch)
    free = np.ones_like(filler)
    for b, t in zip(*np.nonzero(heads(task, batch))):
        free[b, t:t + task.config.phrase_len] = False
    words = batch.tokens[filler & free]
    ends = (words == SENTENCE_END).mean()
    n = words.size
    assert abs(ends - 0.1) < 5.5 * math.sqrt(0.09 / n)
    counts = np.bincount(words[words != SENTENCE_END], minlength=1 + task.config.n_words)[1:]
    share = counts / counts.sum()
    se = np.sqrt(task.word_probs * (1 - task.word_probs) / counts.sum())
    assert (np.abs(share - task.word_probs) < 5.5 * se + 1e-9).all()


@pytest.mark.parametrize("field, value, match", [
    ("phrase_len", 1, "phrase_len=1: must be an integer >= 2"),
    ("length", 20, "the phrases need 48 tokens"),
    ("sentence_end", -0.1, "sentence_end=-0.1: must lie in"),
    ("n_novel_heads", 3, "fewer than n_phrases=6"),
])
def test_bad_configs_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        PhrasesConfig(**{field: value})
