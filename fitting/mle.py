"""Point fits: maximum likelihood with scipy, and log-log OLS with statsmodels as the baseline.

``fit_mle(curve_df, form="power", window=None, offset=None)`` fits one curve and returns a
:class:`PointFitResult` (params, stderr, ``conf_int(alpha)``, loglik, AIC/BIC, ``predict``,
``summary()``, ``to_frame()``, JSON round trip). Standard errors come from the inverse of a
central-difference Hessian of the negative log-likelihood at the optimum; intervals are Wald
intervals (normal quantiles; t quantiles for OLS).

Speed without other numbers: L-BFGS-B gets the forward-difference gradient it would estimate
itself, computed without scipy's per-call overhead (:func:`_with_fd_gradient`), and a fit of
points already fitted under the same form, likelihood, restarts and seed is taken from a
``cache`` (the window sensitivity's ``all`` window is the main fit). Both give the same numbers,
bit for bit, as the plain fit (``tests/test_fit_scaling.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from cram.core.errors import ConfigError, DataError
from cram.fitting.forms import get_form
from cram.fitting.likelihoods import (
    choose_likelihood,
    loglik_beta,
    loglik_binomial,
    loglik_normal,
    squeeze01,
)
from cram.fitting.rules import ComparisonRules, apply_rules


@dataclass
class PointFitResult:
    """One curve's point fit (MLE or log-log OLS)."""

    curve: str
    form: str
    method: str
    likelihood: str
    params: dict
    stderr: dict
    loglik: float
    n_obs: int
    k: int
    rules: dict
    nuisance: dict = field(default_factory=dict)
    df_resid: float | None = None
    converged: bool = True
    message: str = ""
    t: list = field(default_factory=list)
    y: list = field(default_factory=list)
    at_bound: list = field(default_factory=list)  # parameters stuck at a bound of the form

    @property
    def gamma(self) -> float | None:
        """γ, or None for forms without a power exponent."""
        return self.params.get("gamma") if get_form(self.form).has_gamma else None

    @property
    def aic(self) -> float:
        """Akaike information criterion, 2k − 2 log L."""
        return 2 * self.k - 2 * self.loglik

    @property
    def bic(self) -> float:
        """Bayesian information criterion, k log n − 2 log L."""
        return self.k * math.log(max(self.n_obs, 1)) - 2 * self.loglik

    def conf_int(self, alpha: float = 0.1) -> pd.DataFrame:
        """Two-sided (1 − alpha) Wald intervals: DataFrame indexed by parameter (lower, upper)."""
        if self.df_resid is not None and self.df_resid > 0:
            q = stats.t.ppf(1 - alpha / 2, self.df_resid)
        else:
            q = stats.norm.ppf(1 - alpha / 2)
        rows = {}
        for name, est in self.params.items():
            se = self.stderr.get(name, float("nan"))
            se = float("nan") if se is None else se
            rows[name] = {"lower": est - q * se, "upper": est + q * se}
        return pd.DataFrame.from_dict(rows, orient="index")

    def predict(self, t) -> np.ndarray:
        """The fitted curve at fitted times ``t`` (already offset)."""
        return get_form(self.form)(t, **self.params)

    def to_frame(self, alpha: float = 0.1) -> pd.DataFrame:
        """Tidy table: one row per parameter with estimate, stderr and interval bounds."""
        ci = self.conf_int(alpha)
        rows = []
        for name, est in self.params.items():
            rows.append({"curve": self.curve, "form": self.form, "method": self.method,
                         "likelihood": self.likelihood, "param": name, "estimate": est,
                         "stderr": self.stderr.get(name), "lower": ci.loc[name, "lower"],
                         "upper": ci.loc[name, "upper"], "interval": 1 - alpha,
                         "loglik": self.loglik, "aic": self.aic, "bic": self.bic,
                         "n_obs": self.n_obs, "converged": self.converged,
                         "at_bound": name in self.at_bound})
        return pd.DataFrame(rows)

    def summary(self, alpha: float = 0.1) -> str:
        """A readable text table."""
        ci = self.conf_int(alpha)
        lines = [f"{self.method} fit of {self.curve!r}, form {self.form} "
                 f"({get_form(self.form).formula}), likelihood {self.likelihood}",
                 f"n = {self.n_obs}, loglik = {self.loglik:.4f}, AIC = {self.aic:.3f}, "
                 f"BIC = {self.bic:.3f}, converged = {self.converged}",
                 f"{'param':>10} {'estimate':>12} {'stderr':>12} "
                 f"{'lower':>12} {'upper':>12}   ({100 * (1 - alpha):.0f}% interval)"]
        for name, est in self.params.items():
            se = self.stderr.get(name)
            lines.append(f"{name:>10} {est:12.5g} {se if se is not None else float('nan'):12.5g} "
                         f"{ci.loc[name, 'lower']:12.5g} {ci.loc[name, 'upper']:12.5g}")
        for name, v in self.nuisance.items():
            lines.append(f"{name:>10} {v:12.5g}   (nuisance)")
        if self.at_bound:
            lines.append(f"at a bound (not identified by the data, no interval): "
                         f"{', '.join(self.at_bound)}")
        lines.append(f"rules: {json.dumps(self.rules, default=str)}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The result as a JSON string (NaN written as null)."""
        d = asdict(self)
        return json.dumps(_nan_to_none(d), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "PointFitResult":
        """A result read back from :meth:`to_json` output (null stderr back to NaN)."""
        d = json.loads(text)
        d["stderr"] = {k: (float("nan") if v is None else v) for k, v in d["stderr"].items()}
        return cls(**d)


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def params_at_bound(form: str, params: dict, rel: float = 1e-6) -> list[str]:
    """Names of ``params`` within ``rel`` of the range of a bound of ``form``'s point-fit bounds.

    A parameter there is not identified by the data (e.g. all-zero recall drives γ to its upper
    bound); its Wald interval would be meaningless, so the fits report it and give no interval.
    """
    bounds = get_form(form).bounds
    out = []
    for name, value in params.items():
        if name not in bounds or value is None or not math.isfinite(value):
            continue
        lo, hi = bounds[name]
        tol = rel * (hi - lo) + 1e-12
        if value <= lo + tol or value >= hi - tol:
            out.append(name)
    return out


def _single_curve(df: pd.DataFrame) -> str:
    curves = df["curve"].unique()
    if len(curves) != 1:
        raise DataError(f"fit_mle fits one curve; got {len(curves)} ({list(curves)[:5]}...); "
                        "use fit_mle_many for several")
    return str(curves[0])


def _numeric_hessian(f, x, rel=1e-4):
    x = np.asarray(x, float)
    k = len(x)
    h = rel * np.maximum(np.abs(x), 1e-3)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.zeros(k), np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            v = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej))
            v /= 4 * h[i] * h[j]
            H[i, j] = H[j, i] = v
    return H


