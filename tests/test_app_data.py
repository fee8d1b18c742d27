"""Unit tests of cram.apps.data (no Streamlit): run scans, curves, windows, posteriors, claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cram.apps import data as D
from cram.core.errors import DataError, RunFolderError
from cram.testing import write_synthetic_run


def test_scan_runs_sorts_good_partial_and_broken(tmp_path):
    write_synthetic_run(tmp_path / "a" / "cram-seed0", seed=0)
    write_synthetic_run(tmp_path / "b" / "cram-seed0", seed=1)  # same name, other folder
    broken = write_synthetic_run(tmp_path / "broken", seed=2)
    (broken / "metrics.csv").write_text("")
    scan = D.scan_runs(tmp_path)
    assert sorted(scan.runs) == ["a/cram-seed0", "b/cram-seed0"]
    assert "broken" in scan.errors and "metrics.csv" in scan.errors["broken"]
    curves, errors = D.model_curves(scan.runs, "episodic_reliance")
    assert not errors
    # two runs with the same folder name get distinct curve ids
    assert curves["curve"].nunique() == 2
    warm = scan.runs["a/cram-seed0"].warmup_steps
    sub = curves[curves["run_label"] == "a/cram-seed0"]
    assert sub["delay_value"].min() == 0 and (sub["step"] - warm == sub["delay_value"]).all()
    with pytest.raises(DataError, match="unknown model-curve kind"):
        D.model_curves(scan.runs, "nope")


def test_model_curve_errors_are_per_run(tmp_path):
    write_synthetic_run(tmp_path / "good", seed=0)
    bad = write_synthetic_run(tmp_path / "nopatterns", seed=1)
    (bad / "patterns.csv").unlink()
    scan = D.scan_runs(tmp_path)
    curves, errors = D.model_curves(scan.runs, "per_pattern")
    assert set(errors) == {"nopatterns"} and "patterns.csv" in errors["nopatterns"]
    assert set(curves["run_label"]) == {"good"}
    assert any("no patterns.csv" in w for w in scan.warnings["nopatterns"])


def test_normalised_power_law_keeps_its_slope():
    t = np.array([0.0, 1.0, 2.0, 5.0, 10.0, 50.0])
    gamma = 0.37
    df = pd.DataFrame({"curve": "c", "group": "human", "delay_value": t,
                       "value": 0.8 * (t + 1.0) ** -gamma})
    pts = D.normalise_curves(D.add_time(df, 1.0), time_col="t")
    assert pts["t_norm"].iloc[0] == 1.0 and pts["v_norm"].iloc[0] == pytest.approx(1.0)
    slope = np.polyfit(np.log(pts["t_norm"]), np.log(pts["v_norm"]), 1)[0]
    assert slope == pytest.approx(-gamma, abs=1e-9)


def test_window_mask_matches_the_fitting_rules():
    from cram.fitting import ComparisonRules, apply_rules

    rng = np.random.default_rng(0)
    rows = []
    for cid, scale in (("a", 1.0), ("b", 24.0)):
        t = np.unique(np.round(scale * np.geomspace(0.3, 2000, 25), 3))
        rows.append(pd.DataFrame({"curve": cid, "group": "human", "source": "x",
                                  "delay_value": t, "delay_unit": "hours", "measure": "recall",
                                  "value": np.clip(0.9 * (t + 1) ** -0.3
                                                   + rng.normal(0, 0.01, len(t)), 0, 1),
                                  "n": np.nan, "derived": False}))
    df = pd.concat(rows, ignore_index=True)
    for window in [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)]:
        mask = D.window_mask(D.add_time(df, 1.0), window)
        used = apply_rules(df, ComparisonRules(window=window, offset=1.0))
        for cid in ("a", "b"):
            ours = np.sort(df.loc[mask & (df["curve"] == cid).to_numpy(), "delay_value"])
            theirs = np.sort(used.loc[used["curve"] == cid, "delay_value"])
            np.testing.assert_allclose(ours, theirs)
    assert D.window_mask(df, None).all()


def test_posterior_stats_on_normal_draws():
    x = np.random.default_rng(1).normal(0.2, 0.1, 200_000)
    s = D.posterior_stats(x, hdi_prob=0.9)
    assert s["mean"] == pytest.approx(0.2, abs=2e-3)
    assert s["sd"] == pytest.approx(0.1, rel=1e-2)
    # the 90% HDI (arviz.hdi) of a normal is mean ± 1.645 sd
    assert s["hdi_low"] == pytest.approx(0.2 - 0.16449, abs=3e-3)
    assert s["hdi_high"] == pytest.approx(0.2 + 0.16449, abs=3e-3)
    assert s["p_positive"] == pytest.approx(0.97725, abs=3e-3)
    skewed = np.random.default_rng(2).exponential(1.0, 100_000)
    hs = D.posterior_stats(skewed, hdi_prob=0.9)
    assert hs["hdi_low"] < 0.01 and hs["hdi_high"] == pytest.approx(-np.log(0.1), rel=0.03)


def _fixture_fit(tmp_path):
    from cram.apps.fixtures import write_laplace_fit
    from cram.fitting.model_curves import model_curves
    from cram.psych_data import load_dataset

    run = write_synthetic_run(tmp_path / "run", seed=0)
    curves = pd.concat([model_curves([run]), load_dataset("rubin1999")], ignore_index=True)
    return write_laplace_fit(tmp_path / "fit", curves, seed=3), curves


def test_fit_folder_round_trip_and_errors(tmp_path):
    import arviz as az

    from cram.apps.fixtures import write_laplace_fit
    from cram.core import fits

    out, curves = _fixture_fit(tmp_path)
    fit = D.load_fit_folder(out)
    assert isinstance(fit, fits.FitFolder) and D.FitFolder is fits.FitFolder  # the one reader
    assert fit.warnings == []
    idata = az.from_netcdf(out / "posterior.nc")
    np.testing.assert_allclose(fit.draws["delta_gamma"],
                               idata.posterior["delta_gamma"].values.reshape(-1))
    assert fit.measures() == ["attention_library", "recall"]
    assert "form: power" in fit.describe() and "window: all delays" in fit.describe()
    assert D.describe_inputs(fit) == {"model": "run-seed0:attention_library",
                                      "human": "rubin1999 (3 curves)"}
    assert D.find_fits(tmp_path) == [out]
    with pytest.raises(Exception, match="already exists"):
        write_laplace_fit(out, curves)
    (out / "curves.csv").write_bytes(b"\xff\xfe\x00bad")
    assert any("curves.csv" in w for w in D.load_fit_folder(out).warnings)
    (out / "result.json").write_text("[1, 2]")
    with pytest.raises(RunFolderError, match="expected a JSON object"):
        D.load_fit_folder(out)
    with pytest.raises(RunFolderError, match="missing result.json"):
        D.load_fit_folder(tmp_path / "run")


def test_hdi_comes_from_the_fit_or_from_arviz(tmp_path):
    """The HDI is the one the fit wrote (summary.csv); without it, arviz.hdi on the draws."""
    import arviz as az

    out, _ = _fixture_fit(tmp_path)
    fit = D.load_fit_folder(out)
    hdi = fit.hdi("delta_gamma")
    row = fit.summary.set_index("variable").loc["delta_gamma"]
    assert (hdi.low, hdi.high, hdi.prob, hdi.source) == (row["hdi_5%"], row["hdi_95%"], 0.9,
                                                           "summary.csv")
    want = az.hdi(fit.draws["delta_gamma"], hdi_prob=0.8)
    at80 = fit.hdi("delta_gamma", 0.8)  # not in summary.csv: computed by ArviZ on the posterior
    assert at80.source == "posterior.nc" and (at80.low, at80.high) == tuple(want)
    assert fit.hdi("no_such_variable") is None
    table = fit.posterior_table()
    assert list(table.columns) == ["variable", "mean", "sd", "hdi_low", "hdi_high"]
    assert "delta_gamma" in set(table["variable"])
    (out / "summary.csv").unlink()
    bare = D.load_fit_folder(out)
    assert any("no summary.csv" in w for w in bare.warnings)
    assert bare.hdi("delta_gamma").source == "posterior.nc"
    assert bare.posterior_table().empty


def test_interval_wording_is_one_and_the_same():
    assert D.hdi_label(0.9) == "90% HDI (Bayesian posterior)"
    assert D.ci_label(0.9) == "90% confidence interval (MLE)"
    caption = D.intervals_caption(0.9)
    assert "90% HDI" in caption and "90% confidence interval (MLE)" in caption
    assert "\n" not in caption


def test_delta_gamma_mle_is_a_wald_interval_of_the_difference():
    d = D.delta_gamma_mle(0.5, 0.03, 0.2, 0.04, level=0.9)
    assert d["delta"] == pytest.approx(0.3) and d["se"] == pytest.approx(0.05)
    assert (d["low"], d["high"]) == pytest.approx((0.3 - 1.644854 * 0.05, 0.3 + 1.644854 * 0.05))
    nan = D.delta_gamma_mle(0.5, float("nan"), 0.2, 0.04)
    assert np.isnan(nan["low"]) and nan["delta"] == pytest.approx(0.3)


def test_user_csv_is_checked_like_cram_data_check(tmp_path):
    from cram.psych_data import load_curves_csv

    text = ("delay_value,delay_unit,measure,value\n1,hours,recall,0.9\n2,hours,recall,0.8\n"
            "4,hours,recall,0.7\n")
    df, err = D.load_user_csv("../odd name!.csv", text.encode())
    # the file stem, wherever the upload was kept
    assert err is None and list(df["curve"].unique()) == ["odd_name"]
    assert set(df["dataset"]) == {"your CSV: odd_name.csv"} and set(df["group"]) == {"human"}
    assert not df["source"].str.contains("cram-upload").any()  # no temp path leaks
    (tmp_path / "odd_name.csv").write_text(text)
    same = load_curves_csv(tmp_path / "odd_name.csv")
    np.testing.assert_allclose(df["value"], same["value"])
    assert D.is_user_curve(df).all()
    for data, why in ((b"delay,value\n1,2\n", "missing required column(s)"),
                      (text.replace("0.8", "80").encode(), "outside [0, 1]"),
                      (b"\xff\xfe", "not UTF-8")):
        df, err = D.load_user_csv("u.csv", data)
        assert df is None and err.startswith("u.csv: ") and why in err, err
        assert "\n" not in err and "cram-upload" not in err
    model = ("delay_value,delay_unit,measure,value,group\n1,hours,recall,0.9,model\n"
             "2,hours,recall,0.8,model\n")
    df, err = D.load_user_csv("m.csv", model.encode())
    assert df is None and "human curves only" in err


def test_fit_request_is_a_cram_fit_gamma_call(tmp_path):
    """The on-demand fit's command is accepted by `cram fit gamma` (run here as a point fit)."""
    import subprocess

    run = write_synthetic_run(tmp_path / "runs" / "cram-seed0", seed=0)
    csv = tmp_path / "mine.csv"
    csv.write_text("delay_value,delay_unit,measure,value\n1,hours,recall,0.9\n"
                   "2,hours,recall,0.8\n4,hours,recall,0.7\n8,hours,recall,0.6\n")
    out = D.new_fit_folder(tmp_path / "fits")
    assert out.parent == tmp_path / "fits" / "app-fits" and out.name.startswith("bayes-")
    req = D.FitRequest(out=out, runs=[run], kind="episodic_reliance", datasets=["rubin1999"],
                       csvs=[csv], form="power", offset=1.0, window=(0.0, 2.0), seed=1,
                       draws=250)
    cmd = req.command()
    assert cmd[1:5] == ["-m", "cram", "fit", "gamma"]
    i = cmd.index("--method")
    assert cmd[i + 1] == "bayes" and cmd[cmd.index("--out") + 1] == str(out)
    assert cmd[cmd.index("--window") + 1] == "0:2" and cmd[cmd.index("--offset") + 1] == "1"
    cmd[i + 1] = "mle"  # the same call as a point fit: seconds, no PyMC
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fit = D.load_fit_folder(out)
    assert set(fit.inputs()["dataset"]) >= {"rubin1999"}
    assert "mine" in set(fit.inputs()["curve"])  # the user CSV mine.csv, one curve
    # a failing call is one line, the command's own error
    bad = D.FitRequest(out=out, runs=[], kind="episodic_reliance", datasets=["nope"], csvs=[],
                       form="power", offset=None, window=None)
    path, err = D.run_fit(bad)
    assert path is None and "already exists" in err and "\n" not in err


