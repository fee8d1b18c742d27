"""Forgetting-curve forms: small pure functions of t with named parameters and bounds.

Every form is a :class:`Form`: ``form(t, **params)`` evaluates the curve with NumPy, and
``form.fn(t, p, xp)`` evaluates it with any array module that offers ``exp``, ``log`` and
``minimum`` (NumPy or ``pytensor.tensor``), so the same formula serves the point fits and the
PyMC models. ``t`` is the fitted time: the delay after the comparison rules' offset
(``t = delay_value + offset``), see :mod:`cram.fitting.rules`.

Forms with a power exponent name it ``gamma`` (in the FSRS form it is FSRS's decay ``d``), so
that every result reports γ under one key; forms without one report γ as null.

``logistic`` is not a forgetting curve: it is a step (a transition) from a plateau ``hi`` to a
floor ``lo`` around ``t0`` with width ``w``. It is there so that a curve which drops like a cliff
can be told apart from one that decays like a power law (:mod:`cram.fitting.form_check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cram.core.errors import ConfigError


@dataclass(frozen=True)
class Prior:
    """A named prior: ``kind`` is normal | lognormal | beta | halfnormal, ``args`` its parameters.

    ``normal(mu, sigma)``, ``lognormal(mu, sigma)`` (of log x), ``beta(alpha, beta)``,
    ``halfnormal(sigma)``.
    """

    kind: str
    args: tuple[float, ...]

    def describe(self) -> str:
        """The prior written as ``kind(arg, ...)``."""
        return f"{self.kind}({', '.join(f'{a:g}' for a in self.args)})"

    def scaled(self, scale: float) -> "Prior":
        """The same prior with its spread multiplied by ``scale`` (for prior sensitivity)."""
        if self.kind in ("normal", "lognormal"):
            return Prior(self.kind, (self.args[0], self.args[1] * scale))
        if self.kind == "halfnormal":
            return Prior(self.kind, (self.args[0] * scale,))
        if self.kind == "beta":  # concentration shrinks as spread grows
            a, b = self.args
            return Prior("beta", (a / scale, b / scale))
        raise ConfigError(f"unknown prior kind {self.kind!r}")


@dataclass(frozen=True)
class Form:
    """A forgetting-curve form.

    Attributes
    ----------
    name : str
    fn : callable
        ``fn(t, p, xp) -> R`` with ``p`` a dict of parameters and ``xp`` an array module.
    params : tuple of str
        Parameter names in a fixed order.
    bounds : dict
        name -> (low, high) for the point fits.
    priors : dict
        name -> :class:`Prior` for the Bayesian fits (the ``gamma`` prior is the group-level one).
    needs_positive_t : bool
        True when the curve is undefined or infinite at t = 0 (then an explicit offset is needed).
    has_gamma : bool
        True when the form has a power exponent (named ``gamma``).
    formula : str
    start : callable
        ``start(t, y) -> dict`` a data-driven starting point for the optimiser.
    time_scaled : tuple of str
        Parameters (in units of t) whose prior is on their ratio to the curve's last fitted time.
    """

    name: str
    fn: Callable
    params: tuple[str, ...]
    bounds: dict
    priors: dict
    needs_positive_t: bool
    has_gamma: bool
    formula: str
    start: Callable = field(repr=False, default=None)
    #: parameters in units of t whose Bayesian prior is on ``t / t_max`` (``t_max``: the curve's
    #: last fitted time), so that one prior serves steps, hours and intervening items alike
    time_scaled: tuple[str, ...] = ()

    def __call__(self, t, **params):
        """Evaluate the form at times ``t`` with the given parameter values."""
        missing = [p for p in self.params if p not in params]
        if missing:
            raise ConfigError(f"form {self.name!r}: missing parameter(s) {missing}")
        return self.fn(np.asarray(t, dtype=float), params, np)

    @property
    def __doc__(self) -> str:  # noqa: D105 - the formula is the documentation
        return f"{self.name}: {self.formula}"


def _power(t, p, xp=np):
    """Power law (Wixted & Ebbesen 1991): R = a · t^(−γ); needs t > 0."""
    return p["a"] * t ** (-p["gamma"])


def _wickelgren(t, p, xp=np):
    """Offset power law (Wickelgren 1974; Wixted & Carpenter 2007): R = λ · (1 + β·t)^(−γ)."""
    return p["lam"] * (1.0 + p["beta"] * t) ** (-p["gamma"])


def fsrs_factor(d):
    """FSRS's F = 0.9^(−1/d) − 1, chosen so that R(S) = 0.9."""
    return 0.9 ** (-1.0 / d) - 1.0


def _fsrs(t, p, xp=np):
    """FSRS power forgetting curve: R(t, S) = (1 + F·t/S)^(−d), F = 0.9^(−1/d) − 1 (d = γ)."""
    d = p["gamma"]
    return (1.0 + (0.9 ** (-1.0 / d) - 1.0) * t / p["S"]) ** (-d)


