"""Fast MLE fits for many curves: same numbers as the plain fit, progress on stderr, the bench."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from script_helpers import load_script

import cram.fitting.mle as mle
from cram.cli import main
from cram.fitting import ComparisonRules, fit_mle, fit_mle_many, get_form
from cram.fitting.likelihoods import (
    choose_likelihood,
    loglik_beta,
    loglik_binomial,
    loglik_normal,
    squeeze01,
)
from cram.fitting.rules import apply_rules
from cram.fitting.sensitivity import DEFAULT_WINDOWS, window_sensitivity
from cram.psych_data import load_dataset


def reference_fit(curve_df, rules, likelihood="auto", n_starts=8, seed=0):
    """The fit written the plain way: scipy estimates the gradient itself, no caching."""
    fm = get_form(rules.form)
    data = apply_rules(curve_df, rules, pooled=False, where="point fit")
    lik = choose_likelihood(data, likelihood, bayes=False)
    t, y, n = (data[c].to_numpy(float) for c in ("t", "value", "n"))
    names = list(fm.params)

    def nll(x):
        p = dict(zip(names, x[: len(names)]))
        with np.errstate(all="ignore"):
            mu = fm.fn(t, p, np)
            if not np.all(np.isfinite(mu)):
                return 1e12
            if lik == "normal":
                ll = loglik_normal(y, mu, math.exp(x[-1]))
            elif lik == "beta":
                ll = loglik_beta(squeeze01(y), mu, math.exp(x[-1]))
            else:
                ll = loglik_binomial(np.round(y * n), n, mu)
        s = -float(np.sum(ll))
        return s if math.isfinite(s) else 1e12

    lo = np.array([fm.bounds[p][0] for p in names])
    hi = np.array([fm.bounds[p][1] for p in names])
    nuis = {"normal": (-12.0, 3.0), "beta": (-3.0, 14.0)}.get(lik)
    s0 = fm.start(t, y)
    pad = 1e-9 * (hi - lo)
    x0 = np.clip(np.array([s0[p] for p in names], float), lo + pad, hi - pad)
    if nuis:
        resid = y - fm.fn(t, dict(zip(names, x0)), np)
        init = math.log(max(float(np.std(resid)), 1e-3)) if lik == "normal" else math.log(50.0)
        x0, lo, hi = np.append(x0, init), np.append(lo, nuis[0]), np.append(hi, nuis[1])
    rng = np.random.default_rng(seed)
    best = None
    for i in range(n_starts):
        start = x0 if i == 0 else np.clip(x0 * np.exp(rng.normal(0, 0.5, len(x0))), lo, hi)
        if i > 0 and nuis:
            start[-1] = x0[-1] + rng.normal(0, 0.5)
        res = optimize.minimize(nll, start, method="L-BFGS-B", bounds=list(zip(lo, hi)))
        if best is None or res.fun < best.fun:
            best = res
    res = optimize.minimize(nll, best.x, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    if res.fun <= best.fun and np.all(res.x >= lo) and np.all(res.x <= hi):
        best = res
    d = np.diag(np.linalg.inv(mle._numeric_hessian(nll, best.x)))
    se = np.sqrt(np.where(d > 0, d, np.nan))
    return {"params": dict(zip(names, best.x[: len(names)].tolist())),
            "stderr": dict(zip(names, se[: len(names)].tolist())), "loglik": -float(best.fun)}


def _user_curve(values, n=None, name="u"):
    t = [1, 2, 4, 8, 16, 32, 64]
    df = pd.DataFrame({"curve": name, "delay_value": t[: len(values)], "delay_unit": "hours",
                       "measure": "recall", "value": values, "group": "human",
                       "derived": False, "source": "test", "n": np.nan if n is None else n})
    if n is not None:
        df["n_kind"] = "trials"
    return df


def _rubin(curve="rubin1999/matched"):
    r = load_dataset("rubin1999")
    return r[r["curve"] == curve]


CASES = [
    ("ebbinghaus power normal", lambda: load_dataset("ebbinghaus1885"),
     ComparisonRules(form="power"), "auto", 0),
    ("rubin power beta", _rubin, ComparisonRules(form="power", offset=1.0), "beta", 2),
    ("rubin power window", _rubin, ComparisonRules(form="power", offset=1.0, window=(0.5, 2)),
     "auto", 5),
    ("counts fsrs binomial", lambda: _user_curve([0.9, 0.8, 0.7, 0.62, 0.55, 0.5], n=40),
     ComparisonRules(form="fsrs"), "auto", 0),
    ("asymptote normal", _rubin, ComparisonRules(form="power_asymptote", offset=1.0), "auto",
     1),
    ("hyperbolic beta", lambda: load_dataset("ebbinghaus1885"),
     ComparisonRules(form="hyperbolic"), "beta", 0),
]


@pytest.mark.parametrize("name, data, rules, likelihood, seed", CASES, ids=[c[0] for c in CASES])
def test_fast_fit_gives_the_numbers_of_the_plain_fit(name, data, rules, likelihood, seed):
    """Bit for bit: the finite-difference gradient is the one scipy would estimate itself."""
    df = data()
    fit = fit_mle(df, rules=rules, likelihood=likelihood, seed=seed)
    ref = reference_fit(df, rules, likelihood, seed=seed)
    assert fit.params == ref["params"]
    assert fit.loglik == ref["loglik"]
    for p, se in ref["stderr"].items():
        assert p in fit.at_bound or fit.stderr[p] == se or (np.isnan(se) and
                                                             np.isnan(fit.stderr[p]))


def test_fd_gradient_equals_scipy_approx_derivative_at_and_near_bounds():
    from scipy.optimize._numdiff import approx_derivative

    def f(x):
        return float(np.sum(np.sin(3 * x) * np.exp(x / 7)))

    lo, hi = np.array([0.0, -1.0, 1e-4]), np.array([1.0, 1.0, 5.0])
    grad = mle._with_fd_gradient(f, lo, hi)
    for x in ([0.5, 0.0, 1.0], [1.0, -1.0, 1e-4], [1.0 - 5e-9, 1.0, 5.0], [0.0, 0.3, 4.99999]):
        x = np.array(x)
        expect = approx_derivative(f, x, method="2-point", abs_step=1e-8, f0=f(x),
                                   bounds=(lo, hi))
        assert np.array_equal(grad(x)[1], np.ravel(expect)), x


def _two_curves():
    t = np.geomspace(1, 1000, 12)  # exactly 3 decades: window 0:3 keeps every point, as "all"
    rows = [pd.DataFrame({"curve": f"c{i}", "delay_value": t, "delay_unit": "days",
                          "measure": "recall", "value": np.clip(a * t ** -g + e, 0, 1),
                          "group": "human", "derived": False, "source": "test", "n": np.nan})
            for i, (a, g, e) in enumerate([(0.8, 0.3, 0.01 * np.sin(t)),
                                           (0.7, 0.2, 0.01 * np.cos(t))])]
    return pd.concat(rows, ignore_index=True)


def test_window_sensitivity_reuses_fits_and_matches_one_fit_per_window(monkeypatch):
    df, rules = _two_curves(), ComparisonRules(form="power")
    calls = []
    real = mle._fit_points
    monkeypatch.setattr(mle, "_fit_points", lambda *a: calls.append(1) or real(*a))
    cache: dict = {}
    fit_mle_many(df, rules, cache=cache)
    assert len(calls) == 2
    ws = window_sensitivity(df, rules, cache=cache)
    # per curve 9 windows; "all" is the main fit and 0:3 keeps the same points: 7 new fits
    assert len(calls) == 2 + 2 * 7
    for _, row in ws.iterrows():
        w = None if row["window"] == "all" else (row["window_low"], row["window_high"])
        sub = df[df["curve"] == row["curve"]]
        fit = fit_mle(sub, rules=replace(rules, window=w))  # no cache: a fit of its own
        ci = fit.conf_int(0.1)
        assert (row["gamma"], row["gamma_low"], row["gamma_high"], row["n_points"]) == (
            fit.gamma, ci.loc["gamma", "lower"], ci.loc["gamma", "upper"], fit.n_obs)
    assert len(ws) == 2 * (1 + len(DEFAULT_WINDOWS))


def test_a_cached_fit_is_not_reused_for_another_seed_or_likelihood():
    df = _two_curves()
    sub = df[df["curve"] == "c0"]
    cache: dict = {}
    a = fit_mle(sub, cache=cache)
    b = fit_mle(sub, cache=cache, seed=1)
    c = fit_mle(sub, cache=cache, likelihood="beta")
    assert len(cache) == 3 and c.likelihood == "beta" and a.likelihood == "normal"
    assert b.params != a.params or b.loglik == a.loglik  # another seed: a fit of its own
    again = fit_mle(sub, cache=cache)
    assert len(cache) == 3 and again.params == a.params and again.params is not a.params


def _csv(tmp_path):
    f = tmp_path / "many.csv"
    _two_curves().drop(columns=["group", "derived", "source", "n"]).to_csv(f, index=False)
    return f


def test_progress_on_stderr_unless_quiet(tmp_path, capsys):
    f = _csv(tmp_path)
    assert main(["fit", "gamma", "--human-csv", str(f), "--method", "mle", "--json"]) == 0
    err = capsys.readouterr().err
    assert "mle fits" in err and "window sensitivity" in err and "100%" in err
    assert main(["fit", "gamma", "--human-csv", str(f), "--method", "mle", "--json",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "mle fits" not in captured.err and "window sensitivity" not in captured.err
    assert json.loads(captured.out)["curves"]


def test_progress_updates_are_spaced_out_when_stderr_is_not_a_terminal(capsys):
    bar = mle.progress_bar(range(3), "x", True)  # stderr is captured: not a terminal
    assert bar.mininterval == mle.LOG_PROGRESS_INTERVAL >= 2
    list(bar)
    assert mle.progress_bar(range(3), "x", False) == range(3)


def test_bench_script_writes_its_result_file(tmp_path, capsys):
    from cram.core.results import read_result

    bench = load_script("bench_fit_scaling")
    assert bench.main(["--curves", "2", "--rows", "10", "--options", "bare", "--warmup", "0",
                       "--results", str(tmp_path)]) == 0
    (path,) = (tmp_path / "fit-scaling").glob("*.json")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{6}Z-([0-9a-f]{10}|nocommit)\.json", path.name)
    result = read_result(path)  # checked against the schema of cram.core.results
    assert result.study == "fit-scaling" and result.machine and result.load and result.command
    assert result.date.endswith("Z") and "bench_fit_scaling.py" in result.command
    assert {"load_before", "load_after", "after_commit"} <= set(result.extra)
    (row,) = result.rows
    assert row["curves"] == 2 and row["rows_per_curve"] == 10 and row["rows"] == 20
    assert row["variant"] == "after" and row["options"] == "bare" and row["seconds"] > 0
    assert row["argv"] == ["--no-window-sensitivity", "--no-figures"]
    assert row["progress_fits"] and not row["progress_window_sensitivity"]
    (summary,) = result.tables[0]["rows"]
    assert summary["after_s"] == round(row["seconds"], 2) and summary["before_s"] is None
    assert "| 2 | 10 | 20 | bare |" in capsys.readouterr().out
