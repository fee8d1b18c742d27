"""The form check of `cram fit gamma`: a cliff is not a power law, a power law is (fast tier).

The cliff is the shape of the demo run's episodic-reliance curve (library-query attention falls
from 1.0 to about 0.01 within about 100 steps after warm-up), written into a synthetic run folder
and into a user CSV; the converse is a curve drawn from a true power law with binomial noise. The
Bayesian path is checked on hand-made pointwise log-likelihoods here and end to end (slow tier).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("CRAM_PYTENSOR_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".cache" / "pytensor"))

from cram.cli import main  # noqa: E402
from cram.core.runs import METRICS_FILE  # noqa: E402
from cram.fitting import FORMS, ComparisonRules, fit_mle, load_fit  # noqa: E402
from cram.fitting.form_check import (  # noqa: E402
    MIN_DELTA,
    FormScore,
    check_bayes_fits,
    check_point_fits,
    judge,
)
from cram.testing import write_synthetic_run  # noqa: E402

#: library-query attention after warm-up, every 20 steps: the demo's cliff (runs/demo/cram-seed0
#: fell from 1.0 to 0.46, 0.084, 0.050, 0.031, ... 0.012 and 0 within about 100 steps)
CLIFF = [1.0] * 7 + [0.46, 0.084, 0.05, 0.031, 0.021, 0.021, 0.021, 0.014, 0.014, 0.012] + [0.0] * 9


def _json(capsys):
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def cliff_run(tmp_path):
    """A synthetic run folder whose episodic-reliance curve is the demo's cliff."""
    run = write_synthetic_run(tmp_path / "cram-seed0", seed=0)
    metrics = pd.read_csv(run / METRICS_FILE)
    after = metrics["step"] >= 100  # warm-up ends at step 100
    assert after.sum() == len(CLIFF)
    metrics.loc[after, "attention_library"] = CLIFF
    metrics.to_csv(run / METRICS_FILE, index=False)
    return run


def _power_law_csv(path: Path, seed: int = 0, trials: int = 200) -> Path:
    t = np.geomspace(1, 100, 12)
    rng = np.random.default_rng(seed)
    value = rng.binomial(trials, 0.85 * t ** -0.4) / trials
    pd.DataFrame({"delay_value": t, "delay_unit": "days", "measure": "recall", "value": value,
                  "n": trials}).to_csv(path, index=False)
    return path


def _curve(values, t, name="c", n=np.nan, n_kind=""):
    return pd.DataFrame({"curve": name, "group": "human", "source": "test", "delay_value": t,
                         "delay_unit": "days", "measure": "recall", "value": values, "n": n,
                         "derived": False, "n_kind": n_kind})


def test_the_logistic_step_is_a_form_with_sensible_bounds():
    f = FORMS["logistic"]
    assert not f.has_gamma and set(f.time_scaled) == {"t0", "w"}
    assert f(np.array([20.0]), hi=0.9, lo=0.1, t0=20.0, w=4.0) == pytest.approx(0.5)
    far = f(np.array([0.0, 1e9]), hi=0.9, lo=0.1, t0=20.0, w=1e-6)  # a sharp step: no NaN
    np.testing.assert_allclose(far, [0.9, 0.1])
    t = np.arange(0.0, 500.0, 20.0)
    truth = {"hi": 0.98, "lo": 0.02, "t0": 130.0, "w": 8.0}
    fit = fit_mle(_curve(f(t, **truth), t), form="logistic")
    for p, v in truth.items():
        assert fit.params[p] == pytest.approx(v, rel=1e-3, abs=1e-4), (p, fit.params)