def _power_asymptote(t, p, xp=np):
    """Power with asymptote (Averell & Heathcote 2011): R = c + (1 − c) · b · (1 + t)^(−γ)."""
    return p["c"] + (1.0 - p["c"]) * p["b"] * (1.0 + t) ** (-p["gamma"])


def _exponential(t, p, xp=np):
    """Exponential: R = a · e^(−α·t)."""
    return p["a"] * xp.exp(-p["alpha"] * t)


def _exponential_floor(t, p, xp=np):
    """Exponential with floor (Lee & Wagenmakers 2013, ch. 10): R = min(1, e^(−α·t) + β)."""
    return xp.minimum(1.0, xp.exp(-p["alpha"] * t) + p["floor"])


def _hyperbolic(t, p, xp=np):
    """Hyperbolic (Rubin & Wenzel 1996): R = a / (1 + b·t)."""
    return p["a"] / (1.0 + p["b"] * t)


def _logarithmic(t, p, xp=np):
    """Logarithmic (Rubin & Wenzel 1996): R = a − b · ln t; needs t > 0."""
    return p["a"] - p["b"] * xp.log(t)


def _logistic(t, p, xp=np):
    """Logistic step: R = lo + (hi − lo) / (1 + e^((t − t0)/w)), written with tanh (stable)."""
    return p["lo"] + (p["hi"] - p["lo"]) * 0.5 * (1.0 - xp.tanh(0.5 * (t - p["t0"]) / p["w"]))


def _loglog_start(t, y):
    t = np.asarray(t, float)
    y = np.clip(np.asarray(y, float), 1e-3, None)
    pos = t > 0
    if pos.sum() >= 2:
        slope, icpt = np.polyfit(np.log(t[pos]), np.log(y[pos]), 1)
        return float(np.exp(icpt)), float(np.clip(-slope, 0.01, 2.0))
    return float(y.max()), 0.3


def _start_power(t, y):
    a, g = _loglog_start(t, y)
    return {"a": a, "gamma": g}


def _start_wickelgren(t, y):
    _, g = _loglog_start(t + 1.0, y)
    return {"lam": float(np.clip(np.max(y), 0.01, 1.0)), "beta": 1.0, "gamma": g}


def _start_fsrs(t, y):
    _, g = _loglog_start(t + 1.0, y)
    tp = np.asarray(t, float)
    return {"S": float(max(np.median(tp[tp > 0]) if (tp > 0).any() else 1.0, 1e-3)),
            "gamma": float(np.clip(g, 0.05, 2.0))}


def _start_power_asymptote(t, y):
    _, g = _loglog_start(t + 1.0, y)
    return {"c": float(np.clip(np.min(y) * 0.5, 0.0, 0.9)), "b": 1.0, "gamma": g}


def _start_exponential(t, y):
    t = np.asarray(t, float)
    y = np.clip(np.asarray(y, float), 1e-3, None)
    slope, icpt = np.polyfit(t, np.log(y), 1)
    return {"a": float(np.clip(np.exp(icpt), 1e-3, 5.0)),
            "alpha": float(np.clip(-slope, 1e-6, 1e3))}


def _start_exponential_floor(t, y):
    s = _start_exponential(t, y)
    return {"alpha": s["alpha"], "floor": float(np.clip(np.min(y) * 0.5, 0.0, 0.9))}


def _start_hyperbolic(t, y):
    t = np.asarray(t, float)
    y = np.clip(np.asarray(y, float), 1e-3, None)
    a = float(np.max(y))
    slope, _ = np.polyfit(t, a / y - 1.0, 1)
    return {"a": a, "b": float(np.clip(slope, 1e-6, 1e3))}


def _start_logarithmic(t, y):
    t = np.asarray(t, float)
    slope, icpt = np.polyfit(np.log(t), np.asarray(y, float), 1)
    return {"a": float(icpt), "b": float(max(-slope, 1e-4))}


def _start_logistic(t, y):
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    order = np.argsort(t)
    t, y = t[order], y[order]
    hi = float(np.clip(np.max(y), 1e-3, 1.0))
    lo = float(np.clip(np.min(y), 0.0, 0.999))
    below = np.flatnonzero(y < (hi + lo) / 2)
    t0 = float(t[below[0]]) if len(below) else float(np.median(t))
    span = float(t.max() - t.min()) or 1.0
    return {"hi": hi, "lo": lo, "t0": max(t0, 1e-3 * span), "w": span / 20}


_G_BOUNDS = (1e-4, 5.0)
# gamma prior (Bayesian fits): γ > 0, median 0.3 (between the reported human values 0.1-0.5),
# 90% prior interval about 0.11-0.80; hierarchical fits put this prior on exp(μ_logγ).
_G_PRIOR = Prior("lognormal", (float(np.log(0.3)), 0.6))

