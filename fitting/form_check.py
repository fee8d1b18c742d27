"""Does the fitted form describe the curve? A check of every curve before its γ is offered.

A γ is a property of a curve only when the power form describes the curve. Each curve's fitted
form is checked two ways, and the verdict is written in words:

- **Predictive coverage**: the share of the curve's points inside their predictive interval at
  the rules' level (90%). Bayesian fits: the posterior predictive interval of each point
  (``ppc.csv``). Point fits: the interval of the fitted likelihood at the MLE (normal: σ rescaled
  to ``n / (n − p)`` with t quantiles on ``n − p`` degrees of freedom, ``p`` the curve's
  parameters; beta: Beta(μφ, (1 − μ)φ); binomial: quantiles of the count). The form fails when
  clearly fewer points are inside than the level promises: a one-sided binomial test against
  the level gives ``p < COVERAGE_ALPHA``.
- **Comparison with alternative forms** (:data:`ALTERNATIVES`: power, exponential, hyperbolic
  and the logistic step of a transition), each fitted to the same points under the same rules
  and likelihood. Bayesian fits: PSIS-LOO (``az.loo``, pointwise), summed over the curve's
  points: ``ΔELPD`` of an alternative against the checked form, with ``dse = sqrt(n · var)`` of
  the pointwise differences (what ``az.compare`` reports). Point fits: the same comparison on
  the AIC scale, ``ΔAIC/2 = Δ(log L − k)`` (AIC estimates −2 × the expected log predictive
  density of new points), with the standard error of the pointwise log-likelihood differences
  (as in Vuong's 1989 test of non-nested models); Akaike weights are reported too.
  Leave-one-point-out refits are not used for point fits: on a curve with one point inside a
  step, a refit without that point puts the step anywhere between its neighbours with no
  uncertainty, and a plug-in prediction then loses hundreds of log units on that one point,
  which says more about the plug-in than about the form. The form fails when an alternative is
  ahead by more than :data:`MIN_DELTA` and by more than :data:`DSE_FACTOR` standard errors.

A curve whose form fails keeps its γ in every output, marked ``gamma_valid: false`` with the
verdict, e.g. "not a power law: a logistic step fits better (ΔELPD = 33.5 ± 4.5); γ is not a
property of this curve".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from cram.core.errors import CramError
from cram.fitting.forms import get_form
from cram.fitting.likelihoods import loglik_beta, loglik_binomial, loglik_normal, squeeze01

#: the forms every curve's form is compared with (the checked form itself is one of them or added)
ALTERNATIVES = ("power", "exponential", "hyperbolic", "logistic")
#: an alternative ahead by less than this (ELPD units) is within the noise, whatever its se
MIN_DELTA = 4.0
#: ... and it must be ahead by more than this many standard errors of the difference
DSE_FACTOR = 2.0
#: coverage fails when a one-sided binomial test against the nominal level gives p below this
COVERAGE_ALPHA = 0.01

#: each form in words, for the verdicts ("not a power law: ...")
FORM_WORDS = {
    "power": "a power law",
    "wickelgren": "a Wickelgren (offset) power law",
    "fsrs": "an FSRS power curve",
    "power_asymptote": "a power law with an asymptote",
    "exponential": "an exponential",
    "exponential_floor": "an exponential with a floor",
    "hyperbolic": "a hyperbola",
    "logarithmic": "a logarithmic curve",
    "logistic": "a logistic step",
}

METHOD_WORDS = {
    "bayes": ("PSIS-LOO of the Bayesian fits (az.loo, pointwise, summed over the curve's points); "
              "coverage: posterior predictive intervals"),
    "mle": ("maximum-likelihood fits compared by ΔAIC/2 = Δ(log L − k), on the scale of ΔELPD, "
            "with the standard error of the pointwise log-likelihood differences (Vuong 1989) "
            "and Akaike weights; coverage: predictive intervals of the fitted likelihood"),
}


def forms_to_check(form: str) -> list[str]:
    """The checked form first, then the alternatives it is compared with."""
    return [form, *(f for f in ALTERNATIVES if f != form)]


def criteria_text(level: float) -> str:
    """The failing rules in words (written into every result)."""
    return (f"a form fails when clearly fewer of a curve's points than {level:.0%} lie inside "
            f"their {level:.0%} predictive interval (one-sided binomial test, p < "
            f"{COVERAGE_ALPHA:g}), or when an alternative form is ahead of it by more than "
            f"{MIN_DELTA:g} in ELPD (ΔAIC/2 for point fits) and by more than {DSE_FACTOR:g} "
            "standard errors of the difference; a γ is offered as a property of a curve only "
            "when its form passes")


@dataclass
class FormScore:
    """One form's fit of one curve: pointwise scores, coverage, and what went wrong."""

    form: str
    pointwise: np.ndarray | None = None  # per point: LOO elpd (Bayes) or log-likelihood (MLE)
    score: float | None = None  # elpd_loo (Bayes) or log L − k (MLE)
    se: float | None = None
    inside: np.ndarray | None = None  # per point: inside its predictive interval
    pareto_bad: int = 0  # points with Pareto k > 0.7 (Bayes)
    note: str = ""  # why it was not fitted, or failed diagnostics


