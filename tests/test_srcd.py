"""Property tests of the SRCD generator: what it measures matches what its parameters say."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import seeds, srcd_configs

from cram.core.errors import ConfigError
from cram.tasks.srcd_stream import (
    EVENT_NONE,
    EVENT_QUERY,
    EVENT_STORE,
    IGNORE_INDEX,
    SRCD,
    SRCDConfig,
    describe,
    stream_rng,
)

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCH = 8


def dkw_epsilon(n: int, delta: float = 1e-6) -> float:
    """Dvoretzky-Kiefer-Wolfowitz: P(sup |F_n - F| > ε) <= 2 exp(-2 n ε²) = delta."""
    return math.sqrt(math.log(2 / delta) / (2 * n))


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_event_counts_are_exact_and_every_query_follows_its_store(config, seed):
    batch = SRCD(config).sample(BATCH, seed)
    n = config.n_queries
    assert batch.event.shape == (BATCH, config.length)
    assert ((batch.event == EVENT_QUERY).sum(1) == n).all()
    assert ((batch.event == EVENT_STORE).sum(1) == n).all()
    rows, qpos = np.nonzero(batch.event == EVENT_QUERY)
    lag = batch.lag[rows, qpos]
    assert (lag >= 0).all()
    spos = qpos - lag - 1  # the store of each query
    assert (spos >= 0).all() and (spos < qpos).all()
    assert (batch.event[rows, spos] == EVENT_STORE).all()
    assert (batch.value_in[rows, spos] == batch.answer[rows, qpos] + 1).all()
    if config.key_encoding == "id":
        assert (batch.key[rows, spos] == batch.key[rows, qpos]).all()
    else:
        assert (batch.key == 0).all()
    # each store is the store of exactly one query
    assert len(set(zip(rows.tolist(), spos.tolist()))) == len(rows)
    # no lag, pattern or answer outside queries
    off = batch.event != EVENT_QUERY
    assert (batch.lag[off] == -1).all() and (batch.pattern[off] == -1).all()
    assert (batch.answer[off] == IGNORE_INDEX).all() and not batch.is_library[off].any()


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_no_answer_leaks_into_the_input(config, seed):
    batch = SRCD(config).sample(BATCH, seed)
    queries, none = batch.event == EVENT_QUERY, batch.event == EVENT_NONE
    assert (batch.value_in[queries] == 0).all()
    assert (batch.value_in[none] == 0).all() and (batch.key[none] == 0).all()
    assert ((batch.answer[queries] >= 0) & (batch.answer[queries] < config.n_values)).all()
    if config.key_encoding == "vector":
        assert batch.key_vec.shape == (BATCH, config.length, config.key_dim)
        assert (batch.key_vec[none] == 0).all()
    else:
        assert batch.key_vec is None


@PROPERTY
@given(config=srcd_configs(encodings=("id",)), seed=seeds)
def test_library_keys_carry_their_value_and_novel_keys_are_never_library_ids(config, seed):
    gen = SRCD(config)
    batch = gen.sample(BATCH, seed)
    stores = batch.event == EVENT_STORE
    keys, values = batch.key[stores], batch.value_in[stores] - 1
    lib = keys <= config.n_library
    assert (keys >= 1).all() and (keys < config.n_keys).all()
    assert (values[lib] == gen.library_values[keys[lib] - 1]).all()
    q = batch.event == EVENT_QUERY
    assert np.array_equal(batch.key[q] <= config.n_library, batch.is_library[q])
    assert (batch.pattern[q][batch.is_library[q]] == batch.key[q][batch.is_library[q]] - 1).all()
    # the library is fixed by library_seed alone: a second generator agrees
    assert np.array_equal(SRCD(config).library_values, gen.library_values)
    for row in range(BATCH):  # novel keys are distinct within a sequence
        k = batch.key[row][stores[row]]
        novel = k[k > config.n_library]
        assert len(set(novel.tolist())) == len(novel)
        if config.n_queries <= config.n_library:
            assert len(set(k.tolist())) == len(k)


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_same_seed_same_data_other_seed_other_data(config, seed):
    gen = SRCD(config)
    a, b = gen.sample(3, seed), SRCD(config).sample(3, seed)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None and y is None) or np.array_equal(x, y), f.name
    c = gen.sample(3, seed + 1)
    free = (a.dtau < np.float32(config.gap_max)) & (a.dtau > np.float32(config.gap_scale))
    if free.any():  # a gap drawn strictly between scale and cap (not clipped) is continuous
        assert not np.array_equal(a.dtau, c.dtau)
    if config.length >= 3:  # two standardised points are always (-1, 1) or (1, -1)
        assert not np.array_equal(a.signal, c.signal)


@PROPERTY
@given(config=srcd_configs(), seed=seeds)
def test_signal_is_standardised_and_the_target_is_the_next_observation(config, seed):
    batch = SRCD(config).sample(BATCH, seed)
    assert np.isfinite(batch.signal).all() and np.isfinite(batch.dtau).all()
    if config.length >= 2:
        np.testing.assert_allclose(batch.signal.mean(1), 0.0, atol=1e-4)
        assert (np.abs(batch.signal.std(1) - 1.0) < 1e-3).all() or config.length < 3
    np.testing.assert_array_equal(batch.target_signal[:, :-1], batch.signal[:, 1:])
    assert not batch.signal_mask[:, -1].any() and batch.signal_mask[:, :-1].all()
    assert (batch.dtau >= np.float32(config.gap_scale) * (1 - 1e-6)).all()
    assert (batch.dtau <= np.float32(config.gap_max) * (1 + 1e-6)).all()


@settings(max_examples=15, deadline=None)
@given(config=srcd_configs(max_length=64, encodings=("id",)), seed=seeds)
def test_library_share_within_binomial_tolerance(config, seed):
    b = 400
    batch = SRCD(config).sample(b, seed)
    q = batch.event == EVENT_QUERY
    n = int(q.sum())
    p = config.library_share
    share = batch.is_library[q].mean()
    assert abs(share - p) <= 5.5 * math.sqrt(p * (1 - p) / n) + 1e-12


@settings(max_examples=15, deadline=None)
@given(shape=st.floats(0.5, 6.0), scale=st.floats(0.005, 0.5), ratio=st.floats(1.5, 100.0),
       seed=seeds)
def test_gaps_follow_the_clipped_pareto_law(shape, scale, ratio, seed):
    config = SRCDConfig(length=256, query_rate=0.05, gap_shape=shape, gap_scale=scale,
                        gap_max=scale * ratio)
    gaps = SRCD(config).sample(32, seed).dtau.astype(np.float64).ravel()
    n = gaps.size
    eps = dkw_epsilon(n)
    # CDF of scale·Pareto(α) clipped at gap_max: 1 - (scale/x)^α below the clip, 1 at it
    xs = scale * np.geomspace(1.0, ratio, 12)[:-1]
    empirical = (gaps[:, None] <= xs[None, :] * (1 + 1e-6)).mean(0)
    theory = 1 - (scale / xs) ** shape
    assert np.abs(empirical - theory).max() <= eps + 1e-5
    clipped = (gaps >= config.gap_max * (1 - 1e-6)).mean()
    assert abs(clipped - ratio ** -shape) <= eps + 1e-5
    # and describe() reports the same quantiles as numpy on the same draw
    stats = describe(config, samples=32, seed=seed)
    assert stats["gap_quantiles"]["0.5"] == pytest.approx(np.quantile(gaps, 0.5), rel=1e-6)


def test_describe_matches_the_parameters():
    config = SRCDConfig(length=512, query_rate=0.05, library_share=0.6)
    stats = describe(config, samples=64, seed=3)
    assert stats["length"] == 512
    assert stats["query_fraction"] == config.n_queries / 512
    assert stats["store_fraction"] == config.n_queries / 512
    assert abs(stats["library_share"] - 0.6) < 5 * math.sqrt(0.24 / (64 * config.n_queries))
    assert stats["attention_floor"] == pytest.approx(
        stats["query_fraction"] * (1 - stats["library_share"]))
    assert stats["signal_std"] == pytest.approx(1.0, abs=1e-3)
    assert all(v >= 0 for v in stats["lag_quantiles"].values())
    assert stats["generation_ms_per_sequence"] > 0


def _decode_accuracy(x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Held-out accuracy of a least-squares one-hot linear classifier (half train, half test)."""
    half = len(x) // 2
    design = np.hstack([x, np.ones((len(x), 1))])
    w, *_ = np.linalg.lstsq(design[:half], np.eye(n_classes)[y[:half]], rcond=None)
    return float(((design[half:] @ w).argmax(1) == y[half:]).mean())


