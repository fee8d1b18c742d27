"""One interface over a γ fit of many curves, point (MLE/OLS) or Bayesian.

:func:`cram.fitting.pipeline.fit_gamma` writes a fit folder from any :class:`GammaFit` without
asking which kind it holds. :class:`PointFits` wraps the per-curve
:class:`~cram.fitting.mle.PointFitResult` list; :class:`~cram.fitting.bayes.BayesFitResult`
implements the same members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from cram.fitting.mle import PointFitResult, curve_groups
from cram.fitting.rules import ComparisonRules, apply_rules


@runtime_checkable
class GammaFit(Protocol):
    """What a γ fit of a set of curves offers to the pipeline, the folder writer and the plots.

    Attributes
    ----------
    gamma_table : DataFrame
        One row per curve (and per group for hierarchical fits): ``curve``, ``group``,
        ``gamma``, ``gamma_low``, ``gamma_high`` (None where the form has no γ).
    fitted : DataFrame
        The tidy data actually fitted, with the rules applied (``curves.csv``).
    idata : InferenceData or None
        Posterior draws (Bayesian fits only).
    ppc : DataFrame or None
        Posterior predictive bands per point (Bayesian fits only).
    """

    gamma_table: pd.DataFrame
    fitted: pd.DataFrame
    idata: object | None
    ppc: pd.DataFrame | None

    def to_json_doc(self) -> dict:
        """The result document: ``curves``, ``delta_gamma``, ``diagnostics`` (and more)."""

    def to_frame(self) -> pd.DataFrame:
        """Tidy parameter summary, one row per parameter (``summary.csv``)."""

    def predict(self, curve: str, t) -> np.ndarray | None:
        """The fitted curve at fitted times ``t``, or None when it cannot be drawn."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Further tables to write as ``<name>.csv`` (checks, sensitivity)."""


@dataclass
class PointFits:
    """Point fits of several curves (one :class:`PointFitResult` each) as a :class:`GammaFit`."""

    fits: list[PointFitResult]
    rules: ComparisonRules
    data: pd.DataFrame  # the tidy input, columns curve, group, ...
    idata: object | None = None
    ppc: pd.DataFrame | None = None

    @property
    def _alpha(self) -> float:
        return 1 - self.rules.interval

    def _curve_row(self, f: PointFitResult, group_of: dict) -> dict:
        ci, g = f.conf_int(self._alpha), f.gamma
        return {"curve": f.curve, "group": group_of.get(f.curve), "gamma": g,
                "gamma_low": float(ci.loc["gamma", "lower"]) if g is not None else None,
                "gamma_high": float(ci.loc["gamma", "upper"]) if g is not None else None,
                "gamma_stderr": f.stderr.get("gamma") if g is not None else None,
                "params": f.params, "stderr": f.stderr, "likelihood": f.likelihood,
                "loglik": f.loglik, "aic": f.aic, "bic": f.bic, "n_points": f.n_obs,
                "converged": f.converged}

    def _warnings(self) -> list[str]:
        warn = []
        for f in self.fits:
            if not f.converged:
                warn.append(f"{f.curve}: optimiser did not converge ({f.message})")
            if f.gamma is not None and not np.isfinite(f.stderr.get("gamma", np.nan)):
                warn.append(f"{f.curve}: γ standard error undefined (singular Hessian or bound)")
        return warn

    def to_json_doc(self) -> dict:
        """``curves`` (one row per curve), ``delta_gamma`` (None) and ``diagnostics``."""
        group_of = dict(zip(self.data["curve"], self.data["group"]))
        warn = self._warnings()
        return {"curves": [self._curve_row(f, group_of) for f in self.fits],
                "delta_gamma": None,
                "diagnostics": {"converged_all": all(f.converged for f in self.fits),
                                "warnings": warn, "ok": not warn}}

    @property
    def gamma_table(self) -> pd.DataFrame:
        """γ and its interval per curve."""
        rows = self.to_json_doc()["curves"]
        return pd.DataFrame(rows)[["curve", "group", "gamma", "gamma_low", "gamma_high"]]

    @property
    def fitted(self) -> pd.DataFrame:
        """The fitted points of every curve, rules applied."""
        groups = curve_groups(self.data)  # one pass over the rows, not one scan per curve
        return pd.concat([apply_rules(groups[f.curve], self.rules) for f in self.fits],
                         ignore_index=True)

    def to_frame(self) -> pd.DataFrame:
        """Every curve's parameter table, stacked."""
        return pd.concat([f.to_frame(self._alpha) for f in self.fits], ignore_index=True)

    def predict(self, curve: str, t) -> np.ndarray:
        """The point fit of ``curve`` at fitted times ``t``."""
        return {f.curve: f for f in self.fits}[curve].predict(t)

    def tables(self) -> dict[str, pd.DataFrame]:
        """No further tables for point fits."""
        return {}