FORMS: dict[str, Form] = {
    "power": Form(
        "power", _power, ("a", "gamma"), {"a": (1e-6, 100.0), "gamma": _G_BOUNDS},
        {"a": Prior("lognormal", (np.log(0.5), 1.0)), "gamma": _G_PRIOR},
        needs_positive_t=True, has_gamma=True, formula="R = a · t^(−γ)", start=_start_power),
    "wickelgren": Form(
        "wickelgren", _wickelgren, ("lam", "beta", "gamma"),
        {"lam": (1e-6, 1.0), "beta": (1e-6, 1e6), "gamma": _G_BOUNDS},
        {"lam": Prior("beta", (4.0, 1.5)), "beta": Prior("lognormal", (0.0, 2.0)),
         "gamma": _G_PRIOR},
        needs_positive_t=False, has_gamma=True, formula="R = λ · (1 + β·t)^(−γ)",
        start=_start_wickelgren),
    "fsrs": Form(
        "fsrs", _fsrs, ("S", "gamma"), {"S": (1e-6, 1e9), "gamma": (0.01, 5.0)},
        {"S": Prior("lognormal", (0.0, 3.0)), "gamma": _G_PRIOR},
        needs_positive_t=False, has_gamma=True,
        formula="R = (1 + F·t/S)^(−d), F = 0.9^(−1/d) − 1 (so R(S) = 0.9); γ ≡ d",
        start=_start_fsrs),
    "power_asymptote": Form(
        "power_asymptote", _power_asymptote, ("c", "b", "gamma"),
        {"c": (0.0, 0.999), "b": (1e-6, 5.0), "gamma": _G_BOUNDS},
        {"c": Prior("beta", (1.0, 4.0)), "b": Prior("lognormal", (0.0, 0.5)), "gamma": _G_PRIOR},
        needs_positive_t=False, has_gamma=True, formula="R = c + (1 − c) · b · (1 + t)^(−γ)",
        start=_start_power_asymptote),
    "exponential": Form(
        "exponential", _exponential, ("a", "alpha"), {"a": (1e-6, 100.0), "alpha": (1e-9, 1e6)},
        {"a": Prior("lognormal", (np.log(0.7), 0.7)), "alpha": Prior("lognormal", (-3.0, 3.0))},
        needs_positive_t=False, has_gamma=False, formula="R = a · e^(−α·t)",
        start=_start_exponential),
    "exponential_floor": Form(
        "exponential_floor", _exponential_floor, ("alpha", "floor"),
        {"alpha": (1e-9, 1e6), "floor": (0.0, 1.0)},
        {"alpha": Prior("lognormal", (-3.0, 3.0)), "floor": Prior("beta", (1.0, 3.0))},
        needs_positive_t=False, has_gamma=False, formula="R = min(1, e^(−α·t) + β)",
        start=_start_exponential_floor),
    "hyperbolic": Form(
        "hyperbolic", _hyperbolic, ("a", "b"), {"a": (1e-6, 100.0), "b": (1e-9, 1e6)},
        {"a": Prior("lognormal", (np.log(0.7), 0.7)), "b": Prior("lognormal", (-2.0, 3.0))},
        needs_positive_t=False, has_gamma=False, formula="R = a / (1 + b·t)",
        start=_start_hyperbolic),
    "logarithmic": Form(
        "logarithmic", _logarithmic, ("a", "b"), {"a": (-100.0, 100.0), "b": (0.0, 100.0)},
        {"a": Prior("normal", (0.5, 0.5)), "b": Prior("lognormal", (np.log(0.1), 1.0))},
        needs_positive_t=True, has_gamma=False, formula="R = a − b · ln t",
        start=_start_logarithmic),
    # a transition, not forgetting: the alternative that a cliff-like curve is checked against
    "logistic": Form(
        "logistic", _logistic, ("hi", "lo", "t0", "w"),
        {"hi": (1e-6, 1.0), "lo": (0.0, 1.0), "t0": (0.0, 1e9), "w": (1e-6, 1e9)},
        {"hi": Prior("beta", (4.0, 1.5)), "lo": Prior("beta", (1.0, 4.0)),
         # t0 / t_max: anywhere in the fitted range; w / t_max: median 5% of it, 90% in 0.4-60%
         "t0": Prior("beta", (1.2, 1.2)), "w": Prior("lognormal", (float(np.log(0.05)), 1.5))},
        needs_positive_t=False, has_gamma=False,
        formula="R = lo + (hi − lo) / (1 + e^((t − t0)/w)) (a step, not forgetting)",
        start=_start_logistic, time_scaled=("t0", "w")),
}


def get_form(name: str) -> Form:
    """Look a form up by name, with an error listing the known forms."""
    if isinstance(name, Form):
        return name
    if name not in FORMS:
        raise ConfigError(f"unknown form {name!r}; known forms: {', '.join(FORMS)}")
    return FORMS[name]
