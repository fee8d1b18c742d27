"""``TokenBatch``: what every token task hands the trainer, and its validation.

A batch is ``B`` sequences of ``T`` tokens. ``labels[b, t]`` is what the model's output at position
``t`` must say (already aligned: a next-token task stores ``tokens[b, t + 1]`` there; the trainer
never shifts), or ``IGNORE_INDEX`` where nothing is scored. ``pattern`` and ``extras`` are for
metrics and task-specific losses only and are never model inputs; the model sees ``tokens`` and
``dtau``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cram.core.errors import CramError

IGNORE_INDEX = -100
QUERY_MASK = "query_mask"  # extras name: queries whose label is hidden (see TokenBatch)


class TaskError(CramError, ValueError):
    """A token task cannot be loaded or produced a malformed batch; the message names what."""


class TaskLoadError(TaskError):
    """``--task FILE.py:FACTORY`` / ``MODULE:FACTORY`` cannot be resolved or called."""


class TaskBatchError(TaskError):
    """A batch has a wrong shape, dtype or value; the message names the field."""


def host_to_device(array: np.ndarray, device=None, non_blocking: bool = False):
    """A numpy array as a torch tensor on ``device``.

    ``non_blocking`` on CUDA: staged in pinned host memory and copied without waiting for the
    device (a copy from pageable memory blocks until the queue drains: a host sync per tensor).
    The pinned block is the caching host allocator's, kept until the copy has run.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if non_blocking and device is not None and torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass(frozen=True)
