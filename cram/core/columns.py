"""The columns of a run folder's tables, declared once (docs/run_folder.md describes each).

The trainer writes these columns and every reader (the run reader, the explorer, the report,
the benches, the synthetic runs of ``cram.testing``) takes their names from here. torch-free.

metrics.csv, in order: the step's bookkeeping, the loss terms (``LOSS_COLUMNS``, a window mean
since the last row), the evaluation (``EVAL_COLUMNS``), the per-layer routing metrics
(``layer_columns``), the tier shares per layer, and for a task that asks for them the
per-token attention columns (``per_token_columns``).
"""

from __future__ import annotations

STEP_COLUMNS = ("step", "phase", "tokens_seen", "train_seconds", "temperature", "lr",
                "schedule_signal")  # schedule_signal: the routing criterion's EMA (issue 13)
LOSS_COLUMNS = ("loss_total", "loss_value", "loss_signal", "loss_consolidation", "loss_familiarity",
                "loss_cost", "loss_router", "loss_probe", "loss_aux")
EVAL_COLUMNS = ("attention_fraction", "attention_computed", "attention_query", "attention_library",
                "attention_novel", "attention_nonquery", "retrieval_acc", "retrieval_acc_library",
                "retrieval_acc_novel", "dynamics_mse", "q_library", "q_novel", "qhat_library",
                "qhat_novel", "acc_library_semantic_only", "acc_library_working_only",
                # the causal check of the logged reliance (semantic output zeroed, working only)
                "acc_library_semantic_zeroed", "acc_novel_semantic_zeroed",
                "acc_novel_working_only")
#: per-layer routing metrics (issue 13): ``{name}_l{i}`` for each layer i
PER_LAYER_COLUMNS = ("attention_library", "attention_novel", "attention_nonquery", "q_library",
                     "q_novel", "qhat_library", "qhat_novel")
#: the other unit of each headline attention fraction (pair ↔ token)
HEADLINE_COLUMNS = ("attention_tokens", "attention_query_pairs", "attention_library_pairs",
                    "attention_novel_pairs", "attention_nonquery_tokens")
#: q and q̂ read in each query's retrieving layer
RETRIEVING_COLUMNS = ("q_library_retrieving", "q_novel_retrieving", "qhat_library_retrieving",
                      "qhat_novel_retrieving")
TIERS = ("working", "episodic", "semantic")
#: attention per token against the novel floor (tasks with ``per_token_metrics``)
TOKEN_COLUMNS = ("attention_token", "floor", "floor_pair", "attention_over_floor", "query_share",
                 "library_share")

#: patterns.csv: one row per (logged step, library binding). ``accuracy`` (issue 28: is a binding
#: still answered when attention leaves it?) is absent from folders written before 2026-12-07
PATTERN_COLUMNS = ("step", "pattern", "exposures", "episodic_share", "q", "qhat", "n_queries",
                   "accuracy")
RETENTION_COLUMNS = ("step", "condition", "binding", "lag", "lag_high", "n", "correct",
                     "accuracy")
#: forgetting.csv (the study protocol's tests, consolidation/forgetting.py): one row per
#: (test step, library binding, ablation)
FORGETTING_COLUMNS = ("step", "binding", "schedule", "cohort", "exposures", "spacing",
                      "last_exposure", "phase", "delay_steps", "delay_sequences", "ablation", "n",
                      "correct")


def layer_columns(n_layers: int) -> list[str]:
    """The per-layer routing metrics of an ``n_layers`` model, in metrics.csv order."""
    return [*HEADLINE_COLUMNS,
            *(f"{name}_l{i}" for i in range(n_layers) for name in PER_LAYER_COLUMNS),
            *RETRIEVING_COLUMNS]


def tier_columns(n_layers: int) -> list[str]:
    """``share_{tier}_l{i}``: the hard routing choices per layer."""
    return [f"share_{t}_l{i}" for i in range(n_layers) for t in TIERS]


def per_token_columns(n_layers: int) -> list[str]:
    """The columns a ``per_token_metrics`` task adds: the floor and attention per layer."""
    return [*TOKEN_COLUMNS, *(f"attention_l{i}" for i in range(n_layers))]


def metric_columns(n_layers: int, per_token: bool = False) -> list[str]:
    """Every column of metrics.csv for an ``n_layers`` model (``per_token``: see above)."""
    return [*STEP_COLUMNS, *LOSS_COLUMNS, *EVAL_COLUMNS, *layer_columns(n_layers),
            *tier_columns(n_layers), *(per_token_columns(n_layers) if per_token else [])]
