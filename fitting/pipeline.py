"""The scripted γ fit behind ``cram fit gamma``: gather curves, fit, write the fit folder.

Kept here (not in the CLI module) so that notebooks and scripts run exactly what the CLI runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from cram.core.errors import ConfigError, DataError
from cram.fitting.forms import get_form
from cram.fitting.io import (
    CURVES_FILE,
    FIGURES_DIR,
    POSTERIOR_FILE,
    SUMMARY_FILE,
    FitFolderWriter,
    check_out_free,
    created_stamp,
    write_result_json,
)
from cram.fitting.mle import fit_mle_many
from cram.fitting.results import GammaFit, PointFits
from cram.fitting.rules import ComparisonRules
from cram.fitting.sensitivity import describe, window_sensitivity

METHODS = ("mle", "ols", "bayes")


def _log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def gather_curves(runs=(), humans=(), human_csvs=(), curve_kind: str = "episodic_reliance"
                  ) -> pd.DataFrame:
    """One tidy table from run folders, shipped datasets and user CSVs."""
    from cram.psych_data import load_curves_csv, load_dataset

    frames = []
    if runs:
        from cram.fitting.model_curves import model_curves

        frames.append(model_curves(list(runs), kind=curve_kind))
    frames += [load_dataset(h) for h in humans]
    frames += [load_curves_csv(f) for f in human_csvs]
    if not frames:
        raise ConfigError("nothing to fit: give --run DIR, --human NAME or --human-csv FILE")
    df = pd.concat(frames, ignore_index=True)
    dup = df.groupby("curve")["source"].nunique()
    if (dup > 1).any():
        raise DataError(f"curve ids clash between inputs: {list(dup[dup > 1].index)[:3]}")
    if df.duplicated(["curve", "delay_value"]).any():
        c = df.loc[df.duplicated(["curve", "delay_value"]), "curve"].iloc[0]
        raise DataError(f"curve {c!r} is given twice (same dataset or file passed twice?)")
    return df


def _check(method: str, rules: ComparisonRules, loo_forms, out) -> None:
    """Refuse an unknown method or form, OLS on a non-power form, or an existing ``out``."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if method == "ols" and rules.form != "power":
        raise ConfigError("--method ols fits the power form only (log-log regression)")
    for f in loo_forms:
        get_form(f)
    if out is not None:
        check_out_free(out)


def _fit(df: pd.DataFrame, rules: ComparisonRules, method: str, sampling: dict,
         hierarchical: bool | None, cache: dict | None = None) -> GammaFit:
    """Point fits of every curve (mle, ols) or one Bayesian fit of all of them (bayes).

    ``cache`` collects the MLE fits, so that the window sensitivity reuses a fit of the same
    points (see :func:`~cram.fitting.mle.fit_mle`).
    """
    if method in ("mle", "ols"):
        fits = fit_mle_many(df, rules, method=method, likelihood=sampling["likelihood"],
                            seed=sampling["seed"], progress=sampling["progress"], cache=cache)
        return PointFits(fits, rules, df)
    from cram.fitting.bayes import fit_bayes

    _log(f"cram fit: Bayesian {rules.form} fit of {df['curve'].nunique()} curve(s), "
         f"{sampling['chains']} chains x {sampling['draws']} draws, sampler "
         f"{sampling['sampler']}, seed {sampling['seed']}")
    return fit_bayes(df, rules, hierarchical=hierarchical, **sampling)


def _loo_comparison(df, rules: ComparisonRules, loo_forms, sampling: dict,
                    hierarchical: bool | None, doc: dict, fits: dict) -> pd.DataFrame:
    """Fit each form, rank them by LOO; failed diagnostics of other forms are added to ``doc``.

    ``fits`` holds Bayesian fits already made under the same rules (the main fit, the form
    check's alternatives); those forms are not fitted again.
    """
    from cram.fitting.bayes import compare_forms

    forms = list(dict.fromkeys([rules.form, *loo_forms]))
    _log(f"cram fit: LOO comparison of forms {forms}")
    cmp, fits = compare_forms(df, forms, rules, fits=fits, prior_sensitivity=False,
                              hierarchical=hierarchical, **sampling)
    cmp["diagnostics_ok"] = [fits[f].diagnostics["ok"] for f in cmp["form"]]
    cmp["pareto_k_gt_0.7"] = [fits[f].loo["n_pareto_k_gt_0.7"] for f in cmp["form"]]
    for f, r in fits.items():
        if not r.diagnostics["ok"] and f != rules.form:
            doc["diagnostics"]["warnings"].append(
                f"LOO comparison, form {f}: " + "; ".join(r.diagnostics["warnings"]))
            doc["diagnostics"]["ok"] = False
    doc["loo_compare"] = cmp[["form", "rank", "elpd_loo", "se", "dse", "weight",
                              "diagnostics_ok", "pareto_k_gt_0.7"]].to_dict("records")
    return cmp


