"""Bayesian pieces: ROPE statement, loud diagnostics, a tiny single-curve fit (fast tier)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CRAM_PYTENSOR_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".cache" / "pytensor"))

from cram.fitting import ComparisonRules  # noqa: E402
from cram.fitting.bayes import diagnose, fit_bayes, rope_statement  # noqa: E402
from cram.psych_data import load_dataset  # noqa: E402


def test_rope_statement_verdicts():
    rng = np.random.default_rng(0)
    inside = rope_statement(rng.normal(0.0, 0.01, 4000), 0.05, 0.9)
    assert inside["verdict"] == "equivalent" and inside["p_in_rope"] > 0.99
    outside = rope_statement(rng.normal(0.3, 0.02, 4000), 0.05, 0.9)
    assert outside["verdict"] == "different" and outside["p_positive"] > 0.99
    mid = rope_statement(rng.normal(0.05, 0.05, 4000), 0.05, 0.9)
    assert mid["verdict"] == "undecided" and "ROPE" in mid["statement"]
    assert mid["low"] < mid["mean"] < mid["high"]


def test_bad_chains_are_reported_loudly():
    import arviz as az

    rng = np.random.default_rng(1)
    # two chains stuck in different places, and divergences
    gamma = np.stack([rng.normal(0.2, 0.01, 300), rng.normal(0.5, 0.01, 300)])
    idata = az.from_dict(posterior={"gamma": gamma},
                         sample_stats={"diverging": np.r_[np.ones(3), np.zeros(597)]
                                       .reshape(2, 300).astype(bool)})
    d = diagnose(idata, ["gamma"])
    assert not d["ok"] and d["divergences"] == 3
    text = " ".join(d["warnings"])
    assert "R-hat" in text and "ESS" in text and "divergent" in text


def test_single_curve_fit_default_sampler_matches_point_fit():
    e = load_dataset("ebbinghaus1885")
    res = fit_bayes(e, ComparisonRules(form="power"), draws=300, tune=300, chains=1, seed=2,
                    progress=False, prior_sensitivity=False, loo=False)
    assert res.sampler == "pymc" and not res.hierarchical and res.delta_gamma is None
    assert res.target_accept == 0.9  # one curve: no funnel, the cheaper default
    row = res.gamma_table.iloc[0]
    assert row["likelihood"] == "beta"  # Ebbinghaus n is one subject: no binomial
    assert row["gamma_low"] < 0.13 < row["gamma_high"]
    assert 0.08 < row["gamma"] < 0.2
    assert "prior_predictive" in res.idata.groups()
    assert res.ppc["inside"].mean() >= 0.5


@pytest.mark.parametrize("target_accept", [0.0, 1.0, 1.5])
def test_target_accept_outside_0_1_is_refused_before_sampling(target_accept):
    from cram.core.errors import ConfigError

    with pytest.raises(ConfigError, match="target_accept"):
        fit_bayes(load_dataset("ebbinghaus1885"), ComparisonRules(form="power"),
                  target_accept=target_accept, progress=False)


def test_gamma_prior_must_keep_gamma_positive():
    from cram.core.errors import ConfigError
    from cram.fitting.bayes import build_model, prepare
    from cram.fitting.forms import Prior

    md = prepare(load_dataset("ebbinghaus1885"), ComparisonRules())
    with pytest.raises(ConfigError, match="lognormal"):
        build_model(md, "power", gamma_prior=Prior("normal", (0.3, 0.3)))


def test_pymc_likelihoods_match_scipy_and_numpy_versions():
    """The PyMC terms the models use have the parameterisation of fitting.likelihoods."""
    import pymc as pm
    from scipy import stats

    from cram.fitting.likelihoods import loglik_beta, loglik_binomial

    rng = np.random.default_rng(5)
    mu = rng.uniform(0.05, 0.95, 12)
    y = rng.uniform(0.02, 0.98, 12)
    phi = 23.0
    lp = pm.logp(pm.Beta.dist(mu=mu, nu=phi), y).eval()
    np.testing.assert_allclose(lp, stats.beta.logpdf(y, mu * phi, (1 - mu) * phi), rtol=1e-6)
    np.testing.assert_allclose(lp, loglik_beta(y, mu, phi), rtol=1e-6)
    n = rng.integers(5, 60, 12)
    k = rng.binomial(n, mu)
    lb = pm.logp(pm.Binomial.dist(n=n, p=mu), k).eval()
    np.testing.assert_allclose(lb, stats.binom.logpmf(k, n, mu), rtol=1e-6)
    np.testing.assert_allclose(lb, loglik_binomial(k, n, mu), rtol=1e-6)
