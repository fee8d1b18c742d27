"""The SRCD adapter: the token view keeps every binding, query and dynamics target of SRCD."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cram.core.errors import ConfigError
from cram.tasks import IGNORE_INDEX, SRCDTask, TaskError, check_task, srcd_task
from cram.tasks.srcd_stream import EVENT_QUERY, EVENT_STORE, SRCD, SRCDConfig

CONFIG = SRCDConfig(length=128, query_rate=0.05)


def pair(seed: int = 0, marked: bool = True, config: SRCDConfig = CONFIG):
    gen = SRCD(config)
    task = SRCDTask(SRCD(config), marked=marked)
    return gen.sample(16, np.random.default_rng(seed)), task.sample(16, np.random.default_rng(seed))


def test_token_view_holds_every_store_and_query():
    src, tok = pair()
    n = CONFIG.n_queries
    task = SRCDTask(SRCD(CONFIG))
    tok.validate(task.vocab_size, task.n_library)
    assert tok.tokens.shape == (16, CONFIG.length + n)
    scored = tok.labels != IGNORE_INDEX
    assert (scored.sum(1) == n).all()
    for b in range(16):
        q = src.event[b] == EVENT_QUERY
        assert np.array_equal(tok.labels[b][scored[b]], task.value_base + src.answer[b][q])
        assert np.array_equal(tok.tokens[b][scored[b]], task.query_base - 1 + src.key[b][q])
        s = src.event[b] == EVENT_STORE
        keys = np.flatnonzero((tok.tokens[b] > 0) & (tok.tokens[b] < task.value_base))
        assert np.array_equal(tok.tokens[b][keys], src.key[b][s])
        assert np.array_equal(tok.tokens[b][keys + 1], task.value_base + src.value_in[b][s] - 1)
        assert (tok.dtau[b][keys + 1] == 0).all()
        assert np.isclose(tok.dtau[b].sum(), src.dtau[b].sum())
        lib = src.is_library[b][q]
        assert np.array_equal(tok.pattern[b][scored[b]][lib], src.pattern[b][q][lib])
        assert (tok.pattern[b][scored[b]][~lib] == -1).all()


def test_every_query_is_answered_by_an_earlier_store():
    _, tok = pair(seed=2, marked=False)
    for b in range(16):
        for t in np.flatnonzero(tok.labels[b] != IGNORE_INDEX):
            earlier = np.flatnonzero(tok.tokens[b, :t] == tok.tokens[b, t])
            assert earlier.size == 1 and tok.tokens[b, earlier[0] + 1] == tok.labels[b, t]


def test_eval_set_is_srcds_eval_set_and_sampling_is_seeded():
    task = srcd_task(length=128, query_rate=0.05)
    src = SRCD(CONFIG).eval_set(4, seed=3)
    tok = task.eval_set(4, seed=3)
    assert np.array_equal(tok.extras["signal"][tok.dtau > 0], src.signal[src.dtau > 0])
    a, b = task.sample(4, np.random.default_rng(1)), task.sample(4, np.random.default_rng(1))
    assert np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, task.sample(4, np.random.default_rng(2)).tokens)
    check_task(task)


def test_dynamics_targets_are_kept_one_for_one_and_the_extra_loss_matches():
    src, tok = pair(seed=4)
    mask = tok.extras["signal_mask"]
    assert mask.sum() == src.signal_mask.sum()
    assert np.allclose(np.sort(tok.extras["target_signal"][mask]),
                       np.sort(src.target_signal[src.signal_mask]))
    task = SRCDTask(SRCD(CONFIG), signal_weight=2.0)
    batch = tok.to_torch("cpu")
    zero = dataclasses.make_dataclass("Out", ["signal_pred"])(torch.zeros(tok.tokens.shape))
    loss = task.extra_loss(zero, batch)["signal"]
    expected = 2.0 * float((src.target_signal[src.signal_mask] ** 2).mean())
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    exact = dataclasses.make_dataclass("Out", ["signal_pred"])(batch["target_signal"].clone())
    assert float(task.extra_loss(exact, batch)["signal"]) == 0.0
    with pytest.raises(TaskError, match="needs outputs.signal_pred"):
        task.extra_loss(object(), batch)


def test_unmarked_view_uses_the_store_key_at_queries():
    src, tok = pair(marked=False)
    task = SRCDTask(SRCD(CONFIG), marked=False)
    assert task.vocab_size == CONFIG.n_keys + CONFIG.n_values
    scored = tok.labels != IGNORE_INDEX
    assert np.array_equal(tok.tokens[scored], src.key[src.event == EVENT_QUERY])


def test_vector_keys_have_no_token_view():
    with pytest.raises(ConfigError, match="key_encoding='vector': the token view needs 'id'"):
        SRCDTask(SRCD(SRCDConfig(length=64, key_encoding="vector")))
