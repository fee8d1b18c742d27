"""Data access for the explorer and the notebooks: runs, model curves, fit folders, claims.

Everything here is plain Python (no Streamlit), so that the notebooks and the tests use the same
code as the app. Every reader turns a missing, partial or corrupt input into a
:class:`~cram.core.errors.CramError` (or a warning string) instead of a traceback; the app shows
those as messages.

Model curves follow the tidy curve table of :mod:`cram.psych_data.tidy` (``curve``, ``group``,
``source``, ``delay_value``, ``delay_unit``, ``measure``, ``value``, ``n``, ``derived``) so that
they can be overlaid on human curves and fitted by :func:`cram.fitting.fit_mle`.

Fit folders are read through :mod:`cram.core.fits` (the one reader), a user's curve CSV through
:func:`cram.psych_data.load_curves_csv` (the checker of ``cram data check``), and a Bayesian fit
asked for in the app is ``cram fit gamma`` run as a subprocess (:func:`run_fit`): nothing here
imports PyMC.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cram.core import fits
from cram.core.errors import CramError, DataError, RunFolderError
from cram.core.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    PATTERNS_FILE,
    RETENTION_FILE,
    TRANSITION_FILE,
    Run,
    find_runs,
    load_run,
)

#: environment variables set by ``cram app`` (and read by the notebooks)
RUNS_ENV = "CRAM_APP_RUNS"
FITS_ENV = "CRAM_APP_FITS"
#: where ``make demo`` writes its example runs and fit (relative to the working directory)
DEMO_RUNS = Path("runs") / "demo"

#: model-curve kinds of :mod:`cram.fitting.model_curves` that the Compare page offers
#: kind -> (delay unit, what it is)
MODEL_MEASURES: dict[str, tuple[str, str]] = {
    "episodic_reliance": (
        "steps",
        ("share of library queries that read episodic memory (attention_library), against "
        "optimiser steps since the end of warm-up; one curve per run"),
    ),
    "per_pattern": (
        "exposures",
        ("episodic share of one library pattern's queries against its exposure count; one curve "
        "per run and pattern"),
    ),
    "retention": (
        "intervening_items",
        ("retrieval accuracy of novel bindings against the store-to-query lag (intervening "
        "items), one curve per run, training stage and condition (episodic memory on/off)"),
    ),
}

#: attention series of metrics.csv that the Runs page can plot
#: the causal check of the logged reliance (metrics.csv), per query kind: (column, condition)
RELIANCE_CHECK = {
    "library queries": (("retrieval_acc_library", "normal"),
                        ("acc_library_semantic_zeroed", "semantic output zeroed"),
                        ("acc_library_working_only", "working memory only")),
    "novel queries": (("retrieval_acc_novel", "normal"),
                      ("acc_novel_semantic_zeroed", "semantic output zeroed"),
                      ("acc_novel_working_only", "working memory only")),
}
#: the study protocol's tier ablations (forgetting.csv), in the order the page and the demo
#: report name them: ablation -> what it does at test
FORGETTING_ABLATIONS = {
    "none": "the model's own routing",
    "semantic_only": "every layer forced to the semantic tier",
    "working_only": "every layer forced to working memory",
    "semantic_zeroed": "the semantic tier's output zeroed",
    "episodic_off": "episodic reads turned into working-memory ones",
}
#: the human curves of the forgetting curve's measure class (cued recall) shown beside it
FORGETTING_HUMAN = "rubin1999"
#: how far above the held-out (chance) accuracy recall must be to count as recall
FORGETTING_MARGIN = 0.05
ATTENTION_SERIES = ("attention_fraction", "attention_query", "attention_library",
                    "attention_novel", "attention_nonquery", "attention_computed")

TIDY_COLUMNS = ("curve", "group", "source", "delay_value", "delay_unit", "measure", "value", "n",
                "derived")


# --------------------------------------------------------------------------------------------
# where things are


def default_runs_root() -> Path:
    """The runs folder the app opens with: ``$CRAM_APP_RUNS``, else ``runs/demo``, else ``runs``."""
    env = os.environ.get(RUNS_ENV)
    if env:
        return Path(env)
    return DEMO_RUNS if DEMO_RUNS.is_dir() else Path("runs")


def default_fits_root(runs_root: str | os.PathLike | None = None) -> Path:
    """The folder searched for ``cram fit`` outputs: ``$CRAM_APP_FITS``, else the runs folder."""
    env = os.environ.get(FITS_ENV)
    if env:
        return Path(env)
    return Path(runs_root) if runs_root is not None else default_runs_root()


def app_roots() -> tuple[Path, Path]:
    """``(runs_root, fits_root)``, the two folders the explorer reads.

    Set by ``cram app --runs/--fits`` (through ``$CRAM_APP_RUNS`` / ``$CRAM_APP_FITS``), never by
    the page's URL, so a link cannot point the app at another folder of the machine.
    """
    runs = default_runs_root()
    return runs, default_fits_root(runs)


def folder_signature(path: str | os.PathLike) -> tuple:
    """Names, sizes and modification times of the files in a folder (a cache key).

    Loaders cached on the path alone would keep serving stale data after a run has grown; the
    signature changes whenever a file is rewritten.
    """
    path = Path(path)
    if not path.is_dir():
        return ()
    sig = []
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            sig.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(sig)


# --------------------------------------------------------------------------------------------
# runs


@dataclass
class RunScan:
    """Result of scanning a folder for runs: the runs that loaded and the ones that did not."""

    root: Path
    runs: dict[str, Run] = field(default_factory=dict)  # label -> Run
    errors: dict[str, str] = field(default_factory=dict)  # label -> message
    warnings: dict[str, list[str]] = field(default_factory=dict)  # label -> messages


def run_label(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A short, unique name for a run: its path relative to the scanned root."""
    path, root = Path(path), Path(root)
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else path.name


