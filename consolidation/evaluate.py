"""Hard-routed evaluation on the fixed evaluation set: the numbers every metrics row carries.

One evaluator for every task: what a query, its answer, its library binding and its lag are
comes from the task's ``eval_view`` (``cram.tasks.view``); a task that asks for
``per_token_metrics`` also gets attention per token against the novel floor
(``cram.tasks.metrics.TokenMetrics``, the columns of :data:`TOKEN_COLUMNS`).

Definitions (also in docs/run_folder.md):

- ``attention_fraction``: share of (token, layer) pairs that read episodic memory;
- a query *attends* if any layer reads episodic memory for it (``attention_query`` and the library /
  novel splits);
- ``attention_computed``: share of (token, layer) pairs where attention was actually computed by
  inference (the dense diagnostic pass of a consolidating model is not counted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from cram.core.columns import TOKEN_COLUMNS
from cram.models.routing import HARD, Route
from cram.models.tiers import TIERS
from cram.tasks.metrics import TokenMetrics

from .layer_metrics import LayerCollector  # issue 13

LAG_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
#: forced-tier accuracies a consolidating model is evaluated with: key → forced route.
#: ``correct_zero`` is the causal check of the logged reliance: the router's own choice with the
#: semantic tier's output zeroed (what the semantic tier contributes to the answers)
FORCED = (("correct_sem", Route("hard", force="semantic")),
          ("correct_work", Route("hard", force="working")),
          ("correct_zero", Route("hard", ablate="semantic")),
          ("correct_off", Route("hard", force="no-episodic")))


@dataclass
class EvalResult:
    """One evaluation: the metrics row, and pattern and retention rows when asked."""

    metrics: dict
    pattern_rows: list[dict] = field(default_factory=list)
    retention_rows: list[dict] = field(default_factory=list)


def mean_or_nan(x: np.ndarray) -> float:
    """Mean of ``x``, NaN when it is empty (a group with no queries in the evaluation set)."""
    return float(np.mean(x)) if x.size else float("nan")


def query_memory_metrics(cat: dict, lib: np.ndarray) -> dict[str, float]:
    """Familiarity (q, q̂) on library / novel queries and library accuracy on forced routes.

    ``cat``: the per-query arrays of an evaluation (empty where the model has no q or no forced
    passes); ``lib``: the library mask over those queries. SRCD and token tasks share it.
    """
    m = {}
    if cat["q"].size:
        m.update(q_library=mean_or_nan(cat["q"][lib]), q_novel=mean_or_nan(cat["q"][~lib]),
                 qhat_library=mean_or_nan(cat["qhat"][lib]),
                 qhat_novel=mean_or_nan(cat["qhat"][~lib]))
    if cat["correct_sem"].size:
        m["acc_library_semantic_only"] = mean_or_nan(cat["correct_sem"][lib])
        m["acc_library_working_only"] = mean_or_nan(cat["correct_work"][lib])
        m["acc_novel_working_only"] = mean_or_nan(cat["correct_work"][~lib])
    if cat["correct_zero"].size:
        m["acc_library_semantic_zeroed"] = mean_or_nan(cat["correct_zero"][lib])
        m["acc_novel_semantic_zeroed"] = mean_or_nan(cat["correct_zero"][~lib])
    return m


@dataclass
class _Tally:
    """Per-query arrays (lists of per-batch pieces) and per-layer counts over the evaluation set."""

    n_layers: int
    per_query: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "correct", "is_lib", "pattern", "lag", "q", "qhat", "attend",
        "correct_sem", "correct_work", "correct_zero", "correct_off")})
    sq_err: float = 0.0
    n_sig: float = 0.0
    n_tokens: int = 0
    n_nonquery: int = 0
    has_signal: bool = False  # the task has a signal target (SRCD's dynamics)
    tokens: TokenMetrics | None = None  # attention per token and the floor (per_token_metrics)

    def __post_init__(self) -> None:
        self.layer_episodic = np.zeros(self.n_layers)  # (L,) tokens that read episodic memory
        self.layer_nonquery = np.zeros(self.n_layers)  # (L,) ... of them non-query tokens
        self.layer_computed = np.zeros(self.n_layers)  # (L,) tokens whose attention was computed
        self.tier_counts = np.zeros((self.n_layers, len(TIERS)))  # (L, 3) hard tier choices
        self.per_layer = LayerCollector()  # issue 13: per-layer attention, q, q̂; both units

    def add(self, out, view: dict) -> None:
        """Count one batch's inference output ``out`` against the task's ``eval_view``."""
        acc, query = self.per_query, view["query"]  # (B, T) bool
        self.per_layer.add(out.layers, query, view["is_library"], view["answer"])  # issue 13
        acc["correct"].append((out.value_logits.argmax(-1) == view["answer"])[query].cpu().numpy())
        for key, name in (("is_lib", "is_library"), ("pattern", "pattern"), ("lag", "lag")):
            if view[name] is not None:
                acc[key].append(view[name][query].cpu().numpy())
        mask = view["signal_mask"]
        if mask is not None:
            self.has_signal = True
            self.sq_err += float(((out.signal_pred.float() - view["target_signal"]) ** 2
                                  )[mask].sum())
            self.n_sig += float(mask.sum())
        self.n_tokens += query.numel()
        self.n_nonquery += int((~query).sum())
        attend = torch.zeros_like(query)  # (B, T): any layer read episodic memory
        attended = []  # L x (B, T): where each layer read episodic memory
        qs, qhats = [], []
        for i, s in enumerate(out.layers):
            epi = s.episodic.float() > 0.5  # (B, T)
            attended.append(epi)
            attend |= epi
            self.layer_episodic[i] += float(epi.sum())
            self.layer_nonquery[i] += float(epi[~query].sum())
            self.layer_computed[i] += float(s.computed.sum())
            if s.choice is not None:
                self.tier_counts[i] += torch.bincount(s.choice.flatten(), minlength=3).cpu().numpy()
            if s.q is not None:
                qs.append(s.q[query].float().cpu().numpy())
                qhats.append(s.qhat[query].float().cpu().numpy())
        if self.tokens is not None:
            self.tokens.update(out.value_logits.argmax(-1), view["answer"], view["pattern"],
                               attended)
        acc["attend"].append(attend[query].cpu().numpy())
        if qs:
            acc["q"].append(np.mean(qs, 0))
            acc["qhat"].append(np.mean(qhats, 0))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: (np.concatenate(v) if v else np.array([])) for k, v in self.per_query.items()}


@torch.no_grad()
def evaluate(model, data, batch_size: int, device, *, task, patterns: bool = False,
             retention: bool = False, autocast=None, route: Route = HARD,
             routes_from=None) -> EvalResult:
    """Hard-routed inference over ``data`` (``task``'s evaluation set), with the diagnostics.

    Inference computes routed attention only. For a consolidating model the same call asks for
    the dense diagnostic pass (``diagnose_dense``: q and q̂ at every query, never counted in
    ``attention_computed``) and runs the forced-tier passes of ``FORCED``
    (``correct_off`` only for retention curves, which need the task's lags). ``route``: a hard
    route, ``HARD`` or one with an ``attention_budget``; the forced pass that keeps the router's
    choice keeps the cap, and the metrics add accuracy at the queries no layer attended.
    ``routes_from``: another CRAM model with as many layers; on each batch its hard choice is
    computed and ``model`` is routed by it (``Route.choices``): which tokens attend is held
    fixed, only the weights differ. The forced pass that keeps the router's choice keeps those
    routes, and the metrics add accuracy at the queries no layer attended.
    """
    was_training = model.training
    model.eval()
    diagnose = getattr(model, "consolidates", False)
    tally = _Tally(len(model.blocks))
    if task.per_token_metrics:
        tally.tokens = TokenMetrics(len(model.blocks))
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    for start in range(0, len(data), batch_size):
        b = data.slice(start, start + batch_size).to_torch(device)
        view = task.eval_view(b)
        batch_route = route
        if routes_from is not None:
            with ctx:
                given = tuple(s.choice for s in routes_from(b, HARD).layers)  # L x (B, T)
            batch_route = dataclasses.replace(route, choices=given)
        with ctx:
            out = model(b, batch_route, diagnose_dense=diagnose)
        tally.add(out, view)
        retention = retention and view["lag"] is not None
        for key, forced_route in FORCED if diagnose else ():
            if key == "correct_off" and not retention:
                continue
            if forced_route.force == "none":  # the router's choice, semantic output zeroed:
                forced_route = dataclasses.replace(batch_route, ablate=forced_route.ablate)
                #   the batch's own route, with its cap or given routes
            with ctx:
                forced = model(b, forced_route)
            tally.per_query[key].append(
                (forced.value_logits.argmax(-1) == view["answer"])[view["query"]].cpu().numpy())
    cat = tally.arrays()
    result = EvalResult(_metrics(tally, cat))
    if route.attention_budget is not None or routes_from is not None:  # what was left
        #   without attention (by the budget, or by the given routes)
        result.metrics.update(unattended_accuracy(cat))
    if patterns:
        result.pattern_rows = _pattern_rows(cat, task.n_library)
    if retention:
        result.retention_rows = _retention_rows(cat)
    model.train(was_training)
    return result


def unattended_accuracy(cat: dict[str, np.ndarray]) -> dict[str, float]:
    """Library and novel accuracy at the queries that no layer sent to attention."""
    lib, alone = cat["is_lib"].astype(bool), ~cat["attend"].astype(bool)
    return {"acc_library_unattended": mean_or_nan(cat["correct"][lib & alone]),
            "acc_novel_unattended": mean_or_nan(cat["correct"][~lib & alone])}


def _metrics(t: _Tally, cat: dict[str, np.ndarray]) -> dict:
    lib, correct, attend = cat["is_lib"].astype(bool), cat["correct"], cat["attend"]
    n_layers = t.n_layers
    m = {
        "attention_fraction": float(t.layer_episodic.sum() / (t.n_tokens * n_layers)),
        "attention_computed": float(t.layer_computed.sum() / (t.n_tokens * n_layers)),
        "attention_query": mean_or_nan(attend),
        "attention_library": mean_or_nan(attend[lib]),
        "attention_novel": mean_or_nan(attend[~lib]),
        "attention_nonquery": float(t.layer_nonquery.sum() / max(t.n_nonquery * n_layers, 1)),
        "retrieval_acc": mean_or_nan(correct),
        "retrieval_acc_library": mean_or_nan(correct[lib]),
        "retrieval_acc_novel": mean_or_nan(correct[~lib]),
        "dynamics_mse": t.sq_err / max(t.n_sig, 1.0) if t.has_signal else float("nan"),
    }
    if t.tokens is not None:
        r = t.tokens.result()
        m.update({k: r[k] for k in TOKEN_COLUMNS})
        m.update({f"attention_l{i}": r[f"attention_l{i}"] for i in range(n_layers)})
    m.update(t.per_layer.metrics())  # issue 13
    m.update(query_memory_metrics(cat, lib))
    for i in range(n_layers):
        if t.tier_counts[i].sum() > 0:
            shares = t.tier_counts[i] / t.tier_counts[i].sum()
            for j, tier in enumerate(TIERS):
                m[f"share_{tier}_l{i}"] = float(shares[j])
        else:
            m[f"share_episodic_l{i}"] = float(t.layer_episodic[i] / t.n_tokens)
    return m


def _pattern_rows(cat: dict[str, np.ndarray], n_library: int) -> list[dict]:
    rows, attend, pat = [], cat["attend"], cat["pattern"]
    for p in range(n_library):
        sel = pat == p
        if not sel.any():
            continue
        row = {"pattern": p, "episodic_share": mean_or_nan(attend[sel]),
               "n_queries": int(sel.sum()), "accuracy": mean_or_nan(cat["correct"][sel])}
        row["q"] = mean_or_nan(cat["q"][sel]) if cat["q"].size else float("nan")
        row["qhat"] = mean_or_nan(cat["qhat"][sel]) if cat["qhat"].size else float("nan")
        rows.append(row)
    return rows


def _retention_rows(cat: dict[str, np.ndarray]) -> list[dict]:
    lib, rows = cat["is_lib"].astype(bool), []
    conditions = [("episodic_on", cat["correct"])]
    if cat["correct_off"].size:
        conditions.append(("episodic_off", cat["correct_off"]))
    for cond, corr in conditions:
        for binding, sel_b in (("novel", ~lib), ("library", lib)):
            for lo, hi in zip(LAG_EDGES[:-1], LAG_EDGES[1:]):
                sel = sel_b & (cat["lag"] >= lo) & (cat["lag"] < hi)
                if sel.any():
                    c = int(corr[sel].sum())
                    rows.append({"condition": cond, "binding": binding, "lag": lo, "lag_high": hi,
                                 "n": int(sel.sum()), "correct": c, "accuracy": c / int(sel.sum())})
    return rows