def _form_check(df: pd.DataFrame, rules: ComparisonRules, method: str, fit: GammaFit,
                sampling: dict, hierarchical: bool | None, cache: dict, bayes_fits: dict):
    """Check every curve's form against the alternatives (:mod:`cram.fitting.form_check`).

    Point fits (mle, ols): MLE fits of each form, compared by ΔAIC/2. Bayesian fits: the
    alternatives are fitted under the same rules and sampler settings (added to ``bayes_fits``)
    and compared by PSIS-LOO. Returns ``({curve: record}, table)``.
    """
    from cram.fitting.form_check import check_bayes_fits, check_point_fits, forms_to_check

    forms = forms_to_check(rules.form)
    if method in ("mle", "ols"):
        if sampling["progress"]:
            _log(f"cram fit: form check: {rules.form} against {forms[1:]} (MLE, ΔAIC/2)")
        return check_point_fits(df, rules, likelihood=sampling["likelihood"],
                                seed=sampling["seed"], cache=cache,
                                progress=sampling["progress"])
    bayes_fits[rules.form] = fit
    for f in forms[1:]:
        if f not in bayes_fits:
            bayes_fits[f] = _alternative_bayes(df, rules, f, sampling, hierarchical)
    return check_bayes_fits(bayes_fits, rules.form, rules.interval)


def _alternative_bayes(df, rules: ComparisonRules, form: str, sampling: dict,
                       hierarchical: bool | None):
    """A Bayesian fit of another form for the form check (LOO terms only), or why it failed."""
    from dataclasses import replace

    from cram.core.errors import CramError
    from cram.fitting.bayes import fit_bayes

    # forms without γ have nothing to pool: their curves are fitted side by side (NUTS at the
    # per-curve target acceptance)
    h = hierarchical if get_form(form).has_gamma else False
    _log(f"cram fit: form check: Bayesian {form} fit of {df['curve'].nunique()} curve(s)")
    try:
        return fit_bayes(df, replace(rules, form=form), hierarchical=h, prior_predictive=False,
                         posterior_predictive=False, loo=True, prior_sensitivity=False,
                         **sampling)
    except CramError as err:
        return str(err)


def _mark_summary(summary: pd.DataFrame, doc: dict, method: str) -> pd.DataFrame:
    """``summary.csv`` with a column ``gamma_valid``: false where the form check failed.

    Point fits: every row of the curve; Bayesian fits: the rows ``gamma[curve]`` and the group
    rows ``mu_gamma[group]`` (and ``delta_gamma``), empty elsewhere.
    """
    valid = {str(r["curve"]): r.get("gamma_valid") for r in doc["curves"]}
    summary = summary.copy()
    if method in ("mle", "ols"):
        summary["gamma_valid"] = summary["curve"].astype(str).map(valid)
        return summary
    col = []
    for param, coord in zip(summary["param"], summary["coord"]):
        if param == "gamma":
            col.append(valid.get(str(coord)))
        elif param == "mu_gamma":
            col.append(valid.get(f"group:{coord}"))
        elif param == "delta_gamma":
            col.append((doc.get("delta_gamma") or {}).get("gamma_valid"))
        else:
            col.append(None)
    summary["gamma_valid"] = col
    return summary


def _write_folder(out, doc: dict, fit: GammaFit, extras: dict, rules: ComparisonRules,
                  figures: bool, summary: pd.DataFrame | None = None) -> None:
    """The fit folder: result.json, summary, fitted curves, extra tables, posterior, figures."""
    with FitFolderWriter(out) as w:
        write_result_json(w.path, doc)
        (fit.to_frame() if summary is None else summary).to_csv(w.path / SUMMARY_FILE,
                                                                 index=False)
        fitted = fit.fitted
        fitted.to_csv(w.path / CURVES_FILE, index=False)
        for name, table in extras.items():
            table.to_csv(w.path / f"{name}.csv", index=False)
        if fit.idata is not None:
            fit.idata.to_netcdf(str(w.path / POSTERIOR_FILE))
        if figures:
            _figures(w.path / FIGURES_DIR, fitted, fit.predict, doc, fit.idata, fit.ppc, extras,
                     rules)
    _log(f"cram fit: wrote {out}")


