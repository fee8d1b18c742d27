"""Fixture fit folders for the explorer's tests and the notebooks (no PyMC, a few seconds).

:func:`write_laplace_fit` writes a folder that follows the ``cram fit gamma --out`` contract
(``result.json``, ``summary.csv``, ``posterior.nc`` with ``delta_gamma``, ``curves.csv``, named
by :mod:`cram.core.fits`) from *real* point fits of the curves it is given: each curve's MLE γ
and its standard error, pooled per group by inverse-variance weighting, and draws from the
resulting normal (Laplace) approximation; Δγ is summarised by the fit's own
:func:`cram.fitting.bayes.rope_statement`, so ``result.json`` has the keys of a real fit.
It is not the hierarchical Bayesian fit of ``cram fit gamma``; it exists so that
the app and the notebooks can be exercised on fixtures without sampling, and it says so in
``result.json`` (``method: "laplace-fixture"``).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from cram.core.errors import DataError, RunFolderError
from cram.core.fits import CURVES_FILE, POSTERIOR_FILE, RESULT_FILE, SUMMARY_FILE


def pooled_gamma(fits: list) -> tuple[float, float]:
    """Inverse-variance weighted mean of per-curve γ and its standard error."""
    g = np.array([f.params["gamma"] for f in fits], dtype=float)
    se = np.array([f.stderr.get("gamma", np.nan) for f in fits], dtype=float)
    ok = np.isfinite(g) & np.isfinite(se) & (se > 0)
    if not ok.any():
        raise DataError("no curve has a finite γ standard error to pool")
    w = 1.0 / se[ok] ** 2
    return float(np.sum(w * g[ok]) / np.sum(w)), float(np.sqrt(1.0 / np.sum(w)))


def write_laplace_fit(out: str | Path, curves: pd.DataFrame, form: str = "power",
                      window: tuple[float, float] | None = None, offset: float | None = 1.0,
                      seed: int = 0, draws: int = 1000, chains: int = 2) -> Path:
    """Write a fit folder for ``curves`` (tidy table holding model and human curves).

    Parameters
    ----------
    out : path
        New folder; an existing one is an error (nothing is overwritten).
    curves : DataFrame
        Tidy curve table with both groups; derived curves are left out, as in pooled fits.
    form, window, offset
        The comparison rules (see :class:`cram.fitting.ComparisonRules`); the form needs a γ.
    seed : int
        Seed of the normal draws.
    draws, chains : int
        Posterior size (chains × draws).

    Returns
    -------
    Path
        The folder written.
    """
    import arviz as az

    from cram.core.jsonio import atomic_write_json, atomic_write_text
    from cram.fitting import ComparisonRules, apply_rules, fit_mle, get_form
    from cram.fitting.bayes import rope_statement  # a pure function; PyMC is not loaded

    out = Path(out)
    if out.exists():
        raise RunFolderError(f"{out}: already exists; not overwriting a fit folder")
    if not get_form(form).has_gamma:
        raise DataError(f"form {form!r} has no power exponent γ")
    rules = ComparisonRules(form=form, window=window, offset=offset)
    used = apply_rules(curves, rules, pooled=True, where="fixture curves")
    fits = {}
    for cid, sub in curves[~curves["derived"].astype(bool)].groupby("curve", sort=False):
        fits[cid] = fit_mle(sub, form=form, window=window, offset=offset, seed=seed)
    groups = {}
    for g in ("model", "human"):
        members = [f for cid, f in fits.items()
                   if curves.loc[curves["curve"] == cid, "group"].iloc[0] == g]
        if not members:
            raise DataError(f"fixture fit needs at least one {g} curve")
        groups[g] = pooled_gamma(members)
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    # shapes: (chain, draw)
    g_model = rng.normal(groups["model"][0], groups["model"][1], size=shape)
    g_human = rng.normal(groups["human"][0], groups["human"][1], size=shape)
    idata = az.from_dict(posterior={"gamma_model": g_model, "gamma_human": g_human,
                                    "delta_gamma": g_model - g_human})
    out.mkdir(parents=True)
    idata.to_netcdf(str(out / POSTERIOR_FILE))
    summary = az.summary(idata, hdi_prob=rules.interval).reset_index(names="variable")
    atomic_write_text(out / SUMMARY_FILE, summary.to_csv(index=False))
    atomic_write_text(out / CURVES_FILE, used.to_csv(index=False))
    delta = rope_statement((g_model - g_human).reshape(-1), rules.rope, rules.interval)
    atomic_write_json(out / RESULT_FILE, {
        "form": form, "method": "laplace-fixture", "window": list(window) if window else None,
        "rules": rules.to_dict(), "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measure": sorted(used["measure"].astype(str).unique()),
        "gamma_model": {"mean": groups["model"][0], "sd": groups["model"][1]},
        "gamma_human": {"mean": groups["human"][0], "sd": groups["human"][1]},
        "delta_gamma": delta,
        "curves": {cid: {"gamma": f.params.get("gamma"), "se": f.stderr.get("gamma")}
                   for cid, f in fits.items()},
        "note": "fixture: normal approximation from per-curve MLE fits, not a PyMC fit",
    })
    return out
