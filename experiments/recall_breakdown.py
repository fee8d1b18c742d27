"""Where a model answers a recall task and where it does not: novel accuracy broken down.

Two readings of a trained run on a key-value recall task (``recall-unmarked``, ``recall-marked``,
``mqar``: any task whose config has ``key_base`` and ``value_base``) on its evaluation set:

- **by store → query distance** (tokens from the stored key to its query): a model whose reach is
  bounded (a window, a decaying state) loses the long distances first;
- **by the number of distinct keys stored before the query** (``keys_before``), and of those
  that are novel (``novel_before``): a model that retrieves by key answers alike with 1 key or
  8 in context. A model that has only learned to copy *some* novel value seen in context
  (without matching its key) answers about 1 / ``novel_before`` of the time, so its accuracy
  falls with every novel key added. That pattern is how the dense Transformer's plateau on
  ``recall-unmarked`` was identified (docs/baselines.md).

Library queries are left out there: a library value can be answered from the weights.

A third reading, :func:`attention_by_class`, says where a routed model pays for attention: the
share of tokens of each class (store key, stored value, novel query, library query, anything
else) that read episodic memory, per layer, under hard routing. A router at the floor attends at
novel queries and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError

DISTANCE_BINS = ((1, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128), (128, 256),
                 (256, 1 << 30))


def _key_range(task, where: str) -> tuple[int, int]:
    config = getattr(getattr(task, "user_task", task), "config", None)
    if not (hasattr(config, "key_base") and hasattr(config, "value_base")):
        raise ConfigError(f"{where}: the breakdown needs a key-value recall task (recall-unmarked, "
                          "recall-marked or mqar); this run's task has no key range")
    return int(config.key_base), int(config.value_base)


def novel_queries(tokens: np.ndarray, labels: np.ndarray, pattern: np.ndarray, key_lo: int,
                  key_hi: int) -> dict[str, np.ndarray]:
    """Every scored novel query: its row, position, store distance and keys stored before it.

    tokens, labels, pattern: (B, T). The store of a query is the previous occurrence of its key.
    """
    rows, pos = np.nonzero((labels >= 0) & (pattern < 0))
    distance = np.empty(rows.size, np.int64)
    keys_before = np.empty(rows.size, np.int64)
    novel_before = np.empty(rows.size, np.int64)
    for i, (r, t) in enumerate(zip(rows, pos)):
        earlier = tokens[r, :t]
        distance[i] = t - np.nonzero(earlier == tokens[r, t])[0][-1]
        is_key = (earlier >= key_lo) & (earlier < key_hi)
        keys_before[i] = np.unique(earlier[is_key]).size
        novel_before[i] = np.unique(earlier[is_key & (pattern[r, :t] < 0)]).size
    return {"row": rows, "pos": pos, "distance": distance, "keys_before": keys_before,
            "novel_before": novel_before}


TOKEN_CLASSES = ("store_key", "value", "query_novel", "query_library", "other")


def token_classes(tokens: np.ndarray, labels: np.ndarray, pattern: np.ndarray, key_lo: int,
                  key_hi: int) -> np.ndarray:
    """(B, T) class names: a scored token is a query; an unscored key a store; values; the rest."""
    cls = np.full(tokens.shape, "other", object)
    is_key = (tokens >= key_lo) & (tokens < key_hi)
    scored = labels >= 0
    cls[tokens >= key_hi] = "value"
    cls[is_key & ~scored] = "store_key"
    cls[scored & (pattern >= 0)] = "query_library"
    cls[scored & (pattern < 0)] = "query_novel"
    return cls


def _forward(run_dir: Path, n_sequences: int, batch_size: int):
    """The run's model on its task's evaluation set under hard routing: batch, predictions, reads.

    Returns the batch, the argmax predictions (N, T) and each layer's attention reads (L, N, T).
    """
    import torch

    from cram.consolidation.api import run_task
    from cram.consolidation.checkpoint import load_trained
    from cram.models.routing import HARD

    model, config, _ = load_trained(Path(run_dir))
    task = run_task(run_dir, config)
    key_range = _key_range(task, str(run_dir))
    batch = task.eval_set(n_sequences, config.train.eval_seed)
    model.eval()
    predicted, reads = [], []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            out = model(batch.slice(start, start + batch_size).to_torch(), HARD)
            predicted.append(out.value_logits.argmax(-1).numpy())  # (b, T)
            reads.append(np.stack([s.computed.numpy() for s in out.layers]))  # (L, b, T)
    return batch, key_range, np.concatenate(predicted), np.concatenate(reads, axis=1)


def attention_by_class(batch, key_range, reads: np.ndarray) -> list[dict]:
    """Rows ``{layer, token_class, per_sequence, attention}``; layer ``any``: any layer reads."""
    cls = token_classes(batch.tokens, batch.labels, batch.pattern, *key_range)
    rows = []
    layers = [(str(i), r) for i, r in enumerate(reads)] + [("any", reads.any(axis=0))]
    for layer, read in layers:
        for name in TOKEN_CLASSES:
            m = cls == name
            if m.any():
                rows.append({"layer": layer, "token_class": name,
                             "per_sequence": float(m.sum() / batch.tokens.shape[0]),
                             "attention": float(read[m].mean())})
    return rows


def breakdown(run_dir: Path, n_sequences: int = 1024, batch_size: int = 128
              ) -> tuple[list[dict], list[dict]]:
    """Accuracy rows ``{by, bin, n, novel_acc}`` and :func:`attention_by_class` rows of a run."""
    batch, (key_lo, key_hi), pred, reads = _forward(run_dir, n_sequences, batch_size)
    q = novel_queries(batch.tokens, batch.labels, batch.pattern, key_lo, key_hi)
    correct = pred[q["row"], q["pos"]] == batch.labels[q["row"], q["pos"]]
    rows = [{"by": "all", "bin": "all", "n": int(correct.size),
             "novel_acc": float(correct.mean()) if correct.size else float("nan")}]
    for lo, hi in DISTANCE_BINS:
        m = (q["distance"] >= lo) & (q["distance"] < hi)
        if m.any():
            label = f"[{lo}, {hi})" if hi < 1 << 30 else f">= {lo}"
            rows.append({"by": "distance", "bin": label, "n": int(m.sum()),
                         "novel_acc": float(correct[m].mean())})
    for by in ("keys_before", "novel_before"):
        for k in np.unique(q[by]):
            m = q[by] == k
            rows.append({"by": by, "bin": str(int(k)), "n": int(m.sum()),
                         "novel_acc": float(correct[m].mean())})
    return rows, attention_by_class(batch, (key_lo, key_hi), reads)
