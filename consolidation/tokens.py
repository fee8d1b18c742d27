"""Token tasks in the trainer: the loss, the evaluation and the run-folder record of a task.

A token task (``cram.tasks``, docs/tasks.md) reaches ``train(..., data=task)`` through the data
source seam. What differs from SRCD lives here, so that ``train.py`` only dispatches:

- :func:`compute_token_loss`: cross-entropy on ``labels != -100`` plus the task's ``extra_loss``
  terms, and the consolidation mechanism's terms exactly as for SRCD. "Query" means a scored
  position, and it is known only here, in the loss (a loss-side view of the batch); the model
  never receives it.
- :func:`evaluate_tokens`: hard-routed evaluation with the SRCD column names where the meaning is
  the same (``retrieval_acc*``, ``attention_*``, ``q_*``, ``share_*``), plus the token columns of
  :data:`TOKEN_COLUMNS` (attention per token and per layer, the floor).
- :func:`reload_task`: the task of config.json's ``task`` entry (``cram.tasks.record``), so
  that ``cram eval RUN`` rebuilds it, importing user code only with the user's consent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cram.core.errors import ConfigError
from cram.models.routing import HARD
from cram.models.tiers import EVENT_QUERY, TIERS
from cram.tasks import IGNORE_INDEX, TokenBatch
from cram.tasks.batch import QUERY_MASK
from cram.tasks.metrics import TokenMetrics

from .evaluate import FORCED, EvalResult, mean_or_nan, query_memory_metrics
from .layer_metrics import LayerCollector
from .losses import LossTerms, compute_loss

#: cost gate a token task trains with unless ``--set train.cost_gate=...`` says otherwise:
#: unscored tokens pay the attention cost ungated (docs/cram.md, "CRAM that finds its own queries")
TOKEN_COST_GATE = "familiarity-queries"
#: columns a token run adds to metrics.csv (besides the SRCD ones with the same meaning)
TOKEN_COLUMNS = ("attention_token", "floor", "floor_pair", "attention_over_floor", "query_share",
                 "library_share")
#: models that cannot run on a token task, and why
REFUSED = {"cram-static": "it routes by the query mask, which a token task never gives a model "
                          "(the oracle ablation exists on SRCD only)"}


def is_token_task(data: Any) -> bool:
    """A data source that speaks the token protocol (``cram.tasks``), not SRCD's batch."""
    return data is not None and hasattr(data, "vocab_size") and hasattr(data, "n_library")


def check_token_model(model_name: str) -> None:
    """Refuse, before anything is written, a model that needs an input a token task lacks."""
    if model_name in REFUSED:
        raise ConfigError(f"--model {model_name}: not available on token tasks: "
                          f"{REFUSED[model_name]}")


def token_metric_columns(n_layers: int) -> list[str]:
    """The columns a token run adds after ``train.metric_columns``."""
    return [*TOKEN_COLUMNS, *(f"attention_l{i}" for i in range(n_layers))]


def exposure_counts(batch: TokenBatch, n_library: int) -> np.ndarray:
    """(n_library,) scored library positions per binding in ``batch`` (the exposure counts)."""
    pattern = batch.pattern_or_novel()
    seen = pattern[(batch.labels != IGNORE_INDEX) & (pattern >= 0)]
    return np.bincount(seen, minlength=n_library)[:max(n_library, 0)]


def loss_view(batch: dict) -> dict:
    """The loss-side view of a token batch in ``compute_loss``'s terms.

    The scored positions become queries, and so do those of the task's ``query_mask`` extra (a
    shortcut-closed task hides their labels but they stay queries, as SRCD's unlabelled library
    queries do); there is no dynamics target. Built after the forward pass; never a model input.
    """
    labels = batch["labels"]  # (B, T)
    zeros = torch.zeros(labels.shape, device=labels.device)
    query = labels != IGNORE_INDEX  # (B, T)
    if QUERY_MASK in batch:
        query = query | batch[QUERY_MASK].bool()
    return {"answer": labels,
            "event": torch.where(query, EVENT_QUERY, 0),
            "target_signal": zeros, "signal_mask": zeros.bool()}


def compute_token_loss(out, batch: dict, cfg, step: int, task: Any = None,
                       schedule=None) -> LossTerms:
    """SRCD's objective on the loss view, plus ``task.extra_loss`` (each logged as loss_<name>).

    ``loss_value`` is the cross-entropy on scored positions; ``loss_signal`` is 0 (no dynamics
    target unless the task's extra loss brings one).
    """
    loss = compute_loss(out, loss_view(batch), cfg, step, schedule=schedule)
    extra = getattr(task, "extra_loss", None)
    if extra is None:
        return loss
    total, values = loss.total, dict(loss.values)
    for name, value in extra(out, batch).items():
        total = total + value
        values[f"loss_{name}"] = value.detach()
    values["loss_total"] = total.detach()
    return LossTerms(total, values)