def one_blas_thread():
    """Limit BLAS to one thread: L-BFGS-B on tiny problems is ~20x slower with more, under load."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with pymc
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def fit_mle(curve_df: pd.DataFrame, form: str = "power", window=None, offset=None, *,
            likelihood: str = "auto", rules: ComparisonRules | None = None,
            n_starts: int = 8, seed: int = 0, cache: dict | None = None) -> PointFitResult:
    """Maximum-likelihood fit of one curve.

    Parameters
    ----------
    curve_df : DataFrame
        Tidy rows of exactly one curve (see :mod:`cram.psych_data.tidy`).
    form : str
        A key of :data:`cram.fitting.FORMS`.
    window : (float, float) or None
        Fit window in decades from the first t > 0.
    offset : float or None
        ``t = delay_value + offset``; required when a delay is 0 and the form needs t > 0.
    likelihood : {"auto", "normal", "beta", "binomial"}
        ``auto``: binomial where trial counts are known, else normal (least squares).
    rules : ComparisonRules, optional
        Overrides ``form``, ``window`` and ``offset`` when given.
    n_starts : int
        Optimiser restarts (the data-driven start plus jittered copies).
    seed : int
        Seed of the jitter of the restarts.
    cache : dict, optional
        Fits already made, keyed by what determines them (form, likelihood, restarts, seed and
        the fitted t, value and n): a fit of the same points is taken from it instead of being
        made again (its result is the same number for number). Filled as fits are made.
    """
    with one_blas_thread():
        rules = rules or ComparisonRules(form=form, window=window, offset=offset)
        return _fit_mle(curve_df, rules, likelihood, n_starts, seed, cache)


def _fit_mle(curve_df, rules, likelihood, n_starts, seed, cache=None) -> PointFitResult:
    fm = get_form(rules.form)
    curve = _single_curve(curve_df)
    data = apply_rules(curve_df, rules, pooled=False, where="point fit")
    lik = choose_likelihood(data, likelihood, bayes=False)
    t = data["t"].to_numpy(float)
    y = data["value"].to_numpy(float)
    n = data["n"].to_numpy(float)
    key = None
    if cache is not None:
        key = (fm.name, lik, int(n_starts), int(seed), _digest(t, y, n))
        core = cache.get(key)
    if key is None or core is None:
        core = _fit_points(fm, lik, t, y, n, n_starts, seed)
        if key is not None:
            cache[key] = core
    return PointFitResult(curve=curve, form=fm.name, method="mle", likelihood=lik,
                          params=dict(core["params"]), stderr=dict(core["stderr"]),
                          loglik=core["loglik"], n_obs=len(t), k=core["k"],
                          rules=rules.to_dict(), nuisance=dict(core["nuisance"]),
                          converged=core["converged"], message=core["message"], t=t.tolist(),
                          y=y.tolist(), at_bound=list(core["at_bound"]))


def _digest(*arrays) -> bytes:
    """A fingerprint of float arrays (their exact bytes and lengths)."""
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=float)
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.digest()


#: L-BFGS-B's default absolute forward-difference step (scipy's ``eps``) and its fallback
#: relative step where ``x + eps == x`` (``approx_derivative``'s ``EPS ** 0.5`` for '2-point')
_FD_STEP = 1e-8
_FD_REL_FALLBACK = float(np.finfo(float).eps) ** 0.5
#: L-BFGS-B's default ``maxfun``; its count includes the finite-difference evaluations
_LBFGSB_MAXFUN = 15000


def _nll_function(fm, lik: str, t, y, n):
    """The negative log-likelihood of the curve's points as a function of the parameter vector.

    The value at any ``x`` is the same float as the plain formula gives (the same NumPy
    operations in the same order); the last curve evaluated is reused when only the nuisance
    parameter (σ or φ) changed, which is what a finite-difference step in it does.
    """
    names = list(fm.params)
    k = len(names)
    fn = fm.fn
    if lik == "binomial":
        kcount = np.round(y * n)
    elif lik == "beta":
        y_b = squeeze01(y)
    last = [None, None]

    def nll(x):
        key = x[:k].tobytes()
        if key == last[0]:
            mu = last[1]
        else:
            mu = fn(t, dict(zip(names, x[:k])), np)
            last[0], last[1] = key, mu
        if not np.isfinite(mu).all():
            return 1e12
        if lik == "normal":
            ll = loglik_normal(y, mu, math.exp(x[-1]))
        elif lik == "beta":
            ll = loglik_beta(y_b, mu, math.exp(x[-1]))
        else:
            ll = loglik_binomial(kcount, n, mu)
        s = -float(ll.sum())
        return s if math.isfinite(s) else 1e12

    return nll


def _with_fd_gradient(nll, lo, hi):
    """``x -> (nll(x), gradient)``: the gradient L-BFGS-B would estimate itself, made faster.

    Without a gradient, scipy's L-BFGS-B estimates one by forward differences
    (``approx_derivative``, method '2-point', absolute step ``eps`` = 1e-8, a step that would
    leave the bounds flipped or shortened to the bound). This computes the same quotients with
    the same floating-point operations on the same points, without scipy's per-call overhead,
    so the optimiser takes the same path to the same numbers (checked against scipy's own in
    ``tests/test_fit_scaling.py``).
    """
    lo = [float(v) for v in lo]
    hi = [float(v) for v in hi]

    def fun_and_grad(x):
        x = np.asarray(x, dtype=float)
        f0 = nll(x)
        x0 = x.tolist()
        g = np.empty(len(x0))
        for i, xi in enumerate(x0):
            h = _FD_STEP
            if (xi + h) - xi == 0:
                h = _FD_REL_FALLBACK * (1.0 if xi >= 0 else -1.0) * max(1.0, abs(xi))
            lower, upper = xi - lo[i], hi[i] - xi
            fits = abs(h) <= max(lower, upper)
            if fits:
                if not lo[i] <= xi + h <= hi[i]:
                    h = -h
            elif upper >= lower:
                h = upper
            else:
                h = -lower
            x1 = x.copy()
            x1[i] = xi + h
            g[i] = (nll(x1) - f0) / ((xi + h) - xi)
        return f0, g

    return fun_and_grad


def _fit_points(fm, lik: str, t, y, n, n_starts: int, seed: int) -> dict:
    """Fit ``fm`` to the points (t, y, n) under ``lik``: the numbers of a :class:`PointFitResult`.

    L-BFGS-B within the bounds from the data-driven start and ``n_starts - 1`` jittered ones,
    polished by Nelder-Mead; standard errors from the central-difference Hessian.
    """
    nll = _nll_function(fm, lik, t, y, n)
    names = list(fm.params)
    lo = np.array([fm.bounds[p][0] for p in names], float)
    hi = np.array([fm.bounds[p][1] for p in names], float)
    nuis = {"normal": ("log_sigma", -12.0, 3.0), "beta": ("log_phi", -3.0, 14.0)}.get(lik)

    x0 = fm.start(t, y)
    pad = 1e-9 * (hi - lo)
    x0 = np.clip(np.array([x0[p] for p in names], float), lo + pad, hi - pad)
    b_lo, b_hi = lo.copy(), hi.copy()
    if nuis:
        resid = y - fm.fn(t, dict(zip(names, x0)), np)
        init = math.log(max(float(np.std(resid)), 1e-3)) if lik == "normal" else math.log(50.0)
        x0 = np.append(x0, init)
        b_lo, b_hi = np.append(b_lo, nuis[1]), np.append(b_hi, nuis[2])
    fun_and_grad = _with_fd_gradient(nll, b_lo, b_hi)
    # scipy counts each finite-difference evaluation against maxfun; here one call is 1 + k
    maxfun = _LBFGSB_MAXFUN // (len(x0) + 1)
    rng = np.random.default_rng(seed)
    best = None
    with np.errstate(all="ignore"):
        for i in range(n_starts):
            start = (x0 if i == 0 else
                     np.clip(x0 * np.exp(rng.normal(0, 0.5, len(x0))), b_lo, b_hi))
            if i > 0 and nuis:
                start[-1] = x0[-1] + rng.normal(0, 0.5)
            res = optimize.minimize(fun_and_grad, start, jac=True, method="L-BFGS-B",
                                    bounds=list(zip(b_lo, b_hi)), options={"maxfun": maxfun})
            if best is None or res.fun < best.fun:
                best = res
        # polish without bounds-induced stalls
        res = optimize.minimize(nll, best.x, method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
        if res.fun <= best.fun and np.all(res.x >= b_lo) and np.all(res.x <= b_hi):
            best = res
        x = best.x
        H = _numeric_hessian(nll, x)
    try:
        cov = np.linalg.inv(H)
        se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
    except np.linalg.LinAlgError:
        se = np.full(len(x), np.nan)
    params = {p: float(v) for p, v in zip(names, x[: len(names)])}
    at_bound = params_at_bound(fm.name, params)
    stderr = {p: float("nan") if p in at_bound else float(v)  # no Wald interval at a bound
              for p, v in zip(names, se[: len(names)])}
    nuisance = {}
    if nuis:
        nuisance[nuis[0].replace("log_", "")] = float(math.exp(x[-1]))
    return {"params": params, "stderr": stderr, "loglik": -float(best.fun), "k": len(x),
            "nuisance": nuisance, "at_bound": at_bound,
            "converged": bool(best.success) or bool(getattr(best, "status", 1) == 0),
            "message": str(getattr(best, "message", ""))}


def fit_loglog_ols(curve_df: pd.DataFrame, window=None, offset=None, *,
                   rules: ComparisonRules | None = None) -> PointFitResult:
    """The classic baseline: OLS of log R on log t (statsmodels); γ = −slope, a = e^intercept.

    Standard errors and t-intervals of γ come from statsmodels; the interval of ``a`` is
    reported on the log scale's delta method (se_a = a · se_intercept).
    """
    import statsmodels.api as sm

    rules = rules or ComparisonRules(form="power", window=window, offset=offset)
    if rules.form != "power":
        raise ConfigError("log-log OLS fits the power form only")
    curve = _single_curve(curve_df)
    data = apply_rules(curve_df, rules, pooled=False, where="point fit")
    t = data["t"].to_numpy(float)
    y = data["value"].to_numpy(float)
    if (y <= 0).any():
        raise DataError(f"curve {curve!r}: log-log OLS needs values > 0")
    X = sm.add_constant(np.log(t))
    fit = sm.OLS(np.log(y), X).fit()
    icpt, slope = fit.params
    se_i, se_s = fit.bse
    a = float(math.exp(icpt))
    return PointFitResult(curve=curve, form="power", method="loglog_ols", likelihood="lognormal",
                          params={"a": a, "gamma": float(-slope)},
                          stderr={"a": float(a * se_i), "gamma": float(se_s)},
                          loglik=float(fit.llf), n_obs=len(t), k=3, rules=rules.to_dict(),
                          nuisance={"sigma_log": float(math.sqrt(fit.scale))},
                          df_resid=float(fit.df_resid), t=t.tolist(), y=y.tolist())


def progress_bar(iterable, desc: str, enabled: bool = True, total: int | None = None):
    """A tqdm bar on stderr over ``iterable``, or the iterable itself when not ``enabled``.

    On a terminal the bar redraws at most 10 times a second; when stderr is not a terminal (a
    log file, a pipe) at most once every :data:`LOG_PROGRESS_INTERVAL` seconds, so that a
    redirected log gets a line now and then, not a flood.
    """
    if not enabled:
        return iterable
    import sys

    from tqdm.auto import tqdm

    try:
        tty = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        tty = False
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr,
                mininterval=0.1 if tty else LOG_PROGRESS_INTERVAL)


#: seconds between progress updates when stderr is not a terminal
LOG_PROGRESS_INTERVAL = 5.0


def curve_groups(df: pd.DataFrame) -> dict:
    """``{curve id: its rows}`` in order of first appearance (one pass, not one scan per curve).

    Each frame holds the same rows, index and column types as ``df[df["curve"] == cid]``.
    """
    return dict(tuple(df.groupby("curve", sort=False)))


def fit_mle_many(df: pd.DataFrame, rules: ComparisonRules, *, method: str = "mle",
                 likelihood: str = "auto", seed: int = 0, progress: bool = False,
                 cache: dict | None = None) -> list[PointFitResult]:
    """Point-fit every curve of a tidy table under the same rules (derived curves included).

    ``progress`` shows a bar over the curves on stderr (:func:`progress_bar`); ``cache`` is
    passed to :func:`fit_mle` (MLE only).
    """
    if method not in ("mle", "ols"):
        raise ConfigError(f"unknown point-fit method {method!r} (mle or ols)")
    out = []
    groups = curve_groups(df)
    for cid in progress_bar(groups, f"{method} fits", progress, total=len(groups)):
        sub = groups[cid]
        if method == "mle":
            out.append(fit_mle(sub, rules=rules, likelihood=likelihood, seed=seed, cache=cache))
        else:
            out.append(fit_loglog_ols(sub, rules=rules))
    return out