def test_cram_fit_gamma_reports_the_demo_cliff_as_not_a_power_law(cliff_run, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", "gamma", "--run", str(cliff_run), "--offset", "steps=20", "--json",
                 "--out", str(out), "--no-figures"]) == 0
    doc = _json(capsys)
    (c,) = doc["curves"]
    check = c["form_check"]
    assert check["passes"] is False and c["gamma_valid"] is False
    assert check["beaten_by"] == "logistic" and check["delta"] > 2 * check["dse"] > 0
    assert check["verdict"].startswith("not a power law: a logistic step fits better (ΔAIC/2 = ")
    assert check["verdict"].endswith("γ is not a property of this curve")
    assert c["gamma"] is not None  # γ is kept, marked, never dropped
    assert doc["form_check"]["failing"] == [c["curve"]]
    assert "logistic" in doc["form_check"]["alternatives"]
    # the fit folder says the same: result.json, summary.csv, form_check.csv, window sensitivity
    fit = load_fit(out)
    assert fit.result["curves"][0]["gamma_valid"] is False
    assert not fit.summary["gamma_valid"].astype(bool).any()
    table = fit.extra("form_check")
    assert set(table["form"]) == {"power", "exponential", "hyperbolic", "logistic"}
    assert table.loc[table["form"] == "logistic", "rank"].item() == 1
    ws = fit.extra("window_sensitivity")
    assert set(ws["method"]) == {"mle"} and set(ws["form"]) == {"power"}
    assert set(ws["offset"]) == {"steps=20"} and not ws["gamma_valid"].astype(bool).any()
    statement = fit.result["window_sensitivity"]["statement"]
    assert "maximum-likelihood point fits" in statement and "offset steps=20" in statement
    # and in words on stderr, without --json
    assert main(["fit", "gamma", "--run", str(cliff_run), "--offset", "steps=20", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "NOT INTERPRETABLE" in err and "form check: not a power law" in err


def test_a_cliff_in_a_user_csv_fails_and_a_power_law_passes(tmp_path, capsys):
    cliff = tmp_path / "cliff.csv"
    pd.DataFrame({"delay_value": np.arange(len(CLIFF)) * 20.0, "delay_unit": "steps",
                  "measure": "attention", "value": CLIFF}).to_csv(cliff, index=False)
    power = _power_law_csv(tmp_path / "power.csv")
    assert main(["fit", "gamma", "--human-csv", str(cliff), "--human-csv", str(power),
                 "--offset", "steps=20", "--likelihood", "auto", "--json", "--quiet",
                 "--no-window-sensitivity"]) == 0
    curves = {c["curve"]: c for c in _json(capsys)["curves"]}
    assert curves["cliff"]["gamma_valid"] is False
    assert "a logistic step fits better" in curves["cliff"]["form_check"]["verdict"]
    good = curves["power"]
    assert good["gamma_valid"] is True and good["form_check"]["passes"] is True
    assert good["form_check"]["verdict"].startswith("a power law passes: ")
    assert good["form_check"]["verdict"].endswith("γ describes this curve")
    assert good["gamma_low"] < 0.4 < good["gamma_high"]


@pytest.mark.parametrize("seed", range(4))
def test_true_power_laws_with_binomial_noise_pass_and_exponentials_fail(seed):
    t = np.geomspace(1, 100, 12)
    rng = np.random.default_rng(seed)
    power = _curve(rng.binomial(200, 0.85 * t ** -0.4) / 200, t, "power", 200.0, "trials")
    expo = _curve(rng.binomial(200, 0.9 * np.exp(-t / 20)) / 200, t, "expo", 200.0, "trials")
    records, table = check_point_fits(pd.concat([power, expo]), ComparisonRules(form="power"))
    assert records["power"]["passes"], records["power"]["verdict"]
    assert records["power"]["ranking"][0]["form"] == "power"
    assert not records["expo"]["passes"]
    assert records["expo"]["verdict"].startswith("not a power law: ")
    assert set(table["curve"]) == {"power", "expo"} and len(table) == 8


def test_the_verdict_rules_coverage_and_noise():
    zeros = np.zeros(20)
    main_score = FormScore("power", pointwise=zeros, score=0.0, se=0.0,
                           inside=np.r_[np.ones(12), np.zeros(8)].astype(bool))
    near = FormScore("exponential", pointwise=zeros + (MIN_DELTA - 1) / 20,
                     score=MIN_DELTA - 1, se=0.0)
    rec, rows = judge("c", "power", {"power": main_score, "exponential": near}, level=0.9,
                      method="bayes")
    # 12 of 20 inside a 90% interval: p = 4e-4 < 0.01; exponential ahead by 3 < MIN_DELTA
    assert rec["passes"] is False and rec["beaten_by"] is None
    assert rec["verdict"].startswith("not a power law: only 12 of 20 points (60%) lie inside "
                                     "its 90% predictive interval")
    main_score.inside = np.r_[np.ones(17), np.zeros(3)].astype(bool)  # p = 0.32: within noise
    rec, _ = judge("c", "power", {"power": main_score, "exponential": near}, level=0.9,
                   method="bayes")
    assert rec["passes"] is True
    assert "an exponential is ahead by ΔELPD = 3.0 ± 0.0, within the noise" in rec["verdict"]
    noisy = FormScore("logistic", pointwise=np.r_[np.full(10, 5.0), np.full(10, -3.0)],
                      score=20.0, se=0.0)  # ahead by 20, but dse = sqrt(20 · 16) = 17.9
    rec, _ = judge("c", "power", {"power": main_score, "logistic": noisy}, level=0.9,
                   method="mle")
    assert rec["passes"] is True and "ΔAIC/2 = 20.0 ± 17.9, within the noise" in rec["verdict"]
    steady = FormScore("logistic", pointwise=np.r_[np.full(10, 3.0), np.full(10, -1.0)],
                       score=20.0, se=0.0)  # ahead by 20 with dse = 8.9: clearly
    rec, _ = judge("c", "power", {"power": main_score, "logistic": steady}, level=0.9,
                   method="mle")
    assert rec["beaten_by"] == "logistic" and "(ΔAIC/2 = 20.0 ± 8.9)" in rec["verdict"]
    missing = FormScore("logistic", note="not fitted: curve has 2 points")
    rec, _ = judge("c", "exponential", {"exponential": near, "logistic": missing}, level=0.9,
                   method="mle")
    assert "γ" not in rec["verdict"]  # no power exponent: nothing said about γ
    assert "logistic not fitted" in rec["verdict"]


class _FakeBayesFit:
    """What :func:`check_bayes_fits` reads of a Bayesian fit: idata, curves, ppc, diagnostics."""

    def __init__(self, data, loglik_mean: dict, ok: bool = True, ppc=None):
        import arviz as az

        from cram.fitting.bayes import obs_labels

        rng = np.random.default_rng(0)
        means = np.concatenate([np.full((data["curve"] == c).sum(), m)
                                for c, m in loglik_mean.items()])
        draws = means + rng.normal(0, 0.01, (2, 200, len(means)))
        self.idata = az.from_dict(posterior={"x": rng.normal(size=(2, 200))},
                                  log_likelihood={"obs": draws},
                                  coords={"obs_id": obs_labels(data)}, dims={"obs": ["obs_id"]})
        self.curves, self.ppc = data, ppc
        self.diagnostics = {"ok": ok, "warnings": [] if ok else ["3 divergent transition(s)"]}


def test_the_bayesian_check_reads_pointwise_loo_per_curve():
    from cram.fitting.form_check import apply_to_doc, fit_notes

    t = np.arange(1.0, 11.0)
    data = pd.concat([_curve(0.5, t, "step"), _curve(0.5, t, "power")], ignore_index=True)
    data["group"] = ["model"] * 10 + ["human"] * 10
    data["t"] = data["delay_value"]
    ppc = data[["curve"]].assign(inside=True)
    fits = {"power": _FakeBayesFit(data, {"step": -1.0, "power": -1.0}, ppc=ppc),
            "exponential": _FakeBayesFit(data, {"step": -2.0, "power": -2.0}, ok=False),
            "hyperbolic": "curve 'step': no t > 0",
            "logistic": _FakeBayesFit(data, {"step": 2.0, "power": -1.5})}
    records, table = check_bayes_fits(fits, "power", 0.9)
    step, power = records["step"], records["power"]
    assert step["passes"] is False and step["beaten_by"] == "logistic"
    assert "a logistic step fits better (ΔELPD = 30.0 ± 0.0)" in step["verdict"]
    assert "hyperbolic not fitted" in step["verdict"]
    assert power["passes"] is True and power["coverage"] == 1.0
    assert "ranked first of 3 forms" in power["verdict"]
    notes = fit_notes(fits, "power")
    assert any(n.startswith("exponential fit: 3 divergent") for n in notes)
    doc = {"curves": [{"curve": "step", "group": "model", "gamma": 0.5},
                      {"curve": "power", "group": "human", "gamma": 0.4},
                      {"curve": "group:model", "group": "model", "gamma": 0.5}],
           "delta_gamma": {"statement": "undecided"}, "diagnostics": {"ok": True, "warnings": []}}
    apply_to_doc(doc, records, "power", "bayes", 0.9, notes)
    valid = {c["curve"]: c["gamma_valid"] for c in doc["curves"]}
    assert valid == {"step": False, "power": True, "group:model": False}
    assert "not a power law" in doc["curves"][2]["gamma_note"]
    assert doc["delta_gamma"]["gamma_valid"] is False
    assert "step" in doc["delta_gamma"]["form_caveat"]
    assert doc["diagnostics"]["ok"] and any("form check, exponential fit" in w
                                            for w in doc["diagnostics"]["warnings"])
    assert set(table.columns) >= {"curve", "form", "rank", "delta", "dse", "coverage"}


def test_no_form_check_leaves_the_result_as_it_was(capsys):
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--json", "--quiet",
                 "--no-form-check", "--no-window-sensitivity"]) == 0
    doc = _json(capsys)
    assert "form_check" not in doc and "gamma_valid" not in doc["curves"][0]