def fit_gamma(df: pd.DataFrame, rules: ComparisonRules, method: str = "bayes", *,
              out: str | Path | None = None, seed: int = 0, likelihood: str = "auto",
              draws: int = 1000, tune: int = 1000, chains: int = 2, sampler: str | None = None,
              target_accept: float | None = None, figures: bool = True,
              window_sens: bool = True, loo_forms=(),
              hierarchical: bool | None = None, progress: bool = True,
              form_check: bool = True, argv: list[str] | None = None) -> dict:
    """Fit γ for every curve of ``df`` under ``rules``; write ``out`` if given; return the doc.

    The returned document is what ``--json`` prints: ``curves`` (one entry per curve, plus
    ``group:human`` / ``group:model`` entries for hierarchical fits), ``delta_gamma`` (or None)
    and ``diagnostics``. Every method returns a :class:`~cram.fitting.results.GammaFit`, so
    what follows the fit does not depend on the method.

    ``form_check`` (default on) checks each curve's form against the alternatives of
    :mod:`cram.fitting.form_check`: each curve gets ``form_check`` (the verdict in words) and
    ``gamma_valid`` (false: the form fails, so γ is not a property of that curve), and the
    document gets ``form_check`` (method and criteria); the table is ``form_check.csv``.
    """
    _check(method, rules, loo_forms, out)
    if method == "bayes" and sampler is None:
        from cram.fitting.bayes import DEFAULT_SAMPLER  # point fits never import PyMC's module

        sampler = DEFAULT_SAMPLER
    sampling = dict(likelihood=likelihood, draws=draws, tune=tune, chains=chains,
                    sampler=sampler, seed=seed, progress=progress, target_accept=target_accept)
    cache: dict = {}  # MLE fits by what determines them, shared with the window sensitivity
    fit = _fit(df, rules, method, sampling, hierarchical, cache)
    doc = fit.to_json_doc()
    extras = fit.tables()
    bayes_fits: dict = {rules.form: fit} if method == "bayes" else {}
    if form_check:
        from cram.fitting.form_check import apply_to_doc, fit_notes

        records, table = _form_check(df, rules, method, fit, sampling, hierarchical, cache,
                                     bayes_fits)
        apply_to_doc(doc, records, rules.form, method, rules.interval,
                     fit_notes(bayes_fits, rules.form) if method == "bayes" else None)
        extras["form_check"] = table
    if loo_forms and method == "bayes":
        extras["loo_compare"] = _loo_comparison(df, rules, loo_forms, sampling, hierarchical, doc,
                                                bayes_fits)
    if window_sens and get_form(rules.form).has_gamma:
        # the Bayesian fit pools derived curves away; the point fits keep them. Point fits use
        # the fit's likelihood, so the window "all" is the main fit; beside a Bayesian fit the
        # MLE's own default ("auto": binomial with trial counts, else normal)
        ws = window_sensitivity(
            df[~df["derived"]] if method == "bayes" else df, rules, progress=progress,
            cache=cache, likelihood=likelihood if method == "mle" else "auto")
        valid = {str(r["curve"]): r.get("gamma_valid") for r in doc["curves"]}
        ws["gamma_valid"] = ws["curve"].astype(str).map(valid)
        extras["window_sensitivity"] = ws
        doc["window_sensitivity"] = describe(rules, ws["likelihood"], method)
        if progress:
            _log(f"cram fit: window sensitivity: {doc['window_sensitivity']['statement']}")
    for w in doc["diagnostics"].get("warnings", []):
        _log(f"cram fit: WARNING: {w}")
    doc = {**doc, "form": rules.form, "method": method,
           "window": list(rules.window) if rules.window else None, "rules": rules.to_dict(),
           "seed": seed, "created": created_stamp(),
           "inputs": sorted(set(df["source"].astype(str)))}
    if argv is not None:
        doc["command"] = argv
    if out is not None:
        summary = _mark_summary(fit.to_frame(), doc, method) if form_check else None
        _write_folder(out, doc, fit, extras, rules, figures, summary)
    return doc


def _figures(fig_dir, fitted, predict, doc, idata, ppc, extras, rules):
    from cram.fitting import plots

    plots.plot_curves_fit(fitted, predict, fig_dir / "curves.png",
                          f"{doc.get('method', '')} fit, form {rules.form}", ppc=ppc)
    table = pd.DataFrame(doc["curves"])
    if "gamma" in table and table["gamma"].notna().any():
        plots.plot_gamma_forest(table, fig_dir / "gamma_forest.png",
                                f"γ per curve ({rules.interval:.0%} intervals)")
    if idata is not None and "delta_gamma" in idata.posterior:
        plots.plot_delta(idata.posterior["delta_gamma"].values.ravel(), rules.rope,
                         fig_dir / "delta_gamma.png")
    if "prior_predictive" in extras:
        plots.plot_curves_fit(fitted, lambda cid, t: None, fig_dir / "prior_predictive.png",
                              f"prior predictive check ({rules.interval:.0%} bands), form "
                              f"{rules.form}", ppc=extras["prior_predictive"])
    if "window_sensitivity" in extras:
        plots.plot_window_sensitivity(
            extras["window_sensitivity"], fig_dir / "window_sensitivity.png",
            subtitle=(doc.get("window_sensitivity") or {}).get("statement", ""))


def rules_from_args(form: str, window, offset, rope: float, interval: float) -> ComparisonRules:
    """Comparison rules from CLI-style values (``window`` as ``"A:B"`` or a pair)."""
    from cram.fitting.rules import parse_window

    w = parse_window(window) if isinstance(window, (str, type(None))) else tuple(window)
    return ComparisonRules(form=form, window=w, offset=offset, rope=rope, interval=interval)


__all__ = ["fit_gamma", "gather_curves", "rules_from_args"]