def test_claims_registry(tmp_path):
    df = D.load_claims(D.default_claims_path())
    assert D.default_claims_path().name == "registry.toml"
    assert {"id", "section", "claim", "status", "ours_cell", "detail"} <= set(df.columns)
    assert set(df["status"]) <= {"reproduced", "refuted", "qualified", "not yet tested"}
    bad = tmp_path / "registry.toml"
    bad.write_text('[[claim]]\nid = "x"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"claim 'x': field 'section' is missing"):
        D.load_claims(bad)
    with pytest.raises(DataError, match="no such file"):
        D.load_claims(tmp_path / "nope.toml")


def test_transitions_table_carries_the_familiarity_rise(tmp_path):
    import json

    with_rise = write_synthetic_run(tmp_path / "new", seed=0)
    (with_rise / "transition.json").write_text(json.dumps({
        "series": "attention_library", "step": 325.0, "low": 300.0, "high": 350.0,
        "familiarity_rise": {"step": 250.0}, "lag_after_familiarity": 75.0}))
    older = write_synthetic_run(tmp_path / "old", seed=1)  # written before the rise was recorded
    (older / "transition.json").write_text(json.dumps({"series": "attention_library",
                                                       "step": 245.0, "low": 225.0, "high": 250.0}))
    table = D.transitions(D.scan_runs(tmp_path).runs).set_index("run")
    assert table.loc["new", "familiarity_rise"] == 250.0
    assert table.loc["new", "lag_after_familiarity"] == 75.0
    assert np.isnan(table.loc["old", "familiarity_rise"]) and table.loc["old", "step"] == 245.0


def test_find_fits_skips_hidden_temp_folders(tmp_path):
    """A killed `cram fit --out` leaves `.fit.tmp-<pid>-XXXX`: never listed as a fit."""
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "result.json").write_text("{}")
    tmp = tmp_path / ".fit.tmp-99999999-abcd"
    tmp.mkdir()
    (tmp / "result.json").write_text("{}")
    assert D.find_fits(tmp_path) == [tmp_path / "fit"]


def test_app_roots_come_from_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAM_APP_RUNS", str(tmp_path / "r"))
    monkeypatch.setenv("CRAM_APP_FITS", str(tmp_path / "f"))
    assert D.app_roots() == (tmp_path / "r", tmp_path / "f")
    monkeypatch.delenv("CRAM_APP_FITS")
    assert D.app_roots() == (tmp_path / "r", tmp_path / "r")