def _binom_p(n_inside: int, n: int, level: float) -> float:
    return float(stats.binom.cdf(n_inside, n, level))


def judge(curve: str, form: str, scores: dict[str, FormScore], *, level: float, method: str
          ) -> tuple[dict, list[dict]]:
    """The verdict on ``form`` for one curve, and one table row per compared form.

    ``method`` is ``"bayes"`` (scores are PSIS-LOO) or ``"mle"`` (scores are log L − k).
    """
    has_gamma = get_form(form).has_gamma
    label = "ΔELPD" if method == "bayes" else "ΔAIC/2"
    main = scores.get(form)
    record = {"form": form, "method": METHOD_WORDS["bayes" if method == "bayes" else "mle"],
              "interval": level, "forms": list(scores)}
    if main is None or main.pointwise is None:
        note = main.note if main is not None else "not fitted"
        record.update(passes=None, verdict=f"not checked: the {form} fit is missing ({note})",
                      coverage=None, n_inside=None, n_points=None, coverage_p=None,
                      ranking=[], beaten_by=None)
        return record, []
    n = len(main.pointwise)
    fitted = {f: s for f, s in scores.items() if s.pointwise is not None}
    order = sorted(fitted, key=lambda f: -fitted[f].score)
    weights = _weights({f: fitted[f].score for f in fitted})
    rows, ahead = [], []
    for f, s in scores.items():
        row = {"curve": curve, "checked_form": form, "form": f,
               "rank": order.index(f) + 1 if f in fitted else None,
               "score": s.score, "se": s.se, "delta": None, "dse": None,
               "weight": weights.get(f), "coverage": None, "pareto_k_gt_0.7": s.pareto_bad,
               "note": s.note}
        if s.inside is not None and len(s.inside):
            row["coverage"] = float(np.mean(s.inside))
        if f in fitted and f != form:
            diff = s.pointwise - main.pointwise
            delta, dse = float(diff.sum()), float(math.sqrt(n * np.var(diff)))
            row.update(delta=delta, dse=dse)
            if delta > MIN_DELTA and delta > DSE_FACTOR * dse:
                ahead.append((delta, dse, f))
        rows.append(row)
    cov_fail, cov_text, cov = _coverage(main, level, n)
    beaten = max(ahead) if ahead else None
    name = FORM_WORDS.get(form, f"the {form} form")
    reasons = []
    if cov_fail:
        reasons.append(cov_text)
    if beaten is not None:
        d, se, f = beaten
        reasons.append(f"{FORM_WORDS.get(f, f)} fits better ({label} = {d:.1f} ± {se:.1f})")
    if reasons:
        verdict = f"not {name}: " + "; ".join(reasons)
        if has_gamma:
            verdict += "; γ is not a property of this curve"
    else:
        parts = [f"{name} passes"] + ([cov_text] if cov_text else [])
        parts.append(_ranking_text(form, order, rows, label))
        verdict = ": ".join(parts[:2]) + "".join(f"; {p}" for p in parts[2:])
        if has_gamma:
            verdict += "; γ describes this curve"
    notes = [f"{f}: {s.note}" for f, s in scores.items() if s.note]
    # in the verdict: forms that could not be fitted, and unreliable LOO terms of the two forms
    # the verdict rests on (the checked one and the one ahead of it, or the next one)
    shown = [f"{f} {s.note}" for f, s in scores.items() if s.note.startswith("not fitted")]
    other = beaten[2] if beaten else next((f for f in order if f != form), None)
    bad_k = [(f, scores[f].pareto_bad) for f in (form, other) if f and scores[f].pareto_bad]
    if bad_k:
        text = ("PSIS-LOO unreliable at " + " and ".join(
            f"{k} of this curve's points in the {f} fit" for f, k in bad_k) + " (Pareto k > 0.7)")
        shown.append(text)
        notes.append(text)
    if shown:
        verdict += " (" + "; ".join(shown) + ")"
    record.update(passes=not reasons, verdict=verdict, **cov,
                  ranking=[{k: r[k] for k in ("form", "rank", "score", "se", "delta", "dse",
                                                "weight", "coverage")}
                           for r in sorted(rows, key=lambda r: r["rank"] or 99)],
                  beaten_by=beaten[2] if beaten else None,
                  delta=beaten[0] if beaten else None, dse=beaten[1] if beaten else None,
                  notes=notes)
    return record, rows