class TokenBatch:
    """A batch of token sequences as numpy arrays (``B`` sequences of ``T`` positions).

    Attributes
    ----------
    tokens : (B, T) int64 in [0, vocab_size)
        The only content input of a model.
    labels : (B, T) int64 in [0, vocab_size), or ``IGNORE_INDEX`` (-100) where nothing is scored.
    pattern : (B, T) int64 or None
        Library binding id (in [0, n_library)) for tokens that belong to a library item, -1
        elsewhere. Metrics only (library/novel accuracy and attention); never a model input.
    dtau : (B, T) float32 or None
        Time gap before each position; ``None`` means ones. Never the positional signal.
    extras : mapping of name -> (B, T, ...) array
        Task-private arrays for ``extra_loss`` (e.g. SRCD's signal); never a model input unless a
        task declares them in ``side_inputs``. One name is read by the trainer:
        ``QUERY_MASK`` ("query_mask", (B, T) bool), the positions that count as queries for
        the routing losses (consolidation, familiarity, the query cost) although their label is
        hidden (a shortcut-closed task); without it the queries are the labelled positions.
    """

    tokens: np.ndarray
    labels: np.ndarray
    pattern: np.ndarray | None = None
    dtau: np.ndarray | None = None
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, T)`` of the token array."""
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    def dtau_or_ones(self) -> np.ndarray:
        """``dtau`` as (B, T) float32, ones where the task gave none."""
        if self.dtau is None:
            return np.ones(self.tokens.shape, np.float32)
        return np.asarray(self.dtau, np.float32)

    def pattern_or_novel(self) -> np.ndarray:
        """``pattern`` as (B, T) int64, all -1 (novel) where the task gave none."""
        if self.pattern is None:
            return np.full(self.tokens.shape, -1, np.int64)
        return self.pattern

    def to_torch(self, device=None, non_blocking: bool = False) -> dict:
        """A dict of tensors: tokens, labels, pattern (filled), dtau (filled), and the extras.

        ``non_blocking``: as :func:`host_to_device`.
        """

        def tensor(a: np.ndarray):
            return host_to_device(a, device, non_blocking)

        out = {"tokens": tensor(self.tokens), "labels": tensor(self.labels),
               "pattern": tensor(self.pattern_or_novel()), "dtau": tensor(self.dtau_or_ones())}
        out.update({k: tensor(v) for k, v in self.extras.items()})
        return out

    @staticmethod
    def concat(parts: list[TokenBatch]) -> TokenBatch:
        """Stack batches along the batch axis (e.g. the per-rank shards of a global batch)."""
        if not parts:
            raise TaskBatchError("TokenBatch.concat: no batches given")

        def cat(get):
            arrays = [get(p) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays)

        first = parts[0]
        return TokenBatch(
            tokens=cat(lambda p: p.tokens), labels=cat(lambda p: p.labels),
            pattern=(None if all(p.pattern is None for p in parts)
                     else cat(lambda p: p.pattern_or_novel())),
            dtau=None if all(p.dtau is None for p in parts) else cat(lambda p: p.dtau_or_ones()),
            extras={k: np.concatenate([p.extras[k] for p in parts]) for k in first.extras})

    def slice(self, start: int, stop: int) -> TokenBatch:
        """Sequences ``start:stop`` (for evaluation in chunks)."""
        return dataclasses.replace(
            self, tokens=self.tokens[start:stop], labels=self.labels[start:stop],
            pattern=None if self.pattern is None else self.pattern[start:stop],
            dtau=None if self.dtau is None else self.dtau[start:stop],
            extras={k: v[start:stop] for k, v in self.extras.items()})

    def validate(self, vocab_size: int, n_library: int | None = None,
                 where: str = "TokenBatch") -> TokenBatch:
        """Check shapes, dtypes and values; raise :class:`TaskBatchError` naming the field.

        Returns ``self`` so that a check can be chained.
        """
        _check_int_array(where, "tokens", self.tokens, None)
        shape = self.tokens.shape
        _check_int_array(where, "labels", self.labels, shape)
        bad = (self.tokens < 0) | (self.tokens >= vocab_size)
        if bad.any():
            _raise_value(where, "tokens", self.tokens, bad, f"[0, {vocab_size})")
        scored = self.labels != IGNORE_INDEX
        bad = scored & ((self.labels < 0) | (self.labels >= vocab_size))
        if bad.any():
            _raise_value(where, "labels", self.labels, bad, f"[0, {vocab_size}) or -100")
        if not scored.any():
            raise TaskBatchError(f"{where}.labels: every label is -100, so nothing is scored")
        if self.pattern is not None:
            _check_int_array(where, "pattern", self.pattern, shape)
            top = n_library if n_library is not None else np.iinfo(np.int64).max
            bad = (self.pattern < -1) | (self.pattern >= top)
            if bad.any():
                _raise_value(where, "pattern", self.pattern, bad, f"-1 or [0, {top})")
        if self.dtau is not None:
            _check_dtau(where, self.dtau, shape)
        for name, arr in self.extras.items():
            if not isinstance(arr, np.ndarray) or arr.shape[:2] != shape:
                got = getattr(arr, "shape", type(arr).__name__)
                raise TaskBatchError(f"{where}.extras[{name!r}]: expected a numpy array of shape "
                                     f"{shape} + (...), got {got}")
        return self


def _check_int_array(where: str, name: str, arr, shape) -> None:
    if not isinstance(arr, np.ndarray):
        raise TaskBatchError(f"{where}.{name}: expected a numpy int64 array, got "
                             f"{type(arr).__name__}")
    if arr.dtype != np.int64:
        raise TaskBatchError(f"{where}.{name}: expected dtype int64, got {arr.dtype}")
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = "(B, T)" if shape is None else str(shape)
        raise TaskBatchError(f"{where}.{name}: expected shape {want}, got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise TaskBatchError(f"{where}.{name}: empty batch, shape {arr.shape}")


def _check_dtau(where: str, dtau, shape) -> None:
    if not isinstance(dtau, np.ndarray) or dtau.dtype.kind != "f":
        got = getattr(dtau, "dtype", type(dtau).__name__)
        raise TaskBatchError(f"{where}.dtau: expected a numpy float array, got {got}")
    if dtau.shape != shape:
        raise TaskBatchError(f"{where}.dtau: expected shape {shape}, got {dtau.shape}")
    if not np.isfinite(dtau).all() or (dtau < 0).any():
        raise TaskBatchError(f"{where}.dtau: must be finite and >= 0")


def _raise_value(where: str, name: str, arr: np.ndarray, bad: np.ndarray, allowed: str) -> None:
    b, t = (int(i) for i in np.argwhere(bad)[0])
    raise TaskBatchError(f"{where}.{name}[{b}, {t}] = {int(arr[b, t])}: must lie in {allowed} "
                         f"({int(bad.sum())} such entries)")