def test_vector_keys_of_novel_bindings_do_not_carry_the_value():
    """Novel key vectors decode their value at chance; library key vectors decode it well.

    Library key vectors are the positive control: the library fixes the value of each key.
    """
    config = SRCDConfig(length=200, query_rate=0.05, key_encoding="vector", key_dim=16,
                        n_values=4, n_library=8, library_share=0.5, n_novel_keys=50)
    batch = SRCD(config).sample(600, seed=11)
    q = batch.event == EVENT_QUERY
    x, y, lib = batch.key_vec[q], batch.answer[q], batch.is_library[q]
    novel_acc = _decode_accuracy(x[~lib], y[~lib], 4)
    n_test = (~lib).sum() // 2
    assert novel_acc < 0.25 + 5 * math.sqrt(0.25 * 0.75 / n_test)
    assert _decode_accuracy(x[lib], y[lib], 4) > 0.9


def test_vector_keys_are_library_vector_plus_fresh_noise():
    config = SRCDConfig(length=100, query_rate=0.1, key_encoding="vector", key_dim=6,
                        key_noise=0.0, n_library=5)
    gen = SRCD(config)
    batch = gen.sample(20, seed=2)
    rows, qpos = np.nonzero(batch.event == EVENT_QUERY)
    spos = qpos - batch.lag[rows, qpos] - 1
    np.testing.assert_array_equal(batch.key_vec[rows, qpos], batch.key_vec[rows, spos])
    lib = batch.is_library[rows, qpos]
    np.testing.assert_allclose(batch.key_vec[rows, qpos][lib],
                               gen.library_vectors[batch.pattern[rows, qpos][lib]])
    noisy = SRCD(dataclasses.replace(config, key_noise=0.3)).sample(20, seed=2)
    assert not np.array_equal(noisy.key_vec[rows, qpos], noisy.key_vec[rows, spos])


