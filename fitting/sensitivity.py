"""Window sensitivity: γ against the fit window, for model and human curves alike.

Each curve is point-fitted (MLE, same form, offset and likelihood) on a fixed list of windows in
decades from the first t > 0; windows that leave fewer than 3 points are reported as skipped, not
dropped silently. This shows how much of a γ difference a window alone can make (a shifted power
law with exponent 0.5 has a local log-log slope of 0.22 at t = S and 0.49 at t = 100 S).

It is always made of maximum-likelihood point fits, also next to a Bayesian fit: every row names
its fit (columns ``method``, ``form``, ``offset``, ``likelihood``) and :func:`describe` says it in
words for the result and the figure.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from cram.core.errors import CramError
from cram.fitting.mle import curve_groups, fit_mle, progress_bar
from cram.fitting.rules import ComparisonRules

DEFAULT_WINDOWS = ((0.0, 1.0), (0.0, 1.5), (0.0, 2.0), (0.0, 3.0), (0.5, 2.0), (0.5, 3.0),
                   (1.0, 2.0), (1.0, 3.0))


def offset_text(offset) -> str:
    """The rules' offset in words: ``none (t = delay)``, ``1`` or ``steps=25, ...``."""
    if offset is None:
        return "none (t = delay)"
    if isinstance(offset, dict):
        return ", ".join(f"{k}={v:g}" for k, v in offset.items()) or "none (t = delay)"
    return f"{float(offset):g}"


def describe(rules: ComparisonRules, likelihoods, main_method: str) -> dict:
    """Which fit the window sensitivity uses, as fields and a sentence (``statement``)."""
    liks = sorted({str(v) for v in likelihoods if isinstance(v, str) and v})
    lik = " / ".join(liks) if liks else "auto"
    beside = {"bayes": " (not the Bayesian fit: a point fit per window)",
              "ols": " (not the log-log OLS fit)"}.get(main_method, "")
    statement = (f"γ per fit window from maximum-likelihood point fits{beside}, form "
                 f"{rules.form}, offset {offset_text(rules.offset)}, likelihood {lik}; "
                 f"{rules.interval:.0%} Wald intervals")
    return {"method": "mle", "form": rules.form, "offset": rules.offset, "likelihood": lik,
            "statement": statement}


def window_sensitivity(df: pd.DataFrame, rules: ComparisonRules, windows=DEFAULT_WINDOWS,
                       alpha: float | None = None, *, progress: bool = False,
                       cache: dict | None = None, likelihood: str = "auto") -> pd.DataFrame:
    """γ (MLE, Wald interval) per curve and window; one row per (curve, window).

    Columns: curve, group, window, window_low, window_high, n_points, gamma, gamma_low,
    gamma_high, status ("ok" or the reason it was skipped), and the fit each row comes from:
    method (always ``mle``), form, offset (as text) and likelihood (``likelihood`` resolved per
    curve, as in :func:`~cram.fitting.mle.fit_mle`).

    ``progress`` shows a bar over the curves on stderr. Windows that keep the same points of a
    curve (e.g. ``0:3`` and ``all`` on a curve spanning 3 decades) are fitted once: fits are
    shared through ``cache`` (see :func:`~cram.fitting.mle.fit_mle`), which may also hold the
    main fit of each curve; a new one is used when it is None.
    """
    alpha = 1 - rules.interval if alpha is None else alpha
    cache = {} if cache is None else cache
    rows = []
    groups = curve_groups(df)
    for cid in progress_bar(groups, "window sensitivity", progress, total=len(groups)):
        sub = groups[cid]
        group = sub["group"].iloc[0]
        for w in [None, *windows]:
            rows.append(_window_row(cid, group, sub, replace(rules, window=w), alpha, cache,
                                    likelihood))
    return pd.DataFrame(rows)


def _window_row(cid, group, sub: pd.DataFrame, r: ComparisonRules, alpha: float,
                cache: dict, likelihood: str = "auto") -> dict:
    """One curve's γ on the window of ``r``, or the reason it was skipped."""
    w = r.window
    row = {"curve": cid, "group": group,
           "window": "all" if w is None else f"{w[0]:g}:{w[1]:g}",
           "window_low": np.nan if w is None else w[0],
           "window_high": np.nan if w is None else w[1]}
    fit_of = {"method": "mle", "form": r.form, "offset": offset_text(r.offset)}
    try:
        fit = fit_mle(sub, rules=r, cache=cache, likelihood=likelihood)
    except CramError as err:
        return {**row, "n_points": 0, "gamma": np.nan, "gamma_low": np.nan,
                "gamma_high": np.nan, "status": f"skipped: {err}", **fit_of,
                "likelihood": None}
    ci = fit.conf_int(alpha)
    g = fit.gamma
    return {**row, "n_points": fit.n_obs,
            "gamma": np.nan if g is None else g,
            "gamma_low": ci.loc["gamma", "lower"] if g is not None else np.nan,
            "gamma_high": ci.loc["gamma", "upper"] if g is not None else np.nan,
            "status": "ok", **fit_of, "likelihood": fit.likelihood}