def _coverage(main: FormScore, level: float, n: int) -> tuple[bool, str, dict]:
    """Whether the checked form's predictive band covers too few points; its words; its record."""
    if main.inside is None or not len(main.inside):
        return False, "", {"coverage": None, "n_inside": None, "n_points": n, "coverage_p": None}
    k_in = int(np.sum(main.inside))
    p = _binom_p(k_in, len(main.inside), level)
    cov = {"coverage": k_in / len(main.inside), "n_inside": k_in,
           "n_points": len(main.inside), "coverage_p": p}
    fails = k_in < level * len(main.inside) and p < COVERAGE_ALPHA
    text = (f"{k_in} of {len(main.inside)} points ({k_in / len(main.inside):.0%}) lie "
            f"inside its {level:.0%} predictive interval")
    if fails:
        text = f"only {text} (p = {p:.2g} against the nominal {level:.0%})"
    return fails, text, cov


def _ranking_text(form: str, order: list[str], rows: list[dict], label: str) -> str:
    by_form = {r["form"]: r for r in rows}
    if not order or len(order) == 1:
        return "no alternative form could be fitted"
    if order[0] == form:
        nxt = by_form[order[1]]
        return (f"ranked first of {len(order)} forms (next: {FORM_WORDS.get(nxt['form'])}, "
                f"behind by {label} = {-nxt['delta']:.1f} ± {nxt['dse']:.1f})")
    best = by_form[order[0]]
    return (f"{FORM_WORDS.get(best['form'])} is ahead by {label} = {best['delta']:.1f} ± "
            f"{best['dse']:.1f}, within the noise")


def _weights(scores: dict[str, float]) -> dict[str, float]:
    """Akaike-style weights exp(score) / Σ exp(score) (score on the ELPD scale)."""
    if not scores:
        return {}
    top = max(scores.values())
    w = {f: math.exp(s - top) for f, s in scores.items()}
    total = sum(w.values())
    return {f: v / total for f, v in w.items()}


# -- point fits --------------------------------------------------------------------------------


def pointwise_loglik(fit, n) -> np.ndarray:
    """The log-likelihood of each fitted point of a :class:`~cram.fitting.mle.PointFitResult`."""
    t, y = np.asarray(fit.t, float), np.asarray(fit.y, float)
    mu = fit.predict(t)
    if fit.likelihood == "normal":
        return loglik_normal(y, mu, fit.nuisance["sigma"])
    if fit.likelihood == "beta":
        return loglik_beta(squeeze01(y), mu, fit.nuisance["phi"])
    if fit.likelihood == "binomial":
        n = np.asarray(n, float)
        return loglik_binomial(np.round(y * n), n, mu)
    raise CramError(f"no pointwise log-likelihood for likelihood {fit.likelihood!r}")


def inside_interval(fit, n, level: float) -> np.ndarray:
    """Per point: inside the central ``level`` interval of the fitted likelihood (see module)."""
    t, y = np.asarray(fit.t, float), np.asarray(fit.y, float)
    mu = fit.predict(t)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    if fit.likelihood == "normal":
        npts, p = len(y), len(get_form(fit.form).params)
        dof = npts - p
        if dof >= 1:
            half = stats.t.ppf(hi_q, dof) * fit.nuisance["sigma"] * math.sqrt(npts / dof)
        else:
            half = stats.norm.ppf(hi_q) * fit.nuisance["sigma"]
        return np.abs(y - mu) <= half
    if fit.likelihood == "beta":
        yb = squeeze01(y)
        m = np.clip(mu, 1e-6, 1 - 1e-6)
        phi = fit.nuisance["phi"]
        a, b = m * phi, (1 - m) * phi
        return (stats.beta.ppf(lo_q, a, b) <= yb) & (yb <= stats.beta.ppf(hi_q, a, b))
    n = np.asarray(n, float)
    k = np.round(y * n)
    m = np.clip(mu, 1e-6, 1 - 1e-6)
    return (stats.binom.ppf(lo_q, n, m) <= k) & (k <= stats.binom.ppf(hi_q, n, m))


