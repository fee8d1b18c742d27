"""Forgetting-curve fits for human and model curves (never imports torch).

- :mod:`cram.fitting.forms`: the curve forms (``FORMS``), pure functions with bounds and priors;
- :mod:`cram.fitting.rules`: comparison rules fixed in advance (window, offset, onset, ROPE);
- :mod:`cram.fitting.likelihoods`: binomial / beta / normal log-likelihoods;
- :mod:`cram.fitting.mle`: scipy MLE and statsmodels log-log OLS point fits;
- :mod:`cram.fitting.bayes`: PyMC single-curve and hierarchical fits, LOO, checks (lazy import);
- :mod:`cram.fitting.form_check`: does the form describe each curve (coverage, LOO/AIC against
  other forms); a γ is offered as a property of a curve only when it does;
- :mod:`cram.fitting.model_curves`: curves from run folders;
- :mod:`cram.fitting.results`: the interface every γ fit offers (``GammaFit``);
- :mod:`cram.fitting.pipeline`: the scripted fit behind ``cram fit gamma``;
- :mod:`cram.fitting.io`: writing fit output folders; ``load_fit`` reads them (the one reader,
  :mod:`cram.core.fits`).

PyMC is imported only inside :mod:`cram.fitting.bayes`, so point fits stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from cram.fitting.forms import FORMS, Form, Prior, get_form
from cram.fitting.mle import PointFitResult, fit_loglog_ols, fit_mle, fit_mle_many
from cram.fitting.rules import ComparisonRules, apply_rules, parse_window

_LAZY = {
    "fit_bayes": ("cram.fitting.bayes", "fit_bayes"),
    "BayesFitResult": ("cram.fitting.bayes", "BayesFitResult"),
    "FitFolder": ("cram.core.fits", "FitFolder"),
    "load_fit": ("cram.core.fits", "load_fit"),
    "episodic_reliance_curve": ("cram.fitting.model_curves", "episodic_reliance_curve"),
    "per_pattern_curve": ("cram.fitting.model_curves", "per_pattern_curve"),
    "retention_curve": ("cram.fitting.model_curves", "retention_curve"),
    "GammaFit": ("cram.fitting.results", "GammaFit"),
    "PointFits": ("cram.fitting.results", "PointFits"),
}
#: submodules loaded on first access: ``cram.fitting.model_curves`` is always the module (the
#: function is ``cram.fitting.model_curves.model_curves``)
_SUBMODULES = ("bayes", "form_check", "io", "likelihoods", "model_curves", "pipeline", "plots",
               "results", "sensitivity")

__all__ = ["FORMS", "ComparisonRules", "Form", "PointFitResult", "Prior", "apply_rules",
           "fit_loglog_ols", "fit_mle", "fit_mle_many", "get_form", "parse_window", *_LAZY]


def __getattr__(name: str) -> Any:
    """Load a lazy name (PyMC-backed fits, run-folder curves) or submodule on first access."""
    if name in _SUBMODULES:
        return importlib.import_module(f"cram.fitting.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cram.fitting' has no attribute {name!r}")
