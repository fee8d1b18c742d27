"""Fit folders: the files ``cram fit gamma --out DIR`` writes, and the one reader of them.

Layout::

    DIR/
      result.json     the --json document plus form, method, window, rules, seed, created,
                      inputs, command
      summary.csv     tidy az.summary (Bayesian: mean, sd, hdi_<lo>%, hdi_<hi>%, r_hat, ...) or
                      the point fits' parameter table (estimate, stderr, lower, upper, ...)
      posterior.nc    ArviZ InferenceData (Bayesian only; has delta_gamma with both groups)
      curves.csv      the tidy data actually fitted (after window and offset; column t)
      figures/*.png   fitted curves, γ forest, Δγ posterior, window sensitivity
      <name>.csv      extras: window_sensitivity, ppc, prior_predictive, prior_sensitivity,
                      loo_compare

The names are declared here once; the writer (:mod:`cram.fitting.io`, behind ``cram fit
gamma``) uses them, and every reader (``cram.fitting.load_fit``, the explorer, the notebooks)
goes through :func:`load_fit`.

Intervals are never computed here by hand: :meth:`FitFolder.hdi` takes the highest-density
interval the fit wrote into ``summary.csv`` (``az.summary``) and otherwise asks
:func:`arviz.hdi` on the stored posterior. This module imports neither pandas nor ArviZ at
import time (both are loaded inside the functions that need them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cram.core.errors import RunFolderError

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
POSTERIOR_FILE = "posterior.nc"
CURVES_FILE = "curves.csv"
FIGURES_DIR = "figures"
#: further tables a fit may write as ``<name>.csv``
EXTRA_TABLES = ("window_sensitivity", "ppc", "prior_predictive", "prior_sensitivity",
                "loo_compare")
#: methods that write no posterior (point fits; ``?`` when result.json does not say)
POINT_METHODS = ("mle", "ols", "point", "?")


@dataclass(frozen=True)
class Interval:
    """A posterior highest-density interval and where its numbers came from.

    ``source`` is ``summary.csv`` (the fit's own ``az.summary``) or ``posterior.nc`` (computed
    by :func:`arviz.hdi` on the stored draws).
    """

    low: float
    high: float
    prob: float
    source: str


@dataclass
class FitFolder:
    """A fit folder read back (see the module docstring for its files).

    ``summary`` and ``curves`` are None when missing or unreadable (then ``warnings`` says
    why; a strict read raises instead). The posterior is read on first use of :attr:`idata`.
    """

    path: Path
    result: dict
    summary: Any = None  # pandas.DataFrame or None
    curves: Any = None  # pandas.DataFrame or None
    warnings: list[str] = field(default_factory=list)
    _idata: Any = field(default=None, repr=False)
    _posterior_read: bool = field(default=False, repr=False)

    # ---- what the fit was

    @property
    def method(self) -> str:
        """The fitting method recorded in ``result.json`` (``mle``, ``bayes``, ...), or ``?``."""
        return str(self.result.get("method", "?"))

    @property
    def form(self) -> str:
        """The curve form recorded in ``result.json``, or ``?``."""
        return str(self.result.get("form", "?"))

    @property
    def window(self) -> Any:
        """The fit window recorded in ``result.json`` (None: all delays)."""
        return self.result.get("window")

    @property
    def interval_prob(self) -> float:
        """The interval level of the fit's rules (0.9 when not recorded)."""
        rules = self.result.get("rules")
        level = rules.get("interval") if isinstance(rules, dict) else None
        return float(level) if isinstance(level, (int, float)) else 0.9

    def measures(self) -> list[str]:
        """Measures of the fitted data (from ``curves.csv``, else from ``result.json``)."""
        if self.curves is not None and "measure" in self.curves.columns:
            return sorted(self.curves["measure"].astype(str).unique())
        m = self.result.get("measure") or self.result.get("measures")
        if isinstance(m, str):
            return [m]
        return [str(x) for x in m] if isinstance(m, list) else []

    def describe(self) -> str:
        """One line naming the measures, form, window and method of the fit."""
        meas = ", ".join(self.measures()) or "?"
        return (f"measure: {meas} · form: {self.form} · window: {format_window(self.window)} · "
                f"method: {self.method}")

    def inputs(self):
        """One row per fitted curve: ``group``, ``dataset``, ``curve`` (from ``curves.csv``).

        ``dataset`` is the shipped dataset's name where the data carry one, else the curve's
        source (a run folder or a user's CSV). Empty when ``curves.csv`` is missing.
        """
        import pandas as pd

        cols = ["group", "dataset", "curve"]
        c = self.curves
        if c is None or not {"curve", "group"} <= set(c.columns):
            return pd.DataFrame(columns=cols)
        src = c["source"].astype(str) if "source" in c.columns else c["curve"].astype(str)
        if "dataset" in c.columns:
            src = c["dataset"].where(c["dataset"].notna() & (c["dataset"].astype(str) != ""),
                                     src).astype(str)
        out = pd.DataFrame({"group": c["group"].astype(str), "dataset": src,
                            "curve": c["curve"].astype(str)})
        return out.drop_duplicates().reset_index(drop=True)

    # ---- files beside the main ones

    def extra(self, name: str):
        """An extra table (``window_sensitivity``, ``ppc``, ...) or None when absent."""
        import pandas as pd

        f = self.path / f"{name}.csv"
        if not f.is_file():
            return None
        try:
            return pd.read_csv(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{f}: corrupt CSV ({err})") from None

    @property
    def figures(self) -> list[Path]:
        """The PNG figures of the fit folder, sorted by name."""
        return sorted((self.path / FIGURES_DIR).glob("*.png"))

    # ---- the posterior

    @property
    def has_posterior(self) -> bool:
        """True when the folder holds a ``posterior.nc``."""
        return (self.path / POSTERIOR_FILE).is_file()

    def read_posterior(self):
        """``posterior.nc`` as ArviZ InferenceData (None when the folder has none).

        Raises
        ------
        RunFolderError
            If the file cannot be read.
        """
        nc = self.path / POSTERIOR_FILE
        if not nc.is_file():
            return None
        import arviz as az

        try:
            return az.from_netcdf(str(nc))
        except Exception as err:  # noqa: BLE001 - any netCDF failure is a corrupt folder
            raise RunFolderError(f"{nc}: cannot be read ({type(err).__name__}: {err})") from None

    @property
    def idata(self):
        """The posterior (ArviZ InferenceData), read on first use; None for point fits.

        A file that cannot be read gives None and a line in ``warnings``.
        """
        if not self._posterior_read:
            self._posterior_read = True
            try:
                self._idata = self.read_posterior()
            except RunFolderError as err:
                self.warnings.append(str(err))
        return self._idata

    @property
    def draws(self) -> dict:
        """Each scalar posterior variable's draws, flattened (chains × draws) to a 1-D array.

        Empty for point fits or when ``posterior.nc`` cannot be read.
        """
        import numpy as np

        idata = self.idata
        if idata is None or not hasattr(idata, "posterior"):
            return {}
        return {str(name): np.asarray(var.values, dtype=float).reshape(-1)
                for name, var in idata.posterior.data_vars.items()
                if set(var.dims) <= {"chain", "draw"}}

    def hdi(self, variable: str, prob: float | None = None) -> Interval | None:
        """The ``prob`` highest-density interval of a posterior variable (default: the rules').

        Taken from ``summary.csv`` (the fit's ``az.summary``) when it has the variable at that
        level, else from :func:`arviz.hdi` on ``posterior.nc``; None for a point fit or an
        unknown variable. ``variable`` may name a coordinate, e.g. ``mu_gamma[human]``.
        """
        prob = self.interval_prob if prob is None else float(prob)
        row = self._summary_row(variable)
        lo_col, hi_col = hdi_columns(prob)
        if row is not None and lo_col in row.index and hi_col in row.index:
            lo, hi = float(row[lo_col]), float(row[hi_col])
            if lo == lo and hi == hi:  # not NaN
                return Interval(lo, hi, prob, SUMMARY_FILE)
        draws = self.draws.get(variable)
        if draws is None or len(draws) == 0:
            return None
        import arviz as az

        lo, hi = (float(x) for x in az.hdi(draws, hdi_prob=prob))
        return Interval(lo, hi, prob, POSTERIOR_FILE)

    def posterior_table(self, prob: float | None = None):
        """Mean, sd and ``prob`` HDI of every summarised posterior variable (``summary.csv``).

        Columns ``variable, mean, sd, hdi_low, hdi_high``; empty for a point fit or a summary
        without HDI columns at that level.
        """
        import pandas as pd

        cols = ["variable", "mean", "sd", "hdi_low", "hdi_high"]
        prob = self.interval_prob if prob is None else float(prob)
        lo_col, hi_col = hdi_columns(prob)
        s = self.summary
        if s is None or not {"variable", "mean", lo_col, hi_col} <= set(s.columns):
            return pd.DataFrame(columns=cols)
        out = s.rename(columns={lo_col: "hdi_low", hi_col: "hdi_high"})
        if "sd" not in out.columns:
            out = out.assign(sd=float("nan"))
        return out[cols].reset_index(drop=True)

    def _summary_row(self, variable: str):
        s = self.summary
        if s is None or "variable" not in s.columns:
            return None
        hit = s[s["variable"].astype(str) == variable]
        return hit.iloc[0] if len(hit) else None


def hdi_columns(prob: float) -> tuple[str, str]:
    """The column names ``az.summary`` gives a ``prob`` HDI (``hdi_5%``, ``hdi_95%`` at 0.9)."""
    return f"hdi_{100 * (1 - prob) / 2:g}%", f"hdi_{100 * (1 + prob) / 2:g}%"


def format_window(window: Any) -> str:
    """A fit window in words (``None`` means all delays)."""
    if window is None:
        return "all delays"
    if isinstance(window, dict):
        return "; ".join(f"{k}: {format_window(v)}" for k, v in window.items())
    if isinstance(window, (list, tuple)) and len(window) == 2:
        lo, hi = window
        lo = "0" if lo is None else f"{lo:g}" if isinstance(lo, (int, float)) else str(lo)
        hi = "∞" if hi is None else f"{hi:g}" if isinstance(hi, (int, float)) else str(hi)
        return f"[{lo}, {hi}]"
    return str(window)


def _read_result(path: Path) -> dict:
    rfile = path / RESULT_FILE
    if not rfile.is_file():
        raise RunFolderError(f"{path}: missing {RESULT_FILE}; is this a 'cram fit --out' folder?")
    try:
        result = json.loads(rfile.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{rfile}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{rfile}: not UTF-8 text") from None
    if not isinstance(result, dict):
        raise RunFolderError(f"{rfile}: expected a JSON object")
    return result


def load_fit(path: str | os.PathLike, *, strict: bool = True) -> FitFolder:
    """Read a fit folder written by ``cram fit gamma --out DIR``.

    Parameters
    ----------
    path : path
        The fit folder.
    strict : bool
        True (the default): ``summary.csv`` and ``curves.csv`` must be there and readable, and
        ``posterior.nc`` is read now. False (for display): only ``result.json`` is required;
        other missing or unreadable files become ``warnings`` and the posterior is read on
        first use.

    Raises
    ------
    RunFolderError
        If the folder or ``result.json`` is missing or corrupt, or (strict) one of the other
        files is.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such fit folder")
    fit = FitFolder(path=path, result=_read_result(path))
    for attr, fname in (("summary", SUMMARY_FILE), ("curves", CURVES_FILE)):
        f = path / fname
        if not f.is_file():
            if strict:
                raise RunFolderError(f"{path}: missing {fname}; is this a cram fit folder?")
            fit.warnings.append(f"{path}: no {fname}")
            continue
        try:
            setattr(fit, attr, pd.read_csv(f))
        except (ValueError, UnicodeDecodeError) as err:  # ParserError, EmptyDataError, bytes
            if strict:
                raise RunFolderError(f"{f}: corrupt CSV ({err})") from None
            fit.warnings.append(f"{f}: cannot be read as CSV ({err})")
    if strict:
        fit._idata, fit._posterior_read = fit.read_posterior(), True
    elif not fit.has_posterior and fit.method not in POINT_METHODS:
        fit.warnings.append(f"{path}: no {POSTERIOR_FILE}")
    return fit


def _hidden_below(path: Path, root: Path) -> bool:
    """True when a folder between ``root`` and ``path`` is hidden (``.name``)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(part.startswith(".") for part in parts)


def find_fits(root: str | os.PathLike) -> list[Path]:
    """Every fit folder (one holding a ``result.json``) at or below ``root``, newest first.

    Hidden folders (the temp folder of a fit being written, or left by a killed one:
    ``.NAME.tmp-<pid>-XXXX``) and checkpoint folders are skipped.
    """
    root = Path(root)
    if not root.exists():
        return []
    found = {p.parent for p in root.rglob(RESULT_FILE)
             if "checkpoints" not in p.parts and not _hidden_below(p.parent, root)}
    return sorted(found, key=lambda p: (-(p / RESULT_FILE).stat().st_mtime, str(p)))


__all__ = ["CURVES_FILE", "EXTRA_TABLES", "FIGURES_DIR", "POSTERIOR_FILE", "RESULT_FILE",
           "SUMMARY_FILE", "FitFolder", "Interval", "find_fits", "format_window", "hdi_columns",
           "load_fit"]
