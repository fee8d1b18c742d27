"""Baselines at their best: a per-model grid of training settings, and each run's convergence.

``cram bench sweep`` trains every model at every point of a grid (by default three learning
rates, as Zoology sweeps the learning rate per architecture) at one seed, reads each run's
validation curve (the evaluation rows of ``metrics.csv``, measured on the task's fixed evaluation
set, which training never draws) and names, per model, the point with the best final validation
accuracy. ``cram bench srcd --model-set MODEL:FIELD=VALUE`` then trains each model at its own
best point over several seeds (docs/baselines.md).

Convergence is read from the curve, never assumed:

- ``steps_to_converge``: the first evaluated step whose accuracy lies within ``tolerance`` (0.01)
  of the best the run reached;
- ``converged``: the best of the last quarter of evaluations is no more than ``tolerance`` above
  the best before it, i.e. the curve stopped improving. A run that is still rising is marked
  ``False`` and its table says so; it is not compared as if it had finished.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError

#: the learning rates swept when ``--grid`` is not given
DEFAULT_GRID = ("train.lr=0.001,0.003,0.01",)
#: accuracy within this of the run's best counts as converged
TOLERANCE = 0.01


def parse_grid(specs: list[str] | tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """``["train.lr=0.001,0.003"]`` → ``[("train.lr", ["0.001", "0.003"])]``; bad specs raise."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        field, sep, values = spec.partition("=")
        field = field.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not field or not items:
            raise ConfigError(f"--grid {spec!r}: expected FIELD=V1,V2,... (e.g. "
                              "train.lr=0.001,0.003,0.01)")
        if "." not in field:
            raise ConfigError(f"--grid {spec!r}: FIELD names a config section and field, e.g. "
                              "train.lr or model.n_heads")
        if any(field == f for f, _ in axes):
            raise ConfigError(f"--grid {spec!r}: {field} is swept twice")
        if len(set(items)) != len(items):
            raise ConfigError(f"--grid {spec!r}: a value repeats")
        axes.append((field, items))
    if not axes:
        raise ConfigError("--grid: give at least one FIELD=V1,V2,...")
    return axes


def grid_points(axes: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination of the axes, each as ``--set`` strings in axis order."""
    return [[f"{field}={value}" for (field, _), value in zip(axes, combo)]
            for combo in itertools.product(*(values for _, values in axes))]


def point_slug(point: list[str]) -> str:
    """A folder-safe name of one grid point: ``train.lr=0.003`` → ``lr0.003``."""
    return "_".join(s.split(".", 1)[1].replace("=", "").replace("_", "") for s in point)


def convergence(steps, accuracy, tolerance: float = TOLERANCE) -> dict:
    """Steps to converge and whether the curve stopped improving (module docstring)."""
    steps = np.asarray(steps, float)
    acc = np.asarray(accuracy, float)
    keep = np.isfinite(acc)
    steps, acc = steps[keep], acc[keep]
    if acc.size < 4:
        return {"best_acc": float(acc.max()) if acc.size else math.nan,
                "steps_to_converge": None, "converged": None}
    best = float(acc.max())
    first = int(steps[np.argmax(acc >= best - tolerance)])
    tail = max(1, acc.size // 4)
    rising = float(acc[-tail:].max()) - float(acc[:-tail].max()) > tolerance
    return {"best_acc": best, "steps_to_converge": first, "converged": not rising}


def validation_accuracy(last) -> float:
    """The sweep's score: the mean of novel and library accuracy where both are measured.

    A task with no library (plain MQAR) scores on novel accuracy alone; SRCD without either
    on ``retrieval_acc``.
    """
    parts = [float(last[k]) for k in ("retrieval_acc_novel", "retrieval_acc_library")
             if k in last and np.isfinite(float(last[k]))]
    return float(np.mean(parts)) if parts else float(last["retrieval_acc"])


def _curve(metrics):
    """The validation curve convergence is read from: novel accuracy, else overall accuracy."""
    novel = metrics["retrieval_acc_novel"]
    return novel if novel.notna().any() else metrics["retrieval_acc"]


def run_convergence(run_dir: Path) -> dict:
    """:func:`convergence` of a run folder's validation curve (``best_acc`` left out)."""
    from cram.core.runs import load_run

    metrics = load_run(run_dir).metrics
    found = convergence(metrics["step"], _curve(metrics))
    return {"steps_to_converge": found["steps_to_converge"], "converged": found["converged"]}


def sweep_row(model: str, point: list[str], run_dir: Path) -> dict:
    """One row: the final validation metrics of a sweep run and its convergence."""
    from cram.core.runs import load_run

    run = load_run(run_dir)
    metrics = run.metrics
    last = metrics.iloc[-1]
    curve = _curve(metrics)
    row = {"model": model, "setting": " ".join(point),
           "score": validation_accuracy(last),
           "retrieval_acc_novel": float(last["retrieval_acc_novel"]),
           "retrieval_acc_library": float(last["retrieval_acc_library"]),
           "attention_per_token": float(last["attention_tokens"]),
           **({"attention_over_floor": float(last["attention_over_floor"])}
              if "attention_over_floor" in last else {}),
           "steps": int(last["step"]),
           **convergence(metrics["step"], curve),
           "train_seconds": float(run.meta.get("train_seconds", math.nan)),
           "run": str(run_dir)}
    return row


def _rank(row: dict) -> tuple[float, float]:
    """Higher is better: the score, then fewer steps to converge."""
    return row["score"], -(row["steps_to_converge"] or math.inf)


def best_per_model(rows: list[dict]) -> list[dict]:
    """Per model, the row with the highest score (ties: fewer steps to converge, then order)."""
    best: dict[str, dict] = {}
    for row in rows:
        mine = best.get(row["model"])
        if mine is None or _rank(row) > _rank(mine):
            best[row["model"]] = row
    return [{"model": m, "best_setting": r["setting"], "score": r["score"],
             "converged": r["converged"], "steps_to_converge": r["steps_to_converge"],
             "model_set": " ".join(f"--model-set {m}:{s}" for s in r["setting"].split())}
            for m, r in best.items()]


def run_sweep(models: list[str], axes, preset: str, root: Path, overrides: list[str],
              seed: int = 0, progress: bool = True, task: str | None = None, task_args=(),
              log=print) -> list[dict]:
    """Train (or reuse) every model × grid point at ``seed`` under ``root``; one row each."""
    from .bench import ensure_run

    rows = []
    for model in models:
        for point in grid_points(axes):
            run_dir = Path(root) / f"{model}-{point_slug(point)}-seed{seed}"
            log(f"[bench sweep] {model} {' '.join(point)} seed {seed} → {run_dir}")
            ensure_run(model, preset, seed, run_dir, [*overrides, *point], progress=progress,
                       task=task, task_args=task_args)
            rows.append(sweep_row(model, point, run_dir))
    return rows