def point_scores(sub: pd.DataFrame, rules, *, likelihood: str = "auto", seed: int = 0,
                 cache: dict | None = None) -> dict[str, FormScore]:
    """Fit every form of :func:`forms_to_check` to one curve by MLE; score each (log L − k)."""
    from cram.fitting.mle import fit_mle
    from cram.fitting.rules import apply_rules

    scores = {}
    for f in forms_to_check(rules.form):
        r = replace(rules, form=f)
        try:
            fit = fit_mle(sub, rules=r, likelihood=likelihood, seed=seed, cache=cache)
            n = apply_rules(sub, r, where="form check")["n"].to_numpy(float)
            ll = pointwise_loglik(fit, n)
        except CramError as err:
            scores[f] = FormScore(f, note=f"not fitted: {err}")
            continue
        note = "" if fit.converged else f"optimiser did not converge ({fit.message})"
        scores[f] = FormScore(f, pointwise=ll - fit.k / len(ll), score=fit.loglik - fit.k,
                              se=float(math.sqrt(len(ll) * np.var(ll))),
                              inside=inside_interval(fit, n, rules.interval), note=note)
    return scores


def check_point_fits(df: pd.DataFrame, rules, *, likelihood: str = "auto", seed: int = 0,
                     cache: dict | None = None, progress: bool = False
                     ) -> tuple[dict[str, dict], pd.DataFrame]:
    """The form check of every curve by point fits: ``({curve: record}, table)``."""
    from cram.fitting.mle import curve_groups, one_blas_thread, progress_bar

    records, rows = {}, []
    groups = curve_groups(df)
    with one_blas_thread():
        for cid in progress_bar(groups, "form check", progress, total=len(groups)):
            scores = point_scores(groups[cid], rules, likelihood=likelihood, seed=seed,
                                  cache=cache)
            records[cid], r = judge(cid, rules.form, scores, level=rules.interval, method="mle")
            rows += r
    return records, pd.DataFrame(rows)


# -- Bayesian fits -----------------------------------------------------------------------------


def _pointwise_loo(idata):
    import warnings

    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.loo(idata, var_name="obs", pointwise=True)
    labels = [str(x) for x in res.loo_i["obs_id"].values]
    return (pd.Series(np.asarray(res.loo_i.values, float), index=labels),
            pd.Series(np.asarray(res.pareto_k.values, float), index=labels))


def fit_notes(fits: dict, form: str) -> list[str]:
    """One line per alternative Bayesian fit that failed or whose sampler diagnostics failed."""
    out = []
    for f, r in fits.items():
        if f == form:
            continue
        if isinstance(r, str):
            out.append(f"{f} fit: not fitted ({r})")
        elif not r.diagnostics.get("ok", True):
            out.append(f"{f} fit: " + "; ".join(
                w for w in r.diagnostics["warnings"] if "prior sensitivity" not in w))
    return out


