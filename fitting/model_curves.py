"""Model curves from run folders, in the tidy curve form of :mod:`cram.psych_data.tidy`.

Run folders are read only through :func:`cram.core.runs.load_run` (no torch). Three curves:

``episodic_reliance_curve``
    ``attention_library`` (share of library-pattern queries that read episodic memory, hard
    routing, fixed evaluation set) against training steps after the onset, the end of warm-up:
    ``delay_value = step − warmup_steps`` for ``step >= warmup_steps``, unit ``steps``. Compared
    with human *savings/recall against delay*: both fall as a memory is consolidated, but this one
    measures *reliance on episodic memory*, not retention; the model keeps answering correctly.
``per_pattern_curve``
    ``episodic_share`` of one library pattern's evaluation queries against that pattern's
    exposure count (unit ``exposures``), one curve per pattern; ``n = n_queries`` (binomial
    counts). The per-item analogue: the aggregate of per-pattern curves is what the reliance
    curve averages (cf. Kahana & Adler 2002 on aggregates of items).
``retention_curve``
    retrieval accuracy against the store→query lag in intervening items (unit
    ``intervening_items``), one curve per training stage × condition (``episodic_on`` /
    ``episodic_off``) × binding; ``n`` = queries in the lag bin (binomial counts). The direct
    analogue of Rubin, Hinton & Wenzel's intervening-items design (their measure: cued recall).
``forgetting_curve``
    the study protocol's cued recall (docs/forgetting.md): accuracy of retired library bindings
    queried with their store removed, against the delay since their last exposure in training
    sequences (unit ``sequences``), pooled over bindings per delay; by default the last test
    (every delay at once), the router's own choice, massed and spaced together. Measure
    ``recall``, like Rubin, Hinton & Wenzel's; ``n`` = test queries (binomial counts). Chance
    is 1/n_values, not 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cram.core.errors import DataError, RunFolderError
from cram.core.runs import (
    FORGETTING_FILE,
    METRICS_FILE,
    PATTERNS_FILE,
    RETENTION_FILE,
    Run,
    load_run,
)
from cram.psych_data.tidy import validate_curves

CURVE_KINDS = ("episodic_reliance", "per_pattern", "retention", "forgetting")


def _as_run(run) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _label(run: Run) -> str:
    seed = run.seed
    return f"{run.name}" if seed is None or f"seed{seed}" in run.name else f"{run.name}-seed{seed}"


def _base(run: Run) -> dict:
    return {"group": "model", "source": str(run.path), "run": run.name, "model": run.model,
            "seed": run.seed}


def episodic_reliance_curve(run, series: str = "attention_library") -> pd.DataFrame:
    """Share of library queries reading episodic memory against steps after warm-up."""
    run = _as_run(run)
    m = run.metrics
    if series not in m.columns:
        raise RunFolderError(f"{run.path / METRICS_FILE}: no column {series!r}")
    onset = run.warmup_steps
    sub = m[(m["step"] >= onset) & m[series].notna()]
    if len(sub) < 3:
        raise RunFolderError(f"{run.path / METRICS_FILE}: fewer than 3 logged steps with "
                             f"{series!r} at or after the end of warm-up (step {onset})")
    df = pd.DataFrame({"curve": f"{_label(run)}:{series}", **_base(run),
                       "delay_value": (sub["step"] - onset).to_numpy(float),
                       "delay_unit": "steps", "measure": series,
                       "value": sub[series].to_numpy(float), "n": np.nan, "derived": False,
                       "n_kind": "", "onset_step": onset, "step": sub["step"].to_numpy()})
    return validate_curves(df, str(run.path / METRICS_FILE))


def per_pattern_curve(run, patterns=None) -> pd.DataFrame:
    """Episodic share of each library pattern against its exposure count (one curve each)."""
    run = _as_run(run)
    p = run.patterns
    if p is None or p.empty:
        raise RunFolderError(f"{run.path}: no patterns.csv (or it is empty)")
    if patterns is not None:
        p = p[p["pattern"].isin(list(patterns))]
    rows = []
    for pat, sub in p.groupby("pattern"):
        sub = sub.sort_values("step")
        rows.append(pd.DataFrame({
            "curve": f"{_label(run)}:pattern{int(pat)}", **_base(run),
            "delay_value": sub["exposures"].to_numpy(float), "delay_unit": "exposures",
            "measure": "episodic_share", "value": sub["episodic_share"].to_numpy(float),
            "n": sub["n_queries"].to_numpy(float), "derived": False, "n_kind": "queries",
            "pattern": int(pat), "step": sub["step"].to_numpy()}))
    if not rows:
        raise DataError(f"{run.path / 'patterns.csv'}: no rows for patterns {patterns}")
    return validate_curves(pd.concat(rows, ignore_index=True), str(run.path / PATTERNS_FILE))


def retention_curve(run, steps=None, conditions=("episodic_on", "episodic_off"),
                    bindings=("novel",)) -> pd.DataFrame:
    """Accuracy against store→query lag, per training stage × condition × binding."""
    run = _as_run(run)
    r = run.retention
    if r is None or r.empty:
        raise RunFolderError(f"{run.path}: no retention.csv (or it is empty)")
    if steps is not None:
        r = r[r["step"].isin(list(steps))]
    r = r[r["condition"].isin(list(conditions)) & r["binding"].isin(list(bindings))]
    if r.empty:
        raise DataError(f"{run.path / 'retention.csv'}: no rows for steps={steps}, "
                        f"conditions={conditions}, bindings={bindings}")
    rows = []
    for (step, cond, bind), sub in r.groupby(["step", "condition", "binding"]):
        sub = sub.sort_values("lag")
        rows.append(pd.DataFrame({
            "curve": f"{_label(run)}:retention/step{int(step)}/{cond}/{bind}", **_base(run),
            "delay_value": sub["lag"].to_numpy(float), "delay_unit": "intervening_items",
            "measure": "accuracy", "value": sub["accuracy"].to_numpy(float),
            "n": sub["n"].to_numpy(float), "derived": False, "n_kind": "queries",
            "step": int(step), "condition": cond, "binding": bind,
            "lag_high": sub["lag_high"].to_numpy(float)}))
    return validate_curves(pd.concat(rows, ignore_index=True), str(run.path / RETENTION_FILE))


def forgetting_curve(run, ablation: str = "none", schedule: str | None = None,
                     test: str = "last") -> pd.DataFrame:
    """Cued recall of retired bindings against delay (training sequences), from forgetting.csv.

    ``test="last"``: the last test (a cross-section, every delay at once); ``"all"``: every test,
    pooled per delay. ``schedule``: ``massed`` or ``spaced`` only (default both).
    """
    run = _as_run(run)
    f = run.forgetting
    if f is None or f.empty:
        raise RunFolderError(f"{run.path}: no {FORGETTING_FILE} (train with --set "
                             "study.protocol=study-test)")
    f = f[(f["phase"] == "retired") & (f["ablation"] == ablation)]
    if schedule is not None:
        f = f[f["schedule"] == schedule]
    if test == "last":
        f = f[f["step"] == f["step"].max()]
    if f.empty:
        raise DataError(f"{run.path / FORGETTING_FILE}: no retired bindings for ablation "
                        f"{ablation!r}, schedule {schedule!r}, test {test!r}")
    g = f.groupby("delay_sequences")[["n", "correct"]].sum().reset_index()
    label = f"{_label(run)}:forgetting/{test}/{ablation}" + (f"/{schedule}" if schedule else "")
    df = pd.DataFrame({"curve": label, **_base(run),
                       "delay_value": g["delay_sequences"].to_numpy(float),
                       "delay_unit": "sequences", "measure": "recall",
                       "value": (g["correct"] / g["n"]).to_numpy(float),
                       "n": g["n"].to_numpy(float), "derived": False, "n_kind": "queries",
                       "ablation": ablation})
    return validate_curves(df, str(run.path / FORGETTING_FILE))


def model_curves(runs, kind: str = "episodic_reliance", **kwargs) -> pd.DataFrame:
    """One tidy table of ``kind`` curves from several run folders (paths or :class:`Run`)."""
    fn = {"episodic_reliance": episodic_reliance_curve, "per_pattern": per_pattern_curve,
          "retention": retention_curve, "forgetting": forgetting_curve}.get(kind)
    if fn is None:
        raise DataError(f"unknown model-curve kind {kind!r}; choose one of {list(CURVE_KINDS)}")
    if isinstance(runs, (str, os.PathLike, Path, Run)):
        runs = [runs]
    frames = [fn(r, **kwargs) for r in runs]
    df = pd.concat(frames, ignore_index=True)
    dup = df.groupby("curve")["source"].nunique()
    if (dup > 1).any():
        raise DataError(f"curve ids clash across run folders: {list(dup[dup > 1].index)[:3]}; "
                        "give the runs distinct folder names")
    return df