def test_stream_batches_depend_only_on_seed_rank_step():
    gen = SRCD(SRCDConfig(length=64))
    stream = gen.stream(4, seed=5, rank=1)
    first = [next(stream) for _ in range(3)]
    resumed = next(gen.stream(4, seed=5, rank=1, start_step=2))
    np.testing.assert_array_equal(first[2].signal, resumed.signal)
    np.testing.assert_array_equal(gen.sample(4, stream_rng(5, 1, 0)).event, first[0].event)
    assert not np.array_equal(first[0].signal, first[1].signal)
    other_rank = next(gen.stream(4, seed=5, rank=0))
    assert not np.array_equal(first[0].signal, other_rank.signal)
    eval_a, eval_b = gen.eval_set(4), gen.eval_set(4)
    np.testing.assert_array_equal(eval_a.signal, eval_b.signal)


BAD = [
    ("length", -5), ("length", 0), ("length", 2.5), ("query_rate", 0.0), ("query_rate", 1.0),
    ("query_rate", -0.1), ("query_rate", 1.5), ("library_share", -0.01), ("library_share", 1.01),
    ("n_library", 0), ("n_novel_keys", 0), ("n_values", 1), ("key_dim", 0),
    ("key_encoding", "onehot"), ("gap_shape", 0.0), ("gap_scale", -1.0), ("gap_max", float("inf")),
    ("key_noise", -0.1), ("obs_noise", float("nan")), ("decay_min", 0.0), ("freq_min", -1.0),
]


@pytest.mark.parametrize("field,value", BAD)
def test_bad_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SRCDConfig(**{field: value})


@pytest.mark.parametrize("changes,field", [
    ({"gap_max": 0.01, "gap_scale": 0.05}, "gap_max"),
    ({"signal_dim_min": 3, "signal_dim_max": 2}, "signal_dim"),
    ({"decay_min": 0.5, "decay_max": 0.1}, "decay_max"),
    ({"length": 10, "query_rate": 0.9}, "query_rate"),
    ({"length": 1000, "query_rate": 0.1, "n_novel_keys": 20}, "n_novel_keys"),
])
def test_inconsistent_configs_raise_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        SRCDConfig(**changes)


def test_signal_dim_above_what_the_generator_supports_is_rejected():
    with pytest.raises(ConfigError, match="signal_dim_max"):
        SRCDConfig(signal_dim_min=2, signal_dim_max=8)


def test_transfer_task_variants():
    """query-format permutes answers; a shifted library uses keys the default task calls novel."""
    base = SRCD(SRCDConfig(length=256)).sample(8, 0)
    perm_gen = SRCD(SRCDConfig(length=256, answer_permutation_seed=5))
    permuted = perm_gen.sample(8, 0)
    q = base.event == EVENT_QUERY
    assert (permuted.answer[q] == perm_gen.answer_permutation[base.answer[q]]).all()
    assert (permuted.value_in == base.value_in).all()
    shifted = SRCD(SRCDConfig(length=256, library_keys="shifted")).sample(8, 0)
    q = shifted.event == EVENT_QUERY
    lib_keys = shifted.key[q][shifted.is_library[q]]
    assert lib_keys.min() > 100 and lib_keys.max() <= 200
    assert shifted.key[q][~shifted.is_library[q]].min() > 200
