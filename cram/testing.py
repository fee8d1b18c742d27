"""Synthetic run folders that follow the run-folder contract (docs/run_folder.md).

For tests, notebooks on fixtures and the app's examples: no torch, no training. The curves are
*synthetic* (a power-law decay of library-query attention after warm-up, with noise); nothing here
is a measured result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cram.core.columns import EVAL_COLUMNS, PATTERN_COLUMNS, RETENTION_COLUMNS, tier_columns
from cram.core.runs import (
    CONFIG_FILE,
    META_FILE,
    METRICS_FILE,
    PATTERNS_FILE,
    RETENTION_FILE,
    SCHEMA_VERSION,
    TRANSITION_FILE,
    CsvLog,
    atomic_write_json,
)


def write_synthetic_run(
    path: str | Path,
    seed: int = 0,
    model: str = "cram",
    steps: int = 600,
    log_every: int = 20,
    warmup_steps: int = 100,
    gamma: float = 0.45,
    n_layers: int = 2,
    n_patterns: int = 8,
) -> Path:
    """Write a complete, synthetic run folder and return its path."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=False)
    atomic_write_json(path / CONFIG_FILE, {
        "model": model, "preset": "synthetic", "seed": seed,
        "data": {"length": 256, "query_rate": 0.05, "library_share": 0.7, "n_library": n_patterns},
        "model_config": {"n_layers": n_layers, "d_model": 64},
        "train": {"steps": steps, "warmup_steps": warmup_steps, "log_every": log_every},
    })
    atomic_write_json(path / META_FILE, {
        "schema_version": SCHEMA_VERSION, "command": ["synthetic"], "cram_version": "synthetic",
        "git_commit": None, "libraries": {}, "device": "none", "status": "finished",
        "train_seconds": 0.0, "world_size": 1, "synthetic": True,
    })
    # one generator, drawn in this order: metrics, then patterns, then retention
    _write_metrics(path, rng, steps, log_every, warmup_steps, gamma, n_layers)
    _write_patterns(path, rng, steps, log_every, gamma, n_patterns)
    _write_retention(path, rng, steps, warmup_steps)
    atomic_write_json(path / TRANSITION_FILE, {
        "series": "attention_library", "method": "synthetic", "step": warmup_steps + 40,
        "low": warmup_steps + 20, "high": warmup_steps + 80, "level_before": 1.0,
        "level_after": 0.2, "n_boot": 0,
    })
    return path


def _metrics_row(step: int, rng: np.random.Generator, warmup_steps: int, gamma: float,
                 n_layers: int) -> dict:
    """One synthetic metrics.csv row: library attention decays as a power law after warm-up."""
    after = max(step - warmup_steps, 0)
    lib = 1.0 if step <= warmup_steps else float(np.clip(
        (1 + after / 10) ** (-gamma) * np.exp(rng.normal(0, 0.05)), 0, 1))
    novel = float(np.clip(0.97 + rng.normal(0, 0.01), 0, 1))
    query = 0.7 * lib + 0.3 * novel
    frac = 0.05 * query + 0.95 * (1.0 if step <= warmup_steps else 0.01)
    row = {"step": step, "phase": "warmup" if step <= warmup_steps else "train",
           "attention_fraction": frac, "attention_computed": 1.0, "attention_query": query,
           "attention_library": lib, "attention_novel": novel,
           "attention_nonquery": 1.0 if step <= warmup_steps else 0.01,
           "retrieval_acc": 0.98, "retrieval_acc_library": 0.99, "retrieval_acc_novel": 0.96,
           "dynamics_mse": 0.3 + 0.5 * np.exp(-step / 200), "q_library": 1 - lib * 0.5,
           "q_novel": 0.05, "qhat_library": 1 - lib * 0.5, "qhat_novel": 0.05,
           "acc_library_semantic_only": 1 - lib * 0.9, "acc_library_working_only": 0.1,
           # the causal check: with the semantic output zeroed only the attending share answers
           "acc_library_semantic_zeroed": 0.99 * lib + 0.03 * (1 - lib),
           "acc_novel_semantic_zeroed": 0.96, "acc_novel_working_only": 0.03,
           "loss_total": 1.0 / (1 + step / 100)}
    for i in range(n_layers):
        row[f"share_episodic_l{i}"] = frac
        row[f"share_semantic_l{i}"] = 0.035 * (1 - lib)
        row[f"share_working_l{i}"] = 1 - frac - row[f"share_semantic_l{i}"]
    return row


def _write_metrics(path: Path, rng: np.random.Generator, steps: int, log_every: int,
                   warmup_steps: int, gamma: float, n_layers: int) -> None:
    """metrics.csv: one row every ``log_every`` steps from 0 to ``steps``."""
    cols = ["step", "phase", *EVAL_COLUMNS, "loss_total", *tier_columns(n_layers)]
    log = CsvLog(path / METRICS_FILE, cols)
    log.append([_metrics_row(step, rng, warmup_steps, gamma, n_layers)
                for step in range(0, steps + 1, log_every)])


def _write_patterns(path: Path, rng: np.random.Generator, steps: int, log_every: int,
                    gamma: float, n_patterns: int) -> None:
    """patterns.csv: per-pattern episodic share, decaying with exposures, every 5 log steps."""
    pat = CsvLog(path / PATTERNS_FILE, list(PATTERN_COLUMNS))
    prow = []
    for step in range(log_every * 5, steps + 1, log_every * 5):
        for p in range(n_patterns):
            exposures = int(step * (0.5 + p / n_patterns))
            share = float(np.clip((1 + exposures / 20) ** (-gamma) + rng.normal(0, 0.03), 0, 1))
            prow.append({"step": step, "pattern": p, "exposures": exposures,
                         "episodic_share": share, "q": 1 - share, "qhat": 1 - share,
                         "n_queries": 10})
    pat.append(prow)


def _write_retention(path: Path, rng: np.random.Generator, steps: int, warmup_steps: int) -> None:
    """retention.csv: binomial accuracy per lag bin, with episodic memory on and off."""
    ret = CsvLog(path / RETENTION_FILE, list(RETENTION_COLUMNS))
    rrow = []
    edges = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    for step in (warmup_steps, steps):
        for cond in ("episodic_on", "episodic_off"):
            for binding in ("novel", "library"):
                for lo, hi in zip(edges[:-1], edges[1:]):
                    base = 0.95 * (1 + lo) ** (-0.05) if cond == "episodic_on" else 1 / 32
                    if binding == "library" and step == steps:
                        base = 0.99
                    n = 40
                    correct = int(rng.binomial(n, min(base, 1.0)))
                    rrow.append({"step": step, "condition": cond, "binding": binding, "lag": lo,
                                 "lag_high": hi, "n": n, "correct": correct,
                                 "accuracy": correct / n})
    ret.append(rrow)
