"""Token-task metrics from labels, pattern and per-layer attention choices (no model imports).

Evaluation accumulates one ``TokenMetrics`` over the chunks of an evaluation set:

>>> m = TokenMetrics(n_layers=2)
>>> m.update(pred, labels, pattern, attended)   # doctest: +SKIP
>>> m.result()                                  # doctest: +SKIP

Definitions (a *query* is a scored position, ``labels != -100``; a *library* query has
``pattern >= 0``; the loss mask is the only place queries are known):

- ``acc``, ``acc_library``, ``acc_novel``: argmax accuracy at queries;
- ``attention_pair``: share of (token, layer) pairs that read episodic memory;
- ``attention_token``: share of tokens for which any layer reads it;
- ``attention_query``/``_library``/``_novel``: share of queries for which any layer reads it;
- ``attention_nonquery``: share of (token, layer) pairs at non-query tokens;
- ``attention_l{i}``: share of tokens that read it in layer i;
- ``floor``: novel queries per token (what must attend once the library is consolidated);
  ``floor_pair`` = floor / n_layers (if one layer suffices); ``attention_over_floor`` =
  ``attention_token / floor``.
"""

from __future__ import annotations

import numpy as np
import torch

from .batch import IGNORE_INDEX


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored positions; logits (B, T, V), labels (B, T)."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                             ignore_index=IGNORE_INDEX)


class TokenMetrics:
    """Accumulates counts over evaluation chunks; ``result()`` gives the metrics dict."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.tokens = self.queries = self.library = 0
        self.correct = np.zeros(2)  # novel, library
        self.counted = np.zeros(2)
        self.query_attend = np.zeros(2)
        self.token_attend = 0
        self.pair_attend = 0
        self.nonquery_pairs = 0
        self.per_layer = np.zeros(n_layers)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, labels: torch.Tensor, pattern: torch.Tensor,
               attended: list[torch.Tensor]) -> None:
        """Add one chunk.

        Parameters
        ----------
        pred, labels, pattern : (B, T) int64
            Argmax predictions, labels (-100 unscored), library ids (-1 novel).
        attended : list of (B, T) bool, one per layer
            Where each layer read episodic memory (hard routing). A dense attention layer
            passes all True; a layer without attention passes all False.
        """
        if len(attended) != self.n_layers:
            raise ValueError(
                f"TokenMetrics: {len(attended)} layers given, {self.n_layers} expected")
        query = labels != IGNORE_INDEX  # (B, T)
        lib = (pattern >= 0) & query
        layers = torch.stack([a.bool() for a in attended]) if attended else \
            torch.zeros((0, *labels.shape), dtype=torch.bool, device=labels.device)  # (L, B, T)
        any_layer = layers.any(0)  # (B, T)
        ok = (pred == labels) & query
        for k, sel in enumerate((query & ~lib, lib)):
            self.counted[k] += int(sel.sum())
            self.correct[k] += int((ok & sel).sum())
            self.query_attend[k] += int((any_layer & sel).sum())
        self.tokens += query.numel()
        self.queries += int(query.sum())
        self.library += int(lib.sum())
        self.token_attend += int(any_layer.sum())
        self.pair_attend += int(layers.sum())
        self.nonquery_pairs += int((layers & ~query).sum())
        self.per_layer += layers.flatten(1).sum(1).cpu().numpy()

    def result(self) -> dict:
        """The accumulated accuracies and attention shares as a dict of floats (NaN when empty)."""
        def share(num, den) -> float:
            return float(num / den) if den else float("nan")

        n_pairs = self.tokens * self.n_layers
        floor = share(self.counted[0], self.tokens)
        out = {
            "acc": share(self.correct.sum(), self.counted.sum()),
            "acc_library": share(self.correct[1], self.counted[1]),
            "acc_novel": share(self.correct[0], self.counted[0]),
            "attention_pair": share(self.pair_attend, n_pairs),
            "attention_token": share(self.token_attend, self.tokens),
            "attention_query": share(self.query_attend.sum(), self.counted.sum()),
            "attention_library": share(self.query_attend[1], self.counted[1]),
            "attention_novel": share(self.query_attend[0], self.counted[0]),
            "attention_nonquery": share(self.nonquery_pairs,
                                        (self.tokens - self.queries) * self.n_layers),
            "query_share": share(self.queries, self.tokens),
            "library_share": share(self.library, self.queries),
            "floor": floor,
            "floor_pair": floor / self.n_layers if self.n_layers else float("nan"),
            "attention_over_floor": share(self.token_attend / max(self.tokens, 1), floor),
        }
        for i, n in enumerate(self.per_layer):
            out[f"attention_l{i}"] = share(n, self.tokens)
        return out
