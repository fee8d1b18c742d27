"""Forms, likelihoods and point fits: golden values, identities, recovery, errors (fast tier)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cram.core.errors import ConfigError, DataError
from cram.fitting import FORMS, ComparisonRules, PointFitResult, fit_loglog_ols, fit_mle
from cram.fitting.forms import fsrs_factor, get_form
from cram.fitting.likelihoods import loglik_beta, loglik_binomial, loglik_normal
from cram.fitting.rules import apply_rules, parse_offset, parse_window
from cram.psych_data import load_dataset

# true parameters for the recovery tier: one set per form
TRUE = {
    "power": {"a": 0.8, "gamma": 0.35},
    "wickelgren": {"lam": 0.95, "beta": 0.3, "gamma": 0.6},
    "fsrs": {"S": 5.0, "gamma": 0.5},
    "power_asymptote": {"c": 0.15, "b": 0.8, "gamma": 0.7},
    "exponential": {"a": 0.9, "alpha": 0.05},
    "exponential_floor": {"alpha": 0.08, "floor": 0.2},
    "hyperbolic": {"a": 0.9, "b": 0.2},
    "logarithmic": {"a": 0.9, "b": 0.12},
    "logistic": {"hi": 0.9, "lo": 0.1, "t0": 20.0, "w": 4.0},
}
T = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 89], dtype=float)


def _curve(form, params, t=T, name="synthetic", n=np.nan, n_kind=""):
    y = FORMS[form](t, **params)
    return pd.DataFrame({"curve": name, "group": "human", "source": "test", "delay_value": t,
                         "delay_unit": "days", "measure": "recall", "value": y, "n": n,
                         "derived": False, "n_kind": n_kind})


def test_every_form_has_formula_bounds_priors_and_truth():
    assert set(FORMS) == set(TRUE)
    for name, f in FORMS.items():
        assert f.formula and "R =" in f.formula
        assert set(f.bounds) == set(f.params) and set(f.priors) == set(f.params)
        assert f.has_gamma == ("gamma" in f.params)
        assert name in f.__doc__


def test_golden_values():
    np.testing.assert_allclose(FORMS["power"](np.array([1.0, 4.0]), a=0.5, gamma=0.5),
                               [0.5, 0.25])
    np.testing.assert_allclose(FORMS["wickelgren"](2.0, lam=1.0, beta=1.5, gamma=1.0), 0.25)
    np.testing.assert_allclose(FORMS["power_asymptote"](3.0, c=0.2, b=1.0, gamma=1.0),
                               0.2 + 0.8 / 4)
    np.testing.assert_allclose(FORMS["exponential"](10.0, a=1.0, alpha=0.1), np.exp(-1))
    np.testing.assert_allclose(FORMS["exponential_floor"](0.0, alpha=1.0, floor=0.3), 1.0)
    np.testing.assert_allclose(FORMS["hyperbolic"](4.0, a=1.0, b=0.25), 0.5)
    np.testing.assert_allclose(FORMS["logarithmic"](np.e, a=0.9, b=0.1), 0.8)
    np.testing.assert_allclose(FORMS["logistic"](np.array([5.0, 7.0]), hi=0.9, lo=0.1, t0=5.0,
                                                 w=2.0), [0.5, 0.1 + 0.8 / (1 + np.e)])


@pytest.mark.parametrize("d", [0.1, 0.1542, 0.5, 0.8])
@pytest.mark.parametrize("S", [0.5, 3.0, 100.0])
def test_fsrs_retention_is_0_9_at_stability(d, S):
    assert FORMS["fsrs"](S, S=S, gamma=d) == pytest.approx(0.9, abs=1e-12)
    assert fsrs_factor(0.5) == pytest.approx(19 / 81)  # FSRS-4.5: F = 19/81


@pytest.mark.parametrize("form", list(TRUE))
def test_forms_are_monotone_decreasing(form):
    t = np.linspace(1, 200, 400)
    y = FORMS[form](t, **TRUE[form])
    assert np.all(np.diff(y) <= 1e-12)


def test_likelihoods_match_scipy():
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.05, 0.95, 20)
    y = rng.uniform(0.01, 0.99, 20)
    np.testing.assert_allclose(loglik_normal(y, mu, 0.07), stats.norm.logpdf(y, mu, 0.07))
    phi = 37.0
    np.testing.assert_allclose(loglik_beta(y, mu, phi),
                               stats.beta.logpdf(y, mu * phi, (1 - mu) * phi), rtol=1e-10)
    n = rng.integers(1, 50, 20)
    k = rng.binomial(n, mu)
    np.testing.assert_allclose(loglik_binomial(k, n, mu), stats.binom.logpmf(k, n, mu),
                               rtol=1e-10)


@pytest.mark.parametrize("form", list(TRUE))
def test_mle_recovers_noise_free_parameters(form):
    fit = fit_mle(_curve(form, TRUE[form]), form=form)
    for p, v in TRUE[form].items():
        assert fit.params[p] == pytest.approx(v, rel=2e-3, abs=1e-4), (form, p, fit.params)
    assert np.isfinite(fit.loglik)  # sigma hits its lower bound on noise-free data


@pytest.mark.parametrize("d", [0.5, 0.1542])
def test_fsrs_recovers_d_exactly(d):
    fit = fit_mle(_curve("fsrs", {"S": 7.0, "gamma": d}, t=np.geomspace(0.5, 400, 12)),
                  form="fsrs")
    assert fit.params["gamma"] == pytest.approx(d, abs=1e-5)
    assert fit.params["S"] == pytest.approx(7.0, rel=1e-4)


def test_mle_recovery_with_noise_and_binomial_counts_is_covered():
    rng = np.random.default_rng(3)
    n = 200
    p = FORMS["power"](T, a=0.8, gamma=0.35)
    df = _curve("power", {"a": 0.8, "gamma": 0.35}, n=n, n_kind="trials")
    df["value"] = rng.binomial(n, p) / n
    fit = fit_mle(df)
    assert fit.likelihood == "binomial"
    ci = fit.conf_int(0.01)
    assert ci.loc["gamma", "lower"] < 0.35 < ci.loc["gamma", "upper"]
    assert 0 < fit.stderr["gamma"] < 0.05


def test_ebbinghaus_power_gamma_is_about_0_13():
    e = load_dataset("ebbinghaus1885")
    fit = fit_mle(e, form="power")
    assert fit.params["gamma"] == pytest.approx(0.13, abs=0.01)
    ols = fit_loglog_ols(e)
    assert ols.params["gamma"] == pytest.approx(0.13, abs=0.01)
    lo, hi = ols.conf_int(0.1).loc["gamma"]
    assert lo < ols.params["gamma"] < hi


def test_rubin_gamma_depends_on_offset_and_window():
    r = load_dataset("rubin1999")
    m = r[r["curve"] == "rubin1999/matched"]
    with_lag0 = fit_mle(m, offset=1.0).params["gamma"]
    without = fit_mle(m, window=(0, 2)).params["gamma"]  # window anchors at first t > 0
    assert 0.40 < with_lag0 < 0.52 and 0.28 < without < 0.40


def test_result_object_api_and_json_round_trip():
    fit = fit_mle(load_dataset("ebbinghaus1885"))
    frame = fit.to_frame()
    assert set(frame["param"]) == {"a", "gamma"}
    assert {"estimate", "stderr", "lower", "upper"} <= set(frame.columns)
    assert "gamma" in fit.summary() and fit.aic < fit.bic + 10
    back = PointFitResult.from_json(fit.to_json())
    assert back.params == fit.params and back.aic == pytest.approx(fit.aic)
    np.testing.assert_allclose(back.predict([1.0, 10.0]), fit.predict([1.0, 10.0]))
    json.loads(fit.to_json())  # strict JSON
    assert fit_mle(load_dataset("ebbinghaus1885"), form="exponential").gamma is None


def test_zero_delay_needs_an_offset_for_power():
    r = load_dataset("rubin1999")
    with pytest.raises(DataError, match=r"rubin1999/matched.*row 1.*'delay_value'.*t > 0"):
        fit_mle(r[r["curve"] == "rubin1999/matched"], form="power")
    fit_mle(r[r["curve"] == "rubin1999/matched"], form="wickelgren")  # defined at t = 0


def test_rules_parse_and_validate():
    assert parse_window("0:2") == (0.0, 2.0) and parse_window(None) is None
    assert parse_offset(["1"]) == 1.0
    assert parse_offset(["steps=20", "intervening_items=1"]) == {"steps": 20.0,
                                                                  "intervening_items": 1.0}
    with pytest.raises(ConfigError):
        parse_window("2")
    with pytest.raises(ConfigError):
        ComparisonRules(window=(2, 1))
    with pytest.raises(ConfigError, match="unknown form"):
        get_form("cubic")
    d = ComparisonRules(offset={"steps": 20}).to_dict()
    assert d["rope"] == 0.05 and d["onset"] == "end_of_warmup" and d["exclude_derived"]
    pooled = apply_rules(load_dataset("rubin1999"), ComparisonRules(offset=1), pooled=True)
    assert "rubin1999/mean" not in set(pooled["curve"])