def _candidate_run_dirs(root: Path) -> list[Path]:
    """Folders that look like runs, including partial ones (config.json or metrics.csv)."""
    if not root.exists():
        return []
    found = set(find_runs(root))
    for name in (CONFIG_FILE, METRICS_FILE):
        for f in root.rglob(name):
            if CHECKPOINT_DIR not in f.parts:
                found.add(f.parent)
    return sorted(found)


def scan_runs(root: str | os.PathLike) -> RunScan:
    """Load every run folder at or below ``root``; collect errors instead of raising.

    A folder with a ``config.json`` or a ``metrics.csv`` counts as a (possibly partial) run: if it
    cannot be read, its message goes to ``RunScan.errors``. Optional tables that are missing or
    corrupt go to ``RunScan.warnings``.
    """
    root = Path(root)
    scan = RunScan(root=root)
    for d in _candidate_run_dirs(root):
        label = run_label(d, root)
        try:
            run = load_run(d)
            _check_metrics(run)
        except CramError as err:
            scan.errors[label] = str(err)
            continue
        except Exception as err:  # noqa: BLE001 - a corrupt file must not crash the app
            scan.errors[label] = f"{d}: cannot be read ({type(err).__name__}: {err})"
            continue
        scan.runs[label] = run
        warns = list(run.warnings)
        for key, fname in (("patterns", PATTERNS_FILE), ("retention", RETENTION_FILE)):
            if getattr(run, key) is None and not any(fname in w for w in warns):
                warns.append(f"{d}: no {fname}; its charts are skipped")
        if run.transition is None and not any(TRANSITION_FILE in w for w in warns):
            warns.append(f"{d}: no {TRANSITION_FILE}; the phase transition is not marked")
        if run.meta.get("status") == "running":
            warns.append(f"{d}: still running (meta.json status 'running'); numbers may change")
        if run.meta.get("status") in ("failed", "interrupted"):
            status = run.meta["status"]
            warns.append(f"{d}: the run {status} (meta.json status '{status}')")
        if warns:
            scan.warnings[label] = warns
    return scan


def _check_metrics(run: Run) -> None:
    """Coerce the numeric metric columns; a column of text where numbers belong is an error."""
    m = run.metrics
    for col in m.columns:
        if col == "phase":
            continue
        if not pd.api.types.is_numeric_dtype(m[col]) and not pd.api.types.is_bool_dtype(m[col]):
            num = pd.to_numeric(m[col], errors="coerce")
            bad = num.isna() & m[col].notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise RunFolderError(f"{run.path / METRICS_FILE}: row {i + 1}, column '{col}': "
                                     f"{m[col].iloc[i]!r} is not a number")
            m[col] = num
    if len(m) == 0:
        raise RunFolderError(f"{run.path / METRICS_FILE}: no rows yet")


