"""Token-task metrics: hand-computed values on a small batch."""

from __future__ import annotations

import math

import pytest
import torch

from cram.tasks.metrics import TokenMetrics, label_loss

X = -100


def small():
    # 2 sequences of 5 tokens; queries at (0,1) library, (0,3) novel, (1,4) novel
    labels = torch.tensor([[X, 3, X, 4, X], [X, X, X, X, 2]])
    pattern = torch.tensor([[-1, 7, -1, -1, -1], [-1, -1, -1, -1, -1]])
    pred = torch.tensor([[0, 3, 0, 1, 0], [0, 0, 0, 0, 2]])  # library right, novel 1 of 2
    layer0 = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    layer1 = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    return pred, labels, pattern, [layer0, layer1]


def test_metrics_match_hand_counts_and_accumulate_over_chunks():
    pred, labels, pattern, layers = small()
    m = TokenMetrics(n_layers=2)
    m.update(pred[:1], labels[:1], pattern[:1], [a[:1] for a in layers])
    m.update(pred[1:], labels[1:], pattern[1:], [a[1:] for a in layers])
    r = m.result()
    assert r["acc"] == pytest.approx(2 / 3)
    assert r["acc_library"] == 1.0 and r["acc_novel"] == 0.5
    assert r["attention_pair"] == pytest.approx(5 / 20)
    assert r["attention_token"] == pytest.approx(4 / 10)  # (0,0), (0,2), (0,3), (1,4)
    assert r["attention_library"] == 0.0 and r["attention_novel"] == 1.0
    assert r["attention_query"] == pytest.approx(2 / 3)
    assert r["attention_nonquery"] == pytest.approx(2 / 14)  # (0,0) l0 and (0,2) l1
    assert r["floor"] == pytest.approx(2 / 10) and r["floor_pair"] == pytest.approx(0.1)
    assert r["attention_over_floor"] == pytest.approx(2.0)
    assert r["attention_l0"] == pytest.approx(2 / 10) and r["attention_l1"] == pytest.approx(3 / 10)
    assert r["library_share"] == pytest.approx(1 / 3) and r["query_share"] == pytest.approx(0.3)


def test_empty_splits_are_nan_and_layer_count_is_checked():
    pred, labels, pattern, layers = small()
    m = TokenMetrics(n_layers=2)
    m.update(pred, labels, torch.full_like(pattern, -1), layers)
    assert math.isnan(m.result()["acc_library"])
    with pytest.raises(ValueError, match="1 layers given, 2 expected"):
        m.update(pred, labels, pattern, layers[:1])


def test_label_loss_ignores_unscored_positions():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = 10.0
    labels = torch.tensor([[X, 2, X]])
    assert float(label_loss(logits, labels)) < 1e-3
    logits[0, 0] = torch.randn(4) * 100  # an unscored position changes nothing
    assert float(label_loss(logits, labels)) < 1e-3
