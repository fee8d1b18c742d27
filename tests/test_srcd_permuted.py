"""Statistics of the shortcut-closed SRCD variants (``data.library_answer``, issue 15).

``permuted``: each sequence relabels the values of its library bindings by a fresh random
permutation. What must hold: the stream is otherwise the same; every query's answer is the value
its store shows (so attention can always answer); and no map from the key alone (what the readout
can memorise) predicts a library answer better than chance, while it predicts every answer of the
fixed task. ``unlabelled``: training draws carry no answer at library queries, the evaluation set
carries all of them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import seeds, srcd_configs

from cram.core.errors import ConfigError
from cram.tasks.srcd_stream import EVENT_QUERY, EVENT_STORE, SRCD, SRCDConfig

PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(config: SRCDConfig, n: int, seed: int):
    fixed = SRCD(config).sample(n, seed)
    permuted = SRCD(dataclasses.replace(config, library_answer="permuted")).sample(n, seed)
    return fixed, permuted


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_only_library_values_change(config, seed):
    fixed, permuted = _pair(config, 6, seed)
    for f in dataclasses.fields(fixed):
        if f.name in ("value_in", "answer"):
            continue
        a, b = getattr(fixed, f.name), getattr(permuted, f.name)
        assert (a is None and b is None) or np.array_equal(a, b), f.name
    query = fixed.event == EVENT_QUERY
    novel = query & ~fixed.is_library
    assert np.array_equal(fixed.answer[novel], permuted.answer[novel])
    assert np.array_equal(fixed.answer == -100, permuted.answer == -100)


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_every_answer_is_the_value_its_store_shows(config, seed):
    config = dataclasses.replace(config, key_encoding="id", library_answer="permuted")
    batch = SRCD(config).sample(6, seed)
    for i in range(len(batch)):
        stores = {int(k): int(v) - 1 for k, v, e in zip(batch.key[i], batch.value_in[i],
                                                         batch.event[i]) if e == EVENT_STORE}
        for k, a, e in zip(batch.key[i], batch.answer[i], batch.event[i]):
            if e == EVENT_QUERY:
                assert stores[int(k)] == int(a)


def _key_map_accuracy(batch, n_fit: int) -> float:
    """Held-out accuracy and size of the best key → value map fitted on ``n_fit`` sequences.

    This is what a readout that memorises library keys can reach.
    """
    lib = (batch.event == EVENT_QUERY) & batch.is_library  # (B, T)
    table: dict[int, np.ndarray] = {}
    for k, a in zip(batch.key[:n_fit][lib[:n_fit]], batch.answer[:n_fit][lib[:n_fit]]):
        table.setdefault(int(k), np.zeros(64, int))[a] += 1
    keys, answers = batch.key[n_fit:][lib[n_fit:]], batch.answer[n_fit:][lib[n_fit:]]
    guess = np.array([table[int(k)].argmax() if int(k) in table else 0 for k in keys])
    return float((guess == answers).mean()), answers.size


def test_the_key_alone_predicts_library_answers_at_chance_only():
    config = SRCDConfig(length=256)
    fixed, permuted = _pair(config, 600, seed=7)
    acc_fixed, _ = _key_map_accuracy(fixed, 300)
    acc_perm, n = _key_map_accuracy(permuted, 300)
    chance = 1 / config.n_values
    assert acc_fixed == 1.0  # the shortcut of the default task: the key names the value
    assert n > 2000
    assert abs(acc_perm - chance) < 5 * math.sqrt(chance * (1 - chance) / n)


def test_library_answers_are_uniform_over_values():
    config = SRCDConfig(length=256, library_answer="permuted")
    batch = SRCD(config).sample(400, seed=3)
    answers = batch.answer[(batch.event == EVENT_QUERY) & batch.is_library]
    counts = np.bincount(answers, minlength=config.n_values)
    expected = answers.size / config.n_values
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 31 + 6 * math.sqrt(2 * 31)  # χ²(31): mean 31, sd √62; far tail only fails


def test_library_answer_is_checked():
    with pytest.raises(ConfigError, match="library_answer=.shuffled."):
        SRCDConfig(library_answer="shuffled")


def test_unlabelled_hides_library_answers_from_training_draws_only():
    config = SRCDConfig(length=256, library_answer="unlabelled")
    gen, fixed = SRCD(config), SRCD(dataclasses.replace(config, library_answer="fixed"))
    train, ref = gen.sample(16, seed=5), fixed.sample(16, seed=5)
    query = ref.event == EVENT_QUERY
    lib, novel = query & ref.is_library, query & ~ref.is_library
    assert lib.sum() > 50 and (train.answer[lib] == -100).all()
    assert np.array_equal(train.answer[novel], ref.answer[novel])
    assert np.array_equal(train.value_in, ref.value_in)  # stores still show the library values
    evaluation, ref_eval = gen.eval_set(8, seed=1), fixed.eval_set(8, seed=1)
    assert np.array_equal(evaluation.answer, ref_eval.answer)  # evaluation keeps every answer
