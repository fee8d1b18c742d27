"""``TokenBatch``: validation errors name the field, to_torch/concat/slice keep everything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cram.tasks import IGNORE_INDEX, TaskBatchError, TokenBatch


def make(b: int = 2, t: int = 5, **changes) -> TokenBatch:
    tokens = np.arange(b * t, dtype=np.int64).reshape(b, t) % 7
    labels = np.full((b, t), IGNORE_INDEX, np.int64)
    labels[:, -1] = 3
    fields = {"tokens": tokens, "labels": labels}
    fields.update(changes)
    return TokenBatch(**fields)


def test_a_good_batch_validates_and_fills_defaults():
    batch = make().validate(vocab_size=7)
    assert batch.dtau_or_ones().dtype == np.float32 and (batch.dtau_or_ones() == 1).all()
    assert (batch.pattern_or_novel() == -1).all()
    assert batch.shape == (2, 5) and len(batch) == 2


@pytest.mark.parametrize("changes, match", [
    ({"tokens": [[1, 2]]}, r"TokenBatch\.tokens: expected a numpy int64 array, got list"),
    ({"tokens": np.zeros((2, 5), np.int32)}, r"\.tokens: expected dtype int64, got int32"),
    ({"tokens": np.zeros(5, np.int64)}, r"\.tokens: expected shape \(B, T\), got \(5,\)"),
    ({"labels": np.zeros((2, 4), np.int64)}, r"\.labels: expected shape \(2, 5\), got \(2, 4\)"),
    ({"labels": np.full((2, 5), 7, np.int64)}, (r"\.labels\[0, 0\] = 7: must lie in \[0, 7\) "
                                                r"or -100 \(10 such entries\)")),
    ({"labels": np.full((2, 5), -1, np.int64)}, r"\.labels\[0, 0\] = -1"),
    ({"labels": np.full((2, 5), -100, np.int64)}, "every label is -100"),
    ({"tokens": np.full((2, 5), 9, np.int64)}, r"\.tokens\[0, 0\] = 9: must lie in \[0, 7\)"),
    ({"pattern": np.full((2, 5), 4, np.int64)}, (r"\.pattern\[0, 0\] = 4: must lie in -1 or "
                                                 r"\[0, 3\)")),
    ({"pattern": np.full((2, 5), -2, np.int64)}, r"\.pattern\[0, 0\] = -2"),
    ({"dtau": np.ones((2, 5), np.int64)}, r"\.dtau: expected a numpy float array, got int64"),
    ({"dtau": np.ones((2, 4), np.float32)}, r"\.dtau: expected shape \(2, 5\), got \(2, 4\)"),
    ({"dtau": np.full((2, 5), np.nan, np.float32)}, r"\.dtau: must be finite and >= 0"),
    ({"extras": {"signal": np.zeros((2, 4))}}, (r"\.extras\['signal'\]: expected a numpy array "
                                                r"of shape \(2, 5\) \+ \(\.\.\.\), got \(2, 4\)")),
])
def test_validation_names_the_field(changes, match):
    with pytest.raises(TaskBatchError, match=match):
        make(**changes).validate(vocab_size=7, n_library=3)


def test_to_torch_gives_int64_tokens_and_float_dtau():
    batch = make(dtau=np.full((2, 5), 0.5, np.float32), extras={"x": np.zeros((2, 5, 3))})
    out = batch.to_torch("cpu")
    assert out["tokens"].dtype == torch.int64 and out["labels"].dtype == torch.int64
    assert out["pattern"].dtype == torch.int64 and (out["pattern"] == -1).all()
    assert out["dtau"].dtype == torch.float32 and (out["dtau"] == 0.5).all()
    assert out["x"].shape == (2, 5, 3)


def test_concat_and_slice_round_trip():
    a = make(pattern=np.zeros((2, 5), np.int64), dtau=np.ones((2, 5), np.float32),
             extras={"x": np.arange(10.0).reshape(2, 5)})
    b = make(pattern=np.ones((2, 5), np.int64), dtau=np.zeros((2, 5), np.float32),
             extras={"x": -np.arange(10.0).reshape(2, 5)})
    both = TokenBatch.concat([a, b])
    assert both.shape == (4, 5)
    back = both.slice(2, 4)
    for name in ("tokens", "labels", "pattern", "dtau"):
        assert np.array_equal(getattr(back, name), getattr(b, name))
    assert np.array_equal(back.extras["x"], b.extras["x"])
    with pytest.raises(TaskBatchError, match="no batches"):
        TokenBatch.concat([])


def test_concat_fills_a_missing_pattern_with_novel():
    a = make(pattern=np.zeros((2, 5), np.int64))
    b = make()
    assert (TokenBatch.concat([a, b]).pattern[2:] == -1).all()