@torch.no_grad()
def evaluate_tokens(model, data: TokenBatch, batch_size: int, device, *, n_library: int,
                    patterns: bool = False, retention: bool = False, autocast=None) -> EvalResult:
    """Hard-routed inference over a token evaluation set (``retention`` has no lags: ignored).

    Queries, library split and accuracy come from ``labels`` and ``pattern``
    (``cram.tasks.metrics.TokenMetrics``); a consolidating model also gets q, q̂ at queries and
    the forced-tier library accuracies, as on SRCD.
    """
    was_training = model.training
    model.eval()
    diagnose = getattr(model, "consolidates", False)
    n_layers = len(model.blocks)
    tally = _TokenTally(n_layers)
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    for start in range(0, len(data), batch_size):
        b = data.slice(start, start + batch_size).to_torch(device)
        with ctx:
            out = model(b, HARD, diagnose_dense=diagnose)
            forced = {key: model(b, route) for key, route in FORCED
                      if diagnose and key != "correct_off"}
        tally.add(out, b, forced)
    result = EvalResult(tally.metrics())
    if patterns:
        result.pattern_rows = tally.pattern_rows(n_library)
    model.train(was_training)
    return result


class _TokenTally:
    """TokenMetrics plus the SRCD-only diagnostics (q, q̂, forced tiers, tier shares)."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.tokens = TokenMetrics(n_layers)
        self.computed = np.zeros(n_layers)
        self.tiers = np.zeros((n_layers, len(TIERS)))
        self.per_query: dict[str, list] = {k: [] for k in (
            "pattern", "attend", "q", "qhat", "correct_sem", "correct_work", "correct_zero")}
        self.layers = LayerCollector()  # per-layer attention, q and q̂ (issue 13)

    def add(self, out, b: dict, forced: dict) -> None:
        labels, pattern = b["labels"], b["pattern"]  # (B, T)
        query = labels != IGNORE_INDEX  # (B, T)
        attended = [s.episodic.float() > 0.5 for s in out.layers]  # L x (B, T)
        self.tokens.update(out.value_logits.argmax(-1), labels, pattern, attended)
        self.layers.add(out.layers, query, pattern >= 0, labels)
        acc = self.per_query
        acc["pattern"].append(pattern[query].cpu().numpy())
        acc["attend"].append(torch.stack(attended).any(0)[query].cpu().numpy())
        qs = [s for s in out.layers if s.q is not None]
        if qs:
            acc["q"].append(np.mean([s.q[query].float().cpu().numpy() for s in qs], 0))
            acc["qhat"].append(np.mean([s.qhat[query].float().cpu().numpy() for s in qs], 0))
        for key, f in forced.items():
            acc[key].append((f.value_logits.argmax(-1) == labels)[query].cpu().numpy())
        for i, s in enumerate(out.layers):
            self.computed[i] += float(s.computed.sum())
            if s.choice is not None:
                self.tiers[i] += torch.bincount(s.choice.flatten(), minlength=3).cpu().numpy()

    def _cat(self) -> dict[str, np.ndarray]:
        return {k: (np.concatenate(v) if v else np.array([])) for k, v in self.per_query.items()}

    def metrics(self) -> dict:
        r, cat = self.tokens.result(), self._cat()
        lib = cat["pattern"] >= 0
        m = {"attention_fraction": r["attention_pair"],
             "attention_computed": float(self.computed.sum() / max(self.tokens.tokens
                                                                   * self.n_layers, 1)),
             "retrieval_acc": r["acc"], "retrieval_acc_library": r["acc_library"],
             "retrieval_acc_novel": r["acc_novel"], "dynamics_mse": float("nan"),
             **{k: r[k] for k in ("attention_query", "attention_library", "attention_novel",
                                  "attention_nonquery", *TOKEN_COLUMNS)},
             **{f"attention_l{i}": r[f"attention_l{i}"] for i in range(self.n_layers)}}
        m.update(query_memory_metrics(cat, lib))
        m.update(self.layers.metrics())
        for i in range(self.n_layers):
            if self.tiers[i].sum() > 0:
                for j, tier in enumerate(TIERS):
                    m[f"share_{tier}_l{i}"] = float(self.tiers[i, j] / self.tiers[i].sum())
            else:
                m[f"share_episodic_l{i}"] = r[f"attention_l{i}"]
        return m

    def pattern_rows(self, n_library: int) -> list[dict]:
        cat, rows = self._cat(), []
        for p in range(n_library):
            sel = cat["pattern"] == p
            if sel.any():
                rows.append({"pattern": p, "episodic_share": mean_or_nan(cat["attend"][sel]),
                             "n_queries": int(sel.sum()),
                             "q": mean_or_nan(cat["q"][sel]) if cat["q"].size else float("nan"),
                             "qhat": mean_or_nan(cat["qhat"][sel]) if cat["qhat"].size
                             else float("nan")})
        return rows


def reload_task(record: dict, spec: str | None = None, args: list[str] | None = None,
                trust: bool = False, where: str = "the run") -> Any:
    """The task of a run's config.json ``task`` record (or ``spec``/``args`` given instead).

    Never imports a user's file or module that the caller did not name (``spec``) or trust
    (``trust``): see ``cram.tasks.record``.
    """
    from cram.tasks.record import load_recorded_task

    return load_recorded_task(record, spec=spec, args=list(args or []), trust=trust, where=where)
