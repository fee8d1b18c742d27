"""Per-layer routing metrics and every headline attention fraction in both units (issue 13).

Units: a *pair* is one (token, layer); a *token* attends if any layer reads episodic memory for
it. In an L-layer model the pair fraction is at most the token fraction and at least 1/L of it.
Columns (``cram.core.columns.layer_columns``):

- both units of each headline fraction: ``attention_tokens`` (all tokens; the pair unit is the
  existing ``attention_fraction``), ``attention_query_pairs``, ``attention_library_pairs``,
  ``attention_novel_pairs`` (their token unit: the existing any-layer columns) and
  ``attention_nonquery_tokens`` (the pair unit: the existing ``attention_nonquery``);
- per layer i: ``attention_library_l{i}``, ``attention_novel_l{i}``,
  ``attention_nonquery_l{i}``, and ``q_/qhat_`` ``library/novel_l{i}`` (mean q and q̂ of that layer
  on library / novel queries);
- ``q_/qhat_`` ``library/novel_retrieving``: q and q̂ read, for each query, in the *retrieving
  layer*, the lowest layer whose episodic readout (value probe on r_E) names the answer; queries
  that no layer's readout answers are left out. This is where consolidation is judged: higher
  layers can echo what a lower layer's attention already fetched (issue 13 item 2).

numpy only: evaluation hands in arrays gathered over the evaluation set.
"""

from __future__ import annotations

import numpy as np


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


def layer_metrics(episodic: np.ndarray, is_query: np.ndarray, is_library: np.ndarray,
                  q: np.ndarray | None = None, qhat: np.ndarray | None = None,
                  retrieves: np.ndarray | None = None) -> dict:
    """Per-layer attention, q and q̂, and the headline fractions per pair and per token.

    Parameters
    ----------
    episodic : (L, N) bool, layer l read episodic memory for token n (hard routing).
    is_query : (N,) bool, token n is a scored query.
    is_library : (N,) bool, query n asks for a library binding (ignored at non-queries).
    q, qhat : (L, N) float or None, the layer's consolidation score and familiarity.
    retrieves : (L, N) bool or None, layer l's episodic readout names token n's answer.

    Returns
    -------
    dict of floats named as in ``cram.core.columns.layer_columns`` (NaN where a group is empty;
    the q columns are absent when ``q`` is None).
    """
    epi = np.asarray(episodic, bool)
    query = np.asarray(is_query, bool)
    lib = query & np.asarray(is_library, bool)
    nov = query & ~lib
    non = ~query
    any_layer = epi.any(0)  # (N,)
    m = {"attention_tokens": _mean(any_layer),
         "attention_query_pairs": _mean(epi[:, query]),
         "attention_library_pairs": _mean(epi[:, lib]),
         "attention_novel_pairs": _mean(epi[:, nov]),
         "attention_nonquery_tokens": _mean(any_layer[non])}
    for i in range(epi.shape[0]):
        m[f"attention_library_l{i}"] = _mean(epi[i, lib])
        m[f"attention_novel_l{i}"] = _mean(epi[i, nov])
        m[f"attention_nonquery_l{i}"] = _mean(epi[i, non])
        for name, values in (("q", q), ("qhat", qhat)):
            if values is not None:
                m[f"{name}_library_l{i}"] = _mean(np.asarray(values, float)[i, lib])
                m[f"{name}_novel_l{i}"] = _mean(np.asarray(values, float)[i, nov])
    if retrieves is not None and q is not None and qhat is not None:
        m.update(_at_retrieving_layer(np.asarray(retrieves, bool), q, qhat, lib, nov))
    return m


def _at_retrieving_layer(retrieves, q, qhat, lib, nov) -> dict:
    """Q and q̂ of each query's lowest retrieving layer, averaged over library / novel queries."""
    found = retrieves.any(0)  # (N,)
    first = retrieves.argmax(0)  # (N,) lowest layer whose readout names the answer
    cols = np.arange(retrieves.shape[1])
    q_first = np.asarray(q, float)[first, cols]
    qhat_first = np.asarray(qhat, float)[first, cols]
    return {"q_library_retrieving": _mean(q_first[lib & found]),
            "q_novel_retrieving": _mean(q_first[nov & found]),
            "qhat_library_retrieving": _mean(qhat_first[lib & found]),
            "qhat_novel_retrieving": _mean(qhat_first[nov & found])}


class LayerCollector:
    """Gathers what :func:`layer_metrics` needs from hard-routed evaluation batches."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("episodic", "query", "lib", "q", "qhat", "retrieves")}

    def add(self, layers, is_query, is_library, answer=None) -> None:
        """Gather one evaluation batch.

        layers: the model's per-layer stats (``.episodic``, ``.q``, ``.qhat`` (B, T),
        ``.probe_episodic`` (B, T, V)); is_query, is_library, answer: (B, T) tensors.
        """
        flat = [(s.episodic.float() > 0.5).reshape(-1).cpu().numpy() for s in layers]
        self.parts["episodic"].append(np.stack(flat))  # (L, B·T)
        self.parts["query"].append(is_query.reshape(-1).cpu().numpy())
        self.parts["lib"].append(is_library.reshape(-1).bool().cpu().numpy())
        if all(s.q is not None for s in layers):
            for name in ("q", "qhat"):
                self.parts[name].append(np.stack(
                    [getattr(s, name).float().reshape(-1).cpu().numpy() for s in layers]))
        if answer is not None and all(s.probe_episodic is not None for s in layers):
            self.parts["retrieves"].append(np.stack(
                [(s.probe_episodic.argmax(-1) == answer).reshape(-1).cpu().numpy()
                 for s in layers]))

    def metrics(self) -> dict:
        """The :func:`layer_metrics` dict over every batch added ({} before any)."""
        p = self.parts
        if not p["episodic"]:
            return {}
        cat = {k: np.concatenate(v, -1) if v else None for k, v in p.items()}
        return layer_metrics(cat["episodic"], cat["query"], cat["lib"], cat["q"], cat["qhat"],
                             cat["retrieves"])