def attention_long(runs: dict[str, Run], series: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Long table ``run, model, seed, step, series, value`` of the chosen metrics.csv columns."""
    frames = []
    for label, run in runs.items():
        m = run.metrics
        for s in series:
            if s not in m.columns:
                continue
            frames.append(pd.DataFrame({
                "run": label, "model": run.model, "seed": run.seed, "step": m["step"],
                "series": s, "value": pd.to_numeric(m[s], errors="coerce"),
            }))
    if not frames:
        return pd.DataFrame(columns=["run", "model", "seed", "step", "series", "value"])
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def transitions(runs: dict[str, Run]) -> pd.DataFrame:
    """One row per run with a detected phase transition.

    Columns: ``run, step, low, high, series``, plus ``familiarity_rise`` (change point of
    q̂ library − novel) and ``lag_after_familiarity``.
    """
    rows = []
    for label, run in runs.items():
        t = run.transition or {}
        step = t.get("step")
        if step is None:
            continue
        try:
            low = float(t.get("low")) if t.get("low") is not None else float(step)
            high = float(t.get("high")) if t.get("high") is not None else float(step)
            rise = run.familiarity_rise_step
            lag = t.get("lag_after_familiarity")
            rows.append({"run": label, "step": float(step), "low": low, "high": high,
                         "series": t.get("series", ""), "method": t.get("method", ""),
                         "familiarity_rise": float(rise) if rise is not None else float("nan"),
                         "lag_after_familiarity": float(lag) if lag is not None else float("nan")})
        except (TypeError, ValueError):
            continue
    return pd.DataFrame(rows, columns=["run", "step", "low", "high", "series", "method",
                                       "familiarity_rise", "lag_after_familiarity"])


_TIER_RE = re.compile(r"^share_(working|episodic|semantic)_l(\d+)$")


def tier_shares(run: Run) -> pd.DataFrame:
    """Long table ``step, layer, tier, share`` from the ``share_<tier>_l<i>`` columns."""
    rows = []
    for col in run.metrics.columns:
        m = _TIER_RE.match(col)
        if m:
            rows.append(pd.DataFrame({"step": run.metrics["step"], "layer": int(m.group(2)),
                                      "tier": m.group(1),
                                      "share": pd.to_numeric(run.metrics[col], errors="coerce")}))
    if not rows:
        return pd.DataFrame(columns=["step", "layer", "tier", "share"])
    return pd.concat(rows, ignore_index=True).dropna(subset=["share"])


_LAYER_RE = re.compile(r"^(attention|q|qhat)_(library|novel|nonquery)_l(\d+)$")
#: the headline fractions in both units (issue 13): (what, per-pair column, per-token column)
UNIT_PAIRS = (("all tokens", "attention_fraction", "attention_tokens"),
              ("queries", "attention_query_pairs", "attention_query"),
              ("library queries", "attention_library_pairs", "attention_library"),
              ("novel queries", "attention_novel_pairs", "attention_novel"),
              ("non-query tokens", "attention_nonquery", "attention_nonquery_tokens"))


def layer_view(run: Run) -> pd.DataFrame:
    """Long table ``step, layer, measure, tokens, value`` of the per-layer columns.

    ``measure`` is attention, q or qhat; ``tokens`` library, novel or nonquery (the columns
    ``<measure>_<tokens>_l<i>`` of docs/run_folder.md). Empty when the run has none.
    """
    rows = []
    for col in run.metrics.columns:
        m = _LAYER_RE.match(col)
        if m:
            rows.append(pd.DataFrame({"step": run.metrics["step"], "layer": int(m.group(3)),
                                      "measure": m.group(1), "tokens": m.group(2),
                                      "value": pd.to_numeric(run.metrics[col], errors="coerce")}))
    if not rows:
        return pd.DataFrame(columns=["step", "layer", "measure", "tokens", "value"])
    return pd.concat(rows, ignore_index=True).dropna(subset=["value"])


def unit_table(run: Run) -> pd.DataFrame:
    """The last logged row's attention fractions per (token, layer) pair and per token."""
    last = run.metrics.iloc[-1] if len(run.metrics) else pd.Series(dtype=float)
    rows = [{"tokens": what, "per pair": pd.to_numeric(last.get(pair), errors="coerce"),
             "per token": pd.to_numeric(last.get(token), errors="coerce")}
            for what, pair, token in UNIT_PAIRS if pair in last.index or token in last.index]
    return pd.DataFrame(rows, columns=["tokens", "per pair", "per token"])


# --------------------------------------------------------------------------------------------
# the study protocol: forgetting over a delay (forgetting.csv, docs/forgetting.md)


def forgetting_last(run: Run) -> pd.DataFrame:
    """The rows of the last test in the run's ``forgetting.csv`` (empty when it has none)."""
    f = run.forgetting
    if f is None or not len(f):
        return pd.DataFrame()
    return f[f["step"] == f["step"].max()]


def _pooled(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = df.groupby(keys, dropna=False)[["n", "correct"]].sum().reset_index()
    return g.assign(accuracy=g["correct"] / g["n"].where(g["n"] > 0))


def forgetting_long(run: Run) -> pd.DataFrame:
    """Last-test recall of retired bindings per ablation, schedule and delay.

    Columns ``ablation, schedule, delay_steps, delay_sequences, n, correct, accuracy``, pooled
    over bindings; ``schedule`` is ``all`` (massed and spaced together: under ablation ``none``
    the curve that ``cram fit gamma --curve-kind forgetting`` fits), ``massed`` or ``spaced``.
    """
    cols = ["ablation", "schedule", "delay_steps", "delay_sequences", "n", "correct", "accuracy"]
    last = forgetting_last(run)
    if last.empty:
        return pd.DataFrame(columns=cols)
    ret = last[last["phase"] == "retired"]
    keys = ["ablation", "delay_steps", "delay_sequences"]
    frames = [_pooled(ret, keys).assign(schedule="all"),
              *(_pooled(part, keys).assign(schedule=str(name))
                for name, part in ret.groupby("schedule"))]
    return pd.concat(frames, ignore_index=True)[cols]


def forgetting_tiers(run: Run) -> pd.DataFrame:
    """Last-test accuracy per ablation of retired, recurring and held-out bindings.

    Columns ``ablation, condition, retired, retired_n, recurring, held_out``: held-out bindings
    were never shown (the chance control), recurring ones are the library as usual (the
    ceiling). Ablations in the order of ``FORGETTING_ABLATIONS``.
    """
    cols = ["ablation", "condition", "retired", "retired_n", "recurring", "held_out"]
    last = forgetting_last(run)
    if last.empty:
        return pd.DataFrame(columns=cols)
    g = _pooled(last, ["ablation", "phase"]).set_index(["ablation", "phase"])
    order = [a for a in FORGETTING_ABLATIONS if a in set(last["ablation"])]
    order += sorted(set(last["ablation"]) - set(order))

    def acc(ablation: str, phase: str) -> float:
        return float(g["accuracy"].get((ablation, phase), math.nan))

    rows = [{"ablation": a, "condition": FORGETTING_ABLATIONS.get(a, a),
             "retired": acc(a, "retired"),
             "retired_n": int(g["n"].get((a, "retired"), 0)),
             "recurring": acc(a, "recurring"), "held_out": acc(a, "never")} for a in order]
    return pd.DataFrame(rows, columns=cols)


def _tier_reading(acc: dict[str, float], chance: float, margin: float) -> str:
    """Which tier answers, from the retired bindings' accuracy per ablation (see below)."""
    own, floor = acc["none"], chance + margin
    if not own > floor:
        return ("With its own routing the model recalls the retired bindings no better than "
                "chance, so there is no recall for a tier to carry.")
    others = {a: v for a, v in acc.items() if a != "none"}
    if not others:
        return "The model has no tiers to take away (ablation `none` only)."
    if all(abs(v - own) <= margin for v in others.values()):
        text = (f"Recall does not depend on one tier: every ablation stays within {margin:.2f} "
                f"of {own:.2f}, so what answers lies in weights that none of them removes, not "
                "in the semantic tier alone.")
    elif others.get("semantic_zeroed", math.inf) <= floor:
        text = ("The semantic tier answers them: with its output zeroed, recall falls to "
                "chance.")
    elif others.get("working_only", -math.inf) >= own - margin:
        text = ("Working memory and the readout answer them: forced to working memory in every "
                "layer, the model recalls as much as with its own routing.")
    else:
        text = ("No single tier accounts for the recall: each ablation removes part of it.")
    if others.get("semantic_only", -math.inf) > own + margin:
        text += (f" The semantic tier alone recalls more ({others['semantic_only']:.2f}) than the "
                 "model's own routing: it holds bindings that the router does not send their "
                 "store-less queries to (a failure of recognition, not of memory).")
    return text


def forgetting_tier_text(run: Run) -> str:
    """In words: which tier answers the retired bindings at the last test (forgetting.csv).

    Two accuracies differ when they are more than a margin apart: two binomial standard errors
    of a difference at the model's own accuracy, and at least ``FORGETTING_MARGIN``. Recall
    counts only above the held-out bindings' accuracy (the chance control, else 1/n_values)
    plus that margin; an ablation "falls to chance" at or below it.
    """
    tiers = forgetting_tiers(run)
    tiers = tiers[tiers["retired_n"] > 0]
    if tiers.empty or "none" not in set(tiers["ablation"]):
        return "The run's last test has no retired bindings to read."
    acc = dict(zip(tiers["ablation"], tiers["retired"]))
    chance = float(tiers.loc[tiers["ablation"] == "none", "held_out"].iloc[0])
    n_values = (run.config.get("data") or {}).get("n_values")
    what = ", ".join(f"{v:.2f} with {FORGETTING_ABLATIONS.get(a, a)}" for a, v in acc.items())
    if math.isfinite(chance):
        control = f"held-out bindings, never shown, the chance control: {chance:.2f}"
    else:
        chance = 1.0 / n_values if n_values else 0.0
        control = f"chance 1/{n_values}" if n_values else "no chance control"
    step = int(forgetting_last(run)["step"].iloc[0])
    own = acc["none"]
    n = int(tiers.loc[tiers["ablation"] == "none", "retired_n"].iloc[0])
    margin = max(FORGETTING_MARGIN, 2 * math.sqrt(2 * own * (1 - own) / n))
    return (f"At the last test (step {step}) the retired bindings are recalled at {what} "
            f"({control}). " + _tier_reading(acc, chance, margin))


def forgetting_fit_curves(fit: FitFolder, run: Run) -> list[str]:
    """The forgetting curves of ``run`` that a fit folder fitted (from its ``curves.csv``).

    A curve belongs to the run when its ``source`` is the run's folder: the same path, or a
    relative path that the run's absolute path ends with (a fit made from another folder).
    """
    c = fit.curves
    if c is None or not {"curve", "source", "delay_unit"} <= set(c.columns):
        return []
    sub = c[(c["delay_unit"].astype(str) == "sequences")
            & c["curve"].astype(str).str.contains(":forgetting/", regex=False)]
    mine = run.path.resolve()
    ids = []
    for curve, source in sub[["curve", "source"]].drop_duplicates().itertuples(index=False):
        src = Path(str(source))
        same = src.resolve() == mine or (not src.is_absolute()
                                         and mine.parts[-len(src.parts):] == src.parts)
        if same and curve not in ids:
            ids.append(str(curve))
    return ids


def forgetting_fit_command(run_path: str | os.PathLike, out: str = "fits/forgetting") -> str:
    """The ``cram fit gamma`` command that fits a run's forgetting curve beside rubin1999."""
    return (f"cram fit gamma --run {run_path} --curve-kind forgetting --human {FORGETTING_HUMAN} "
            f"--offset intervening_items=1 --method mle --out {out}")


def gamma_words(row: dict, level: float = 0.9) -> str:
    """A curve's γ with its interval, only where its form check passes ("" otherwise)."""
    g = row.get("gamma")
    if row.get("gamma_valid") is not True or not _finite(g):
        return ""
    lo, hi = row.get("gamma_low"), row.get("gamma_high")
    span = f" [{lo:.2f}, {hi:.2f}]" if _finite(lo) and _finite(hi) else ""
    return f"γ = {g:.2f}{span}"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def form_check_lines(fit: FitFolder, curves: list[str] | None = None,
                     groups: tuple[str, ...] = ("model", "human")) -> list[str]:
    """``curve: verdict[; γ = g [lo, hi]]`` per curve of the fit (γ only where it passes).

    ``curves``: the model curves to include (None: all); human curves are always included.
    A curve without a form check says so. The interval is the fit's: a confidence interval
    (MLE) for a point fit, a central posterior interval for a Bayesian one.
    """
    level = fit.interval_prob
    name = (ci_label(level) if fit.method in fits.POINT_METHODS
            else f"central {level:.0%} posterior interval")
    lines = []
    for row in fit.result.get("curves") or []:
        label, group = str(row.get("curve", "")), row.get("group")
        if label.startswith("group:") or group not in groups:
            continue
        if group == "model" and curves is not None and label not in curves:
            continue
        check = row.get("form_check") or {}
        verdict = check.get("verdict") or "no form check (γ assumes a power law)"
        gamma = gamma_words(row)
        lines.append(f"`{label}`: {verdict}" + (f"; {gamma} ({name})" if gamma else ""))
    return lines


# --------------------------------------------------------------------------------------------
# model curves in the tidy curve format


def model_curves(runs: dict[str, Run], kind: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Tidy curve table of one curve ``kind`` for every run, plus the runs it failed for.

    The curves come from :mod:`cram.fitting.model_curves` (the same definitions that
    ``cram fit gamma`` uses), one run at a time, so that one partial run does not hide the others.
    Curve ids that two runs in different sub-folders would share get the run's label prepended.

    Returns
    -------
    curves : DataFrame
        Tidy curve table (possibly empty).
    errors : dict
        Run label -> message, for the runs whose curve cannot be built.
    """
    if kind not in MODEL_MEASURES:
        raise DataError(f"unknown model-curve kind {kind!r}; choose from {list(MODEL_MEASURES)}")
    from cram.fitting import model_curves as mc

    fn = {"episodic_reliance": mc.episodic_reliance_curve, "per_pattern": mc.per_pattern_curve,
          "retention": mc.retention_curve}[kind]
    frames, errors, seen = [], {}, set()
    for label, run in runs.items():
        try:
            df = fn(run)
        except CramError as err:
            errors[label] = str(err)
            continue
        except Exception as err:  # noqa: BLE001 - a corrupt table must not crash the caller
            errors[label] = f"{type(err).__name__}: {err}"
            continue
        ids = set(df["curve"].unique())
        if ids & seen:
            df = df.assign(curve=label + "/" + df["curve"].astype(str))
            ids = set(df["curve"].unique())
        seen |= ids
        df["run_label"] = label
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(TIDY_COLUMNS)), errors
    return pd.concat(frames, ignore_index=True), errors


def add_time(df: pd.DataFrame, offset: float | None = None) -> pd.DataFrame:
    """Add the fitted time ``t = delay_value + offset`` (the fitting rules' definition)."""
    return df.assign(t=df["delay_value"].astype(float) + (offset or 0.0))


def normalise_curves(df: pd.DataFrame, time_col: str = "delay_value") -> pd.DataFrame:
    """Add ``t_norm`` and ``v_norm`` so that curves in different units share one set of axes.

    For each curve, ``t_norm = t / t0`` and ``v_norm = value / v0`` where ``t`` is ``time_col``,
    ``t0`` the smallest positive ``t`` of that curve and ``v0`` the mean value at ``t0``. Points at
    ``t = 0`` get ``t_norm = 0`` (they drop out of log axes). On log-log axes a power law
    ``R = a t^-γ`` stays a straight line of slope ``-γ`` after this rescaling, so slopes can be
    compared across units; only the intercepts move. ``t0`` and ``v0`` are kept as columns so that
    fitted lines can be rescaled the same way.
    """
    out = []
    for _, sub in df.groupby("curve", sort=False):
        sub = sub.copy()
        pos = sub[sub[time_col] > 0]
        if len(pos) == 0:
            sub["t0"], sub["v0"] = np.nan, np.nan
        else:
            t0 = float(pos[time_col].min())
            sub["t0"] = t0
            sub["v0"] = float(pos.loc[pos[time_col] == t0, "value"].mean())
        out.append(sub)
    if not out:
        return df.assign(t0=pd.Series(dtype=float), v0=pd.Series(dtype=float),
                         t_norm=pd.Series(dtype=float), v_norm=pd.Series(dtype=float))
    res = pd.concat(out, ignore_index=True)
    res["t_norm"] = res[time_col] / res["t0"]
    res["v_norm"] = np.where(res["v0"] > 0, res["value"] / res["v0"], np.nan)
    return res


def window_mask(df: pd.DataFrame, window: tuple[float, float] | None,
                time_col: str = "t") -> np.ndarray:
    """Which rows fall inside a fit window given in decades from each curve's first ``t > 0``.

    Same definition as the fitting rules (``A <= log10(t / t_first) <= B``), used here only to
    shade the points that a fit uses; ``None`` keeps every row.
    """
    if window is None:
        return np.ones(len(df), dtype=bool)
    a, b = window
    keep = np.zeros(len(df), dtype=bool)
    t = df[time_col].to_numpy(dtype=float)
    for cid in pd.unique(df["curve"]):
        idx = np.flatnonzero(df["curve"].to_numpy() == cid)
        tt = t[idx]
        pos = tt[tt > 0]
        if len(pos) == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            dec = np.log10(np.where(tt > 0, tt, np.nan) / pos.min())
        keep[idx] = (dec >= a - 1e-9) & (dec <= b + 1e-9)
    return keep


# --------------------------------------------------------------------------------------------
# fit folders written by `cram fit gamma ... --out DIR`: read through cram.core.fits, the one
# reader (names kept here for the app and the notebooks)

FitFolder = fits.FitFolder
find_fits = fits.find_fits
format_window = fits.format_window

#: how every interval is named, on the page and in these helpers (one wording)
HDI_NAME = "HDI (Bayesian posterior)"
CI_NAME = "confidence interval (MLE)"
INTERVALS_CAPTION = (
    "Why the two kinds of interval differ: a {p} HDI is the narrowest range holding {p} of a "
    "Bayesian fit's posterior (priors, curves pooled in groups); a {p} confidence interval "
    "(MLE) is a frequentist Wald interval (estimate ± z · standard error) of a "
    "maximum-likelihood fit of each curve alone.")


def hdi_label(prob: float = 0.9) -> str:
    """``90% HDI (Bayesian posterior)``: the name of a posterior interval."""
    return f"{prob:.0%} {HDI_NAME}"


def ci_label(level: float = 0.9) -> str:
    """``90% confidence interval (MLE)``: the name of a point fit's interval."""
    return f"{level:.0%} {CI_NAME}"


def intervals_caption(level: float = 0.9) -> str:
    """One line saying why an HDI and a confidence interval of the same level differ."""
    return INTERVALS_CAPTION.format(p=f"{level:.0%}")


def load_fit_folder(path: str | os.PathLike) -> FitFolder:
    """Read a ``cram fit`` folder for display (:func:`cram.core.fits.load_fit`, lenient).

    Only ``result.json`` is required; other missing or unreadable files become
    ``FitFolder.warnings``, and ``posterior.nc`` is read on first use of ``draws``/``idata``.

    Raises
    ------
    RunFolderError
        If ``result.json`` is missing, not JSON or not an object.
    """
    return fits.load_fit(path, strict=False)


def posterior_stats(draws: np.ndarray, hdi_prob: float = 0.9) -> dict[str, float]:
    """Mean, sd, the ``hdi_prob`` HDI (:func:`arviz.hdi`) and P(x > 0) of a set of draws."""
    x = np.asarray(draws, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"mean": math.nan, "sd": math.nan, "hdi_low": math.nan, "hdi_high": math.nan,
                "p_positive": math.nan, "n_draws": 0}
    import arviz as az

    lo, hi = (float(v) for v in az.hdi(x, hdi_prob=hdi_prob))
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            "hdi_low": lo, "hdi_high": hi, "p_positive": float((x > 0).mean()),
            "n_draws": len(x)}


def describe_inputs(fit: FitFolder) -> dict[str, str]:
    """What a fit compared, per group: ``{"model": "a, b", "human": "rubin1999 (3 curves)"}``.

    Model curves are named one by one; human curves by dataset (a shipped dataset's name, or
    the source of a user's CSV), with their count.
    """
    table = fit.inputs()
    out = {}
    for group in ("model", "human"):
        sub = table[table["group"] == group]
        if group == "model":
            out[group] = ", ".join(sub["curve"])
            continue
        parts = []
        for ds, rows in sub.groupby("dataset", sort=False):
            n = len(rows)
            parts.append(f"{ds} ({n} curve{'s' if n != 1 else ''})")
        out[group] = ", ".join(parts)
    return out


def delta_gamma_mle(model_gamma: float, model_se: float, human_gamma: float, human_se: float,
                    level: float = 0.9) -> dict[str, float]:
    """Δγ = γ_model − γ_human of two independent MLE fits, with its Wald confidence interval.

    The standard error of the difference is ``sqrt(se_model² + se_human²)``; the interval is
    Δγ ± z · se with z the normal quantile of ``(1 + level) / 2`` (NaN when a standard error
    is undefined).
    """
    from statistics import NormalDist

    d = float(model_gamma) - float(human_gamma)
    se = math.hypot(float(model_se), float(human_se))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    ok = math.isfinite(se)
    return {"delta": d, "se": se, "low": d - z * se if ok else math.nan,
            "high": d + z * se if ok else math.nan, "level": level}


# --------------------------------------------------------------------------------------------
# a user's own human curve CSV (the checker of `cram data check`)

USER_DATASET = "your CSV"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def user_csv_name(name: str) -> str:
    """A safe file name for an uploaded CSV (its base name, odd characters replaced)."""
    base = Path(str(name)).name
    if base.lower().endswith(".csv"):
        base = base[:-4]
    return (_SAFE_NAME.sub("_", base).strip("._-") or "curves") + ".csv"


def load_user_csv(name: str, data: bytes) -> tuple[pd.DataFrame | None, str | None]:
    """Check an uploaded human curve CSV with :func:`cram.psych_data.load_curves_csv`.

    The file is checked exactly as ``cram data check FILE`` checks it (columns delay_value,
    delay_unit, measure, value, optional n, source, curve). Returns ``(tidy curves, None)`` or
    ``(None, one-line message)``; the message names the uploaded file, never a temp path.
    Curve ids are ``<file stem>/<curve>``; ``dataset`` is ``your CSV: <file name>``.
    """
    import tempfile

    from cram.psych_data import load_curves_csv

    fname = user_csv_name(name)
    with tempfile.TemporaryDirectory(prefix="cram-upload-") as tmp:
        path = Path(tmp) / fname
        path.write_bytes(data)
        try:
            df = load_curves_csv(path)
        except CramError as err:
            return None, " ".join(str(err).replace(str(path), fname).split())
        except Exception as err:  # noqa: BLE001 - an upload must never become a traceback
            return None, f"{fname}: cannot be read ({type(err).__name__})"
    if (df["group"] != "human").any():
        return None, (f"{fname}: column 'group' says {sorted(set(df['group']) - {'human'})}; "
                      "this upload takes human curves only (leave 'group' out)")
    for col in ("source", "curve"):
        df[col] = df[col].astype(str).str.replace(str(path), fname, regex=False)
    df["dataset"] = f"{USER_DATASET}: {fname}"
    return df, None


def is_user_curve(df: pd.DataFrame) -> pd.Series:
    """Which rows of a tidy table come from an uploaded CSV."""
    if "dataset" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["dataset"].astype(str).str.startswith(f"{USER_DATASET}: ")


# --------------------------------------------------------------------------------------------
# an on-demand Bayesian fit: `cram fit gamma` in a subprocess (the app never runs PyMC)

#: where the app writes the fit folders it asks for, below its fits folder
APP_FITS_DIR = "app-fits"


def new_fit_folder(fits_root: str | os.PathLike) -> Path:
    """A fresh path ``<fits_root>/app-fits/bayes-<UTC time>[-k]`` (not created)."""
    import datetime as _dt

    base = Path(fits_root) / APP_FITS_DIR
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out, k = base / f"bayes-{stamp}", 1
    while out.exists() or Path(f"{out}-inputs").exists():
        k += 1
        out = base / f"bayes-{stamp}-{k}"
    return out


@dataclass
class FitRequest:
    """What an on-demand fit covers and how; :meth:`command` is the ``cram fit gamma`` call.

    ``cram fit gamma`` takes whole inputs: every ``kind`` curve of each run folder, every
    curve of each shipped dataset (derived ones are left out of pooled fits) and every curve of
    each user CSV.
    """

    out: Path
    runs: list[Path]
    kind: str
    datasets: list[str]
    csvs: list[Path]
    form: str
    offset: float | None
    window: tuple[float, float] | None
    seed: int = 0
    draws: int = 500

    def command(self) -> list[str]:
        """The argument list: ``python -m cram fit gamma ... --method bayes --out OUT``."""
        import sys

        cmd = [sys.executable, "-m", "cram", "fit", "gamma"]
        for r in self.runs:
            cmd += ["--run", str(r)]
        cmd += ["--curve-kind", self.kind]
        for d in self.datasets:
            cmd += ["--human", d]
        for c in self.csvs:
            cmd += ["--human-csv", str(c)]
        cmd += ["--form", self.form]
        if self.offset:
            cmd += ["--offset", f"{self.offset:g}"]
        if self.window:
            cmd += ["--window", f"{self.window[0]:g}:{self.window[1]:g}"]
        cmd += ["--method", "bayes", "--chains", "2", "--draws", str(self.draws),
                "--tune", str(self.draws), "--seed", str(self.seed), "--out", str(self.out),
                "--quiet", "--no-figures", "--no-window-sensitivity"]
        return cmd


def save_user_csvs(out: Path, uploads: dict[str, bytes]) -> list[Path]:
    """Keep uploaded CSVs beside a fit folder (``<out>-inputs/NAME.csv``) for ``--human-csv``."""
    if not uploads:
        return []
    folder = Path(f"{out}-inputs")
    folder.mkdir(parents=True, exist_ok=False)
    paths = []
    for name, data in uploads.items():
        f = folder / user_csv_name(name)
        f.write_bytes(data)
        paths.append(f)
    return paths


def run_fit(request: FitRequest, timeout: float = 1800) -> tuple[Path | None, str | None]:
    """Run the request's ``cram fit gamma`` and wait; ``(fit folder, None)`` or ``(None, why)``.

    ``why`` is one line: the command's last line on stderr (its error message), or the
    timeout.
    """
    import subprocess

    try:
        proc = subprocess.run(request.command(), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"cram fit gamma did not finish within {timeout:.0f} s"
    except OSError as err:
        return None, f"cram fit gamma could not start ({err})"
    if proc.returncode != 0 or not (request.out / fits.RESULT_FILE).is_file():
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"cram fit gamma exited with {proc.returncode}")
    return request.out, None


# --------------------------------------------------------------------------------------------
# claims registry


def default_claims_path() -> Path:
    """``claims/registry.toml`` of the working directory, else of the source checkout."""
    here = Path("claims") / "registry.toml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parent.parent / "claims" / "registry.toml"


def load_claims(path: str | os.PathLike) -> pd.DataFrame:
    """The claims registry as a DataFrame, one row per claim (:mod:`cram.core.claims`).

    Columns are the registry's fields (``id``, ``section``, ``claim``, ``paper``, ``status``,
    ``ours``, ``interval``, ``seeds``, ``units``, ``command``, ``summary``, ``detail``,
    ``result``, ``stale``) plus ``ours_cell``, the short "ours" cell of docs/claims.md.

    Raises
    ------
    DataError
        If the file is missing, not TOML, or breaks a rule of the registry (one line naming the
        file, the claim and the field).
    """
    from cram.core.claims import claims_frame
    from cram.core.claims import load_claims as read_registry

    return claims_frame(read_registry(path))