def check_bayes_fits(fits: dict, form: str, level: float) -> tuple[dict[str, dict], pd.DataFrame]:
    """The form check of every curve of a Bayesian fit: ``({curve: record}, table)``.

    ``fits`` maps form names to :class:`~cram.fitting.bayes.BayesFitResult` of the same points
    (the checked ``form`` among them; a form that could not be fitted maps to its error text).
    Coverage comes from the checked fit's posterior predictive table. :func:`fit_notes` says
    which alternative fits failed.
    """
    from cram.fitting.bayes import obs_labels

    main = fits[form]
    data = main.curves.reset_index(drop=True)
    labels = pd.Series(obs_labels(data), index=data.index)
    loo = {}
    for f, r in fits.items():
        if isinstance(r, str):
            continue
        try:
            loo[f] = _pointwise_loo(r.idata)
        except (KeyError, ValueError, TypeError) as err:
            fits[f] = f"no pointwise log-likelihood ({err})"
    records, rows = {}, []
    for cid in dict.fromkeys(data["curve"]):
        mine = labels[data["curve"] == cid].tolist()
        scores = {}
        for f in forms_to_check(form):
            r = fits.get(f)
            if r is None or isinstance(r, str) or f not in loo:
                scores[f] = FormScore(f, note=f"not fitted: {r or 'not requested'}"
                                      if isinstance(r, str) or r is None else "not fitted")
                continue
            elpd_i, k_i = loo[f][0].reindex(mine).to_numpy(), loo[f][1].reindex(mine).to_numpy()
            inside = None
            if f == form and main.ppc is not None:
                inside = main.ppc.loc[main.ppc["curve"] == cid, "inside"].to_numpy(bool)
            note = "" if r.diagnostics.get("ok", True) or f == form else (
                "its sampler diagnostics failed (see the result's form_check notes)")
            scores[f] = FormScore(f, pointwise=elpd_i, score=float(np.sum(elpd_i)),
                                  se=float(math.sqrt(len(elpd_i) * np.var(elpd_i))),
                                  inside=inside, pareto_bad=int(np.sum(k_i > 0.7)), note=note)
        records[cid], r = judge(cid, form, scores, level=level, method="bayes")
        rows += r
    return records, pd.DataFrame(rows)


# -- the result document -----------------------------------------------------------------------


def apply_to_doc(doc: dict, records: dict[str, dict], form: str, method: str,
                 level: float, fit_notes: list[str] | None = None) -> None:
    """Write the check into the result document: per curve ``form_check`` and ``gamma_valid``.

    Group rows (hierarchical fits) get ``gamma_valid`` false when any curve of the group fails,
    and Δγ gets a ``form_caveat`` in words; ``doc["form_check"]`` says how it was checked.
    ``fit_notes`` (failed diagnostics of the alternative fits, one line each) go into
    ``doc["form_check"]["notes"]`` and the diagnostics' warnings (``ok`` is left as it is: it
    speaks of the fit itself).
    """
    has_gamma = get_form(form).has_gamma
    failing = [c for c, r in records.items() if r.get("passes") is False]
    by_group: dict[str, list[str]] = {}
    for row in doc.get("curves", []):
        cid = row["curve"]
        if cid in records:
            rec = records[cid]
            row["form_check"] = rec
            row["gamma_valid"] = (rec["passes"] if has_gamma and rec["passes"] is not None
                                  else None)
            by_group.setdefault(str(row.get("group")), []).append(cid)
    for row in doc.get("curves", []):
        cid = str(row["curve"])
        if cid.startswith("group:") and has_gamma:
            members = by_group.get(cid.split(":", 1)[1], [])
            bad = [c for c in members if c in failing]
            row["gamma_valid"] = not bad
            if bad:
                row["gamma_note"] = (f"pools {len(bad)} curve(s) that are not "
                                     f"{FORM_WORDS.get(form, form)} ({', '.join(bad)}): this "
                                     "group γ is not a property of those curves")
    delta = doc.get("delta_gamma")
    if delta and has_gamma:
        delta["gamma_valid"] = not failing
        if failing:
            delta["form_caveat"] = (
                f"the {form} form fails for {len(failing)} curve(s) ({', '.join(failing)}): "
                "their γ is not a property of the curve, so Δγ compares an exponent that does "
                "not describe them")
    fit_notes = fit_notes or []
    if fit_notes:
        diag = doc.setdefault("diagnostics", {})
        diag.setdefault("warnings", []).extend(f"form check, {n}" for n in fit_notes)
    doc["form_check"] = {
        "form": form, "alternatives": [f for f in forms_to_check(form) if f != form],
        "notes": fit_notes,
        "method": METHOD_WORDS["bayes" if method == "bayes" else "mle"],
        "criteria": criteria_text(level), "failing": failing,
        "statement": (f"{len(failing)} of {len(records)} curve(s) are not "
                      f"{FORM_WORDS.get(form, form)}: {', '.join(failing)}" if failing else
                      f"every checked curve passes as {FORM_WORDS.get(form, form)}")}


__all__ = ["ALTERNATIVES", "FORM_WORDS", "FormScore", "apply_to_doc", "check_bayes_fits",
           "check_point_fits", "criteria_text", "forms_to_check", "judge", "point_scores"]
