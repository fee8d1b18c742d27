"""Per-layer attention, q and q̂, and both units of the headline fractions (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from cram.consolidation.layer_metrics import layer_metrics
from cram.core.columns import layer_columns as layer_metric_columns

# 6 tokens: 0, 1 library queries; 2, 3 novel queries; 4, 5 non-queries. 2 layers.
QUERY = np.array([1, 1, 1, 1, 0, 0], bool)
LIB = np.array([1, 1, 0, 0, 1, 0], bool)  # token 4 is marked library but is no query: ignored
EPI = np.array([[0, 0, 1, 1, 1, 0],   # layer 0 attends novel queries and token 4
                [1, 0, 1, 0, 1, 0]], bool)  # layer 1: library query 0, novel 2, token 4


def test_per_layer_and_both_units_on_hand_made_routing():
    q = np.array([[0.9, 0.7, 0.1, 0.3, 0, 0], [0.5, 0.5, 0.8, 0.6, 0, 0]])
    m = layer_metrics(EPI, QUERY, LIB, q=q, qhat=q / 2)
    assert m["attention_library_l0"] == 0.0 and m["attention_library_l1"] == 0.5
    assert m["attention_novel_l0"] == 1.0 and m["attention_novel_l1"] == 0.5
    assert m["attention_nonquery_l0"] == 0.5 and m["attention_nonquery_l1"] == 0.5
    assert m["attention_library_pairs"] == 0.25  # 1 of 4 (library query, layer) pairs
    assert m["attention_novel_pairs"] == 0.75
    assert m["attention_query_pairs"] == 0.5
    assert m["attention_tokens"] == pytest.approx(4 / 6)  # tokens 0, 2, 3, 4 in any layer
    assert m["attention_nonquery_tokens"] == 0.5
    assert m["q_library_l0"] == pytest.approx(0.8) and m["q_novel_l1"] == pytest.approx(0.7)
    assert m["qhat_novel_l0"] == pytest.approx(0.1)
    assert set(m) == set(layer_metric_columns(2)) - {
        "q_library_retrieving", "q_novel_retrieving", "qhat_library_retrieving",
        "qhat_novel_retrieving"}


def test_q_read_in_the_lowest_retrieving_layer():
    q = np.array([[0.9, 0.7, 0.1, 0.3, 0, 0], [0.5, 0.5, 0.8, 0.6, 0, 0]])
    retrieves = np.array([[1, 0, 0, 0, 0, 0],   # layer 0 names the answer of query 0 only
                          [1, 1, 1, 0, 0, 0]], bool)  # layer 1: queries 0-2; query 3: nowhere
    m = layer_metrics(EPI, QUERY, LIB, q=q, qhat=q / 2, retrieves=retrieves)
    assert m["q_library_retrieving"] == pytest.approx((0.9 + 0.5) / 2)  # layers 0 and 1
    assert m["q_novel_retrieving"] == pytest.approx(0.8)  # query 2 in layer 1; 3 left out
    assert m["qhat_novel_retrieving"] == pytest.approx(0.4)
    assert set(m) == set(layer_metric_columns(2))


def test_pair_fraction_between_token_fraction_over_layers_and_token_fraction():
    rng = np.random.default_rng(0)
    epi = rng.random((3, 500)) < 0.1
    query = rng.random(500) < 0.3
    m = layer_metrics(epi, query, rng.random(500) < 0.5)
    pairs = epi.mean()
    assert m["attention_tokens"] / 3 <= pairs <= m["attention_tokens"]
    assert "q_library_l0" not in m


def test_empty_groups_give_nan_not_errors():
    m = layer_metrics(np.zeros((1, 3), bool), np.zeros(3, bool), np.zeros(3, bool))
    assert np.isnan(m["attention_library_l0"]) and m["attention_nonquery_tokens"] == 0.0