@pytest.mark.slow
def test_bayesian_fit_reports_the_cliff_as_not_a_power_law(tmp_path, capsys):
    """PSIS-LOO of Bayesian fits (small sampling settings): the cliff fails, by ΔELPD."""
    cliff = tmp_path / "cliff.csv"
    pd.DataFrame({"delay_value": np.arange(len(CLIFF)) * 20.0, "delay_unit": "steps",
                  "measure": "attention", "value": CLIFF}).to_csv(cliff, index=False)
    out = tmp_path / "bfit"
    assert main(["fit", "gamma", "--human-csv", str(cliff), "--offset", "steps=20", "--method",
                 "bayes", "--draws", "300", "--tune", "300", "--chains", "2", "--seed", "2",
                 "--json", "--quiet", "--out", str(out), "--no-figures"]) == 0
    doc = _json(capsys)
    (c,) = doc["curves"]
    assert c["gamma_valid"] is False and c["form_check"]["passes"] is False
    assert "not a power law" in c["form_check"]["verdict"]
    assert "ΔELPD" in c["form_check"]["verdict"] or "predictive interval" in c["form_check"][
        "verdict"]
    assert "PSIS-LOO" in doc["form_check"]["method"]
    assert "not the Bayesian fit" in doc["window_sensitivity"]["statement"]
    summary = load_fit(out).summary
    gamma_rows = summary[summary["param"] == "gamma"]
    assert not gamma_rows["gamma_valid"].astype(bool).any()
