"""Measured statistics of a token task's batches (the numbers docs/tasks.md reports)."""

from __future__ import annotations

import numpy as np

from .batch import IGNORE_INDEX, TokenBatch


def batch_stats(batch: TokenBatch) -> dict:
    """Shares measured on one batch.

    - ``label_share``: scored tokens per token;
    - ``library_share``: share of scored tokens whose ``pattern`` names a library binding;
    - ``floor``: scored novel tokens per token, the share that needs attention when every library
      item is consolidated;
    - ``library_token_share``: tokens (scored or not) that belong to a library item.
    """
    scored = batch.labels != IGNORE_INDEX  # (B, T)
    library = batch.pattern_or_novel() >= 0  # (B, T)
    n = scored.size
    return {
        "sequences": len(batch),
        "length": int(batch.tokens.shape[1]),
        "label_share": float(scored.sum() / n),
        "library_share": float((scored & library).sum() / max(int(scored.sum()), 1)),
        "floor": float((scored & ~library).sum() / n),
        "library_token_share": float(library.sum() / n),
        "distinct_tokens": int(np.unique(batch.tokens).size),
    }


def describe(task, samples: int = 256, seed: int = 0) -> dict:
    """``batch_stats`` of ``samples`` sequences drawn with ``seed``, plus the task's sizes."""
    stats = batch_stats(task.sample(samples, np.random.default_rng(seed)))
    return {"task": task.name, "vocab_size": int(task.vocab_size),
            "n_library": int(task.n_library), **stats}
