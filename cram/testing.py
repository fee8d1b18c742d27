"""Synthetic run folders that follow the run-folder contract (docs/run_folder.md).

For tests, notebooks on fixtures and the app's examples: no torch, no training. The curves are
*synthetic* (a power-law decay of library-query attention after warm-up, with noise); nothing here
is a measured result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cram.core.columns import (
    EVAL_COLUMNS,
    FORGETTING_COLUMNS,
    PATTERN_COLUMNS,
    RETENTION_COLUMNS,
    tier_columns,
)
from cram.core.runs import (
    CONFIG_FILE,
    FORGETTING_FILE,
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
    study: bool = False,
) -> Path:
    """Write a complete, synthetic run folder and return its path.

    ``study``: a run of the study protocol (docs/forgetting.md): a ``study`` section in
    config.json and a ``forgetting.csv`` whose retired bindings decay as a power law of their
    delay above chance, recalled by the semantic tier (zeroing it, or forcing working memory,
    leaves chance).
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=False)
    config = {
        "model": model, "preset": "synthetic", "seed": seed,
        "data": {"length": 256, "query_rate": 0.05, "library_share": 0.7, "n_library": n_patterns},
        "model_config": {"n_layers": n_layers, "d_model": 64},
        "train": {"steps": steps, "warmup_steps": warmup_steps, "log_every": log_every},
    }
    if study:
        config["data"].update(n_library=max(n_patterns, STUDY_BINDINGS), n_values=N_VALUES)
        config["train"].update(batch_size=BATCH_SIZE, pattern_every=log_every * 5)
        config["study"] = {"protocol": "study-test", "presentation": "cue-answer",
                           **STUDY_FIELDS}
    atomic_write_json(path / CONFIG_FILE, config)
    atomic_write_json(path / META_FILE, {
        "schema_version": SCHEMA_VERSION, "command": ["synthetic"], "cram_version": "synthetic",
        "git_commit": None, "libraries": {}, "device": "none", "status": "finished",
        "train_seconds": 0.0, "world_size": 1, "synthetic": True,
    })
    # one generator, drawn in this order: metrics, then patterns, then retention
    _write_metrics(path, rng, steps, log_every, warmup_steps, gamma, n_layers)
    _write_patterns(path, rng, steps, log_every, gamma, n_patterns)
    _write_retention(path, rng, steps, warmup_steps)
    if study:
        _write_forgetting(path, rng, steps, log_every * 5)
    atomic_write_json(path / TRANSITION_FILE, {
        "series": "attention_library", "method": "synthetic", "step": warmup_steps + 40,
        "low": warmup_steps + 20, "high": warmup_steps + 80, "level_before": 1.0,
        "level_after": 0.2, "n_boot": 0,
    })
    return path


#: the synthetic study protocol: 6 cohorts of 4 bindings (2 massed, 2 spaced), 2 held out, 4
#: recurring; the fields as config.json records them
STUDY_FIELDS = {"studied": 24, "held_out": 2, "cohorts": 6, "exposures": 4, "weight": 6,
                "spacing": 20, "min_delay": 10, "max_delay_share": 0.5, "probes": 24, "seed": 0}
STUDY_BINDINGS = 30
N_VALUES = 32
BATCH_SIZE = 32
FORGETTING_ABLATIONS = ("none", "semantic_zeroed", "episodic_off", "working_only",
                        "semantic_only")


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


def _study_schedule(steps: int) -> list[dict]:
    """Per binding: schedule, cohort, spacing and last exposure (delays log-spaced at the end)."""
    cohorts, spacing, exposures = STUDY_FIELDS["cohorts"], STUDY_FIELDS["spacing"], 4
    delays = np.geomspace(STUDY_FIELDS["min_delay"], STUDY_FIELDS["max_delay_share"] * steps,
                          cohorts).round().astype(int)
    plan, binding = [], 0
    for cohort, delay in enumerate(delays):
        for schedule in ("massed", "massed", "spaced", "spaced"):
            gap = spacing if schedule == "spaced" else 1
            last = steps - int(delay)
            plan.append({"binding": binding, "schedule": schedule, "cohort": cohort,
                         "spacing": gap, "last_exposure": last,
                         "first_exposure": last - gap * (exposures - 1)})
            binding += 1
    plan += [{"binding": b, "schedule": "held-out", "cohort": -1, "spacing": 0,
              "last_exposure": -1, "first_exposure": None} for b in range(binding, binding + 2)]
    plan += [{"binding": b, "schedule": "recurring", "cohort": -1, "spacing": 0,
              "last_exposure": -1, "first_exposure": None}
             for b in range(binding + 2, STUDY_BINDINGS)]
    return plan


def _forgetting_state(item: dict, step: int) -> tuple[str, int, float]:
    """``(phase, exposures done, recall probability without ablation)`` at a test step."""
    chance = 1.0 / N_VALUES
    if item["schedule"] == "recurring":
        return "recurring", -1, 0.97
    if item["schedule"] == "held-out":
        return "never", 0, chance
    first, last, gap = item["first_exposure"], item["last_exposure"], item["spacing"]
    if step < first:
        return "before", 0, chance
    done = min(4, (step - first) // gap + 1)
    if step <= last:
        return "study", done, 0.9
    return "retired", done, chance + (0.9 - chance) * (1 + (step - last) / 10) ** -0.5


def _write_forgetting(path: Path, rng: np.random.Generator, steps: int, every: int) -> None:
    """forgetting.csv: every binding at every test, under each ablation (binomial counts).

    Retired bindings decay as ``(1 + delay / 10)^-0.5`` above chance (``_forgetting_state``).
    """
    rows, n = [], STUDY_FIELDS["probes"]
    tests = sorted({*range(0, steps + 1, every), steps})
    for step in tests:
        for item in _study_schedule(steps):
            phase, done, p = _forgetting_state(item, step)
            delay = step - item["last_exposure"] if phase == "retired" else None
            for ablation in FORGETTING_ABLATIONS:
                # the semantic tier holds the studied bindings: without it, chance
                q = (1.0 / N_VALUES if ablation in ("semantic_zeroed", "working_only")
                     and phase in ("retired", "study") else p)
                rows.append({"step": step, "binding": item["binding"],
                             "schedule": item["schedule"], "cohort": item["cohort"],
                             "exposures": done, "spacing": item["spacing"],
                             "last_exposure": item["last_exposure"], "phase": phase,
                             "delay_steps": "" if delay is None else delay,
                             "delay_sequences": "" if delay is None else delay * BATCH_SIZE,
                             "ablation": ablation, "n": n,
                             "correct": int(rng.binomial(n, min(q, 1.0)))})
    CsvLog(path / FORGETTING_FILE, list(FORGETTING_COLUMNS)).append(rows)
