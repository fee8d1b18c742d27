"""`cram fit gamma` end to end: MLE and a tiny Bayesian fit, fit folders, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# keep PyTensor's compile cache inside the checkout (before anything imports pytensor)
os.environ.setdefault("CRAM_PYTENSOR_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".cache" / "pytensor"))

from cram.cli import main  # noqa: E402
from cram.fitting import load_fit  # noqa: E402
from cram.testing import write_synthetic_run  # noqa: E402


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_mle_ebbinghaus_json_and_folder(tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle", "--json",
                 "--out", str(out), "--seed", "3"])
    assert code == 0
    doc = _json(capsys)
    (c,) = doc["curves"]
    assert c["curve"] == "ebbinghaus1885" and abs(c["gamma"] - 0.13) < 0.01
    assert c["gamma_low"] < c["gamma"] < c["gamma_high"]
    assert doc["delta_gamma"] is None and doc["diagnostics"]["ok"]
    fit = load_fit(out)
    for key in ("form", "method", "window", "rules", "seed", "created"):
        assert key in fit.result
    assert fit.result["seed"] == 3 and fit.result["rules"]["rope"] == 0.05
    assert fit.idata is None and {"param", "estimate"} <= set(fit.summary.columns)
    assert "t" in fit.curves.columns
    assert {p.name for p in fit.figures} >= {"curves.png", "gamma_forest.png"}
    # never overwrite an existing --out
    before = (out / "result.json").read_text()
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle",
                 "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "result.json").read_text() == before


def test_exponential_reports_null_gamma(capsys):
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle",
                 "--form", "exponential", "--json", "--no-window-sensitivity"]) == 0
    doc = _json(capsys)
    assert doc["curves"][0]["gamma"] is None


@pytest.mark.parametrize("argv, pattern", [
    (["--human", "rubin1999", "--method", "mle"], "needs t > 0"),
    (["--human", "nope", "--method", "mle"], "unknown dataset"),
    (["--method", "mle"], "nothing to fit"),
    (["--human", "ebbinghaus1885", "--window", "oops"], "--window"),
    (["--human-csv", "/no/such.csv"], "no such file"),
    (["--human", "ebbinghaus1885", "--target-accept", "1.0"], "--target-accept 1.0: must be in"),
])
def test_bad_input_exits_nonzero_with_message(argv, pattern, capsys):
    assert main(["fit", "gamma", *argv]) != 0
    assert pattern in capsys.readouterr().err


def test_bad_csv_names_file_row_column(tmp_path, capsys):
    f = tmp_path / "bad.csv"
    f.write_text("delay_value,delay_unit,measure,value\n1,days,recall,0.5\n2,days,recall,nan\n")
    assert main(["fit", "gamma", "--human-csv", str(f), "--method", "mle"]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "row 2" in err and "'value'" in err


def test_unknown_form_is_rejected():
    with pytest.raises(SystemExit) as e:
        main(["fit", "gamma", "--human", "ebbinghaus1885", "--form", "cubic"])
    assert e.value.code != 0


def test_tiny_bayesian_fit_human_vs_model(tmp_path, capsys):
    """Small and fast (nutpie, 2 chains x 150 draws): checks the contract, not calibration."""
    # nutpie here: no worker processes, so the tiny fit starts fastest
    run = write_synthetic_run(tmp_path / "cram-seed0", seed=0)
    out = tmp_path / "bfit"
    code = main(["fit", "gamma", "--human", "rubin1999", "--run", str(run), "--method", "bayes",
                 "--offset", "intervening_items=1", "--offset", "steps=10", "--draws", "150",
                 "--tune", "150", "--chains", "2", "--seed", "1", "--json", "--out", str(out),
                 "--sampler", "nutpie",
                 "--no-window-sensitivity", "--no-form-check"])  # form check: its own tests
    assert code == 0
    doc = _json(capsys)
    curves = {c["curve"]: c for c in doc["curves"]}
    assert "rubin1999/mean" not in curves  # derived: kept out of pooled fits
    assert {"group:human", "group:model", "cram-seed0:attention_library"} <= set(curves)
    for c in curves.values():
        assert c["gamma_low"] <= c["gamma"] <= c["gamma_high"]
    d = doc["delta_gamma"]
    assert d["rope"] == 0.05 and d["verdict"] in {"equivalent", "different", "undecided"}
    for key in ("r_hat_max", "ess_bulk_min", "divergences", "warnings"):
        assert key in doc["diagnostics"]
    assert doc["hierarchical"] and doc["target_accept"] == 0.99  # the hierarchical default
    fit = load_fit(out)
    assert "delta_gamma" in fit.idata.posterior
    for group in ("posterior", "prior", "posterior_predictive", "log_likelihood"):
        assert group in fit.idata.groups()
    assert {"variable", "mean", "r_hat", "ess_bulk"} <= set(fit.summary.columns)
    assert fit.result["rules"]["offset"] == {"intervening_items": 1.0, "steps": 10.0}
    assert (out / "figures" / "delta_gamma.png").is_file()
    assert fit.extra("ppc") is not None and fit.extra("prior_predictive") is not None
    assert (out / "figures" / "prior_predictive.png").is_file()


def test_rules_file_fixes_the_rules(tmp_path, capsys):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"form": "power", "offset": {"intervening_items": 1},
                                 "window": "0:2", "rope": 0.05}))
    assert main(["fit", "gamma", "--human", "rubin1999", "--method", "mle", "--rules",
                 str(rules), "--json", "--no-window-sensitivity"]) == 0
    doc = _json(capsys)
    assert doc["rules"]["window"] == [0.0, 2.0] and len(doc["rules"]["fingerprint"]) == 16
    # the rules file cannot be overridden from the command line
    assert main(["fit", "gamma", "--human", "rubin1999", "--method", "mle", "--rules",
                 str(rules), "--window", "0:1"]) == 2
    assert "fixes the comparison rules" in capsys.readouterr().err
    rules.write_text(json.dumps({"form": "power", "windw": "0:2"}))
    assert main(["fit", "gamma", "--human", "rubin1999", "--rules", str(rules)]) == 2
    assert "unknown rule field(s) ['windw']" in capsys.readouterr().err


def _csv(tmp_path, text: str) -> Path:
    f = tmp_path / "user.csv"
    f.write_text(text)
    return f


def test_binomial_on_a_user_csv_with_n_but_no_n_kind(tmp_path, capsys):
    f = _csv(tmp_path, "delay_value,delay_unit,measure,value,n\n1,hours,recall,0.9,40\n"
                       "2,hours,recall,0.8,40\n4,hours,recall,0.7,40\n8,hours,recall,0.62,40\n")
    code = main(["fit", "gamma", "--human-csv", str(f), "--method", "mle", "--likelihood",
                 "binomial", "--json", "--quiet"])
    assert code == 0
    (c,) = _json(capsys)["curves"]
    assert c["likelihood"] == "binomial" and 0 < c["gamma"] < 1


def test_gamma_at_its_bound_is_flagged(tmp_path, capsys):
    """All-zero recall drives γ to its upper bound: flagged, no interval, diagnostics not ok."""
    f = _csv(tmp_path, "delay_value,delay_unit,measure,value\n1,hours,recall,0\n"
                       "2,hours,recall,0\n4,hours,recall,0\n8,hours,recall,0\n")
    out = tmp_path / "fit"
    code = main(["fit", "gamma", "--human-csv", str(f), "--method", "mle", "--json", "--quiet",
                 "--out", str(out), "--no-figures", "--no-window-sensitivity"])
    assert code == 0
    doc = _json(capsys)
    (c,) = doc["curves"]
    assert "gamma" in c["at_bound"] and c["gamma_low"] is None and c["gamma_high"] is None
    assert not doc["diagnostics"]["ok"]
    assert any("gamma" in w and "at a bound" in w for w in doc["diagnostics"]["warnings"])
    summary = load_fit(out).summary
    assert bool(summary.loc[summary["param"] == "gamma", "at_bound"].iloc[0])
    code = main(["fit", "gamma", "--human-csv", str(f), "--method", "mle", "--quiet"])
    assert "AT ITS BOUND" in capsys.readouterr().err


def test_a_normal_fit_is_not_at_a_bound(capsys):
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle", "--json",
                 "--quiet"]) == 0
    (c,) = _json(capsys)["curves"]
    assert c["at_bound"] == [] and c["gamma_low"] < c["gamma"] < c["gamma_high"]


def test_stale_temp_folder_of_a_killed_fit_is_removed(tmp_path):
    from cram.fitting.io import FitFolderWriter

    dead = tmp_path / ".fit.tmp-999999999-abcd"  # no such PID
    dead.mkdir()
    (dead / "result.json").write_text("{}")
    alive = tmp_path / f".fit.tmp-{os.getpid()}-efgh"  # a live writer's: kept
    alive.mkdir()
    with FitFolderWriter(tmp_path / "fit") as w:
        assert w.path.name.startswith(f".fit.tmp-{os.getpid()}-")
        (w.path / "result.json").write_text("{}")
    assert not dead.exists() and alive.exists()
    assert (tmp_path / "fit" / "result.json").is_file()
    mode = (tmp_path / "fit").stat().st_mode & 0o777
    from cram.core.jsonio import current_umask

    assert mode == 0o777 & ~current_umask()


def test_one_reader_of_fit_folders(tmp_path, capsys):
    """`cram.fitting.load_fit` is `cram.core.fits.load_fit`; strict and display reads."""
    import subprocess
    import sys

    from cram.core import fits
    from cram.core.errors import RunFolderError
    from cram.fitting import io

    assert load_fit is fits.load_fit and io.load_fit is fits.load_fit
    assert (io.RESULT_FILE, io.SUMMARY_FILE, io.POSTERIOR_FILE, io.CURVES_FILE) == (
        fits.RESULT_FILE, fits.SUMMARY_FILE, fits.POSTERIOR_FILE, fits.CURVES_FILE)
    out = tmp_path / "fit"
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle", "--quiet",
                 "--out", str(out), "--no-figures", "--no-window-sensitivity"]) == 0
    capsys.readouterr()
    fit = load_fit(out)
    assert fit.method == "mle" and fit.idata is None and fit.draws == {}
    assert fit.hdi("gamma") is None  # a point fit has no posterior interval
    assert fits.find_fits(tmp_path) == [out]
    (out / "posterior.nc").write_bytes(b"not netCDF")
    with pytest.raises(RunFolderError, match="posterior.nc: cannot be read"):
        load_fit(out)
    shown = fits.load_fit(out, strict=False)  # for display: the problem is a warning
    assert shown.idata is None and any("posterior.nc" in w for w in shown.warnings)
    (out / "posterior.nc").unlink()
    (out / "curves.csv").unlink()
    with pytest.raises(RunFolderError, match="missing curves.csv"):
        load_fit(out)
    assert fits.load_fit(out, strict=False).warnings == [f"{out}: no curves.csv"]
    # the reader lives in core: importing it loads neither pandas nor ArviZ
    code = ("import sys, cram.core.fits\n"
            "print(sorted({'pandas', 'arviz', 'numpy', 'torch'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr[-2000:]


def test_a_fit_lands_as_a_result_file_with_its_verdicts(tmp_path, capsys):
    from cram.core.results import read_result

    results = tmp_path / "results"
    results.mkdir()
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--human", "rubin1999",
                 "--offset", "intervening_items=1", "--method", "mle", "--no-figures",
                 "--quiet", "--results", str(results), "--title", "Human fits"]) == 0
    (path,) = list(results.rglob("*.json"))
    result = read_result(path)
    assert result.title == "Human fits"
    rows = {r["curve"]: r for r in result.rows}
    assert abs(rows["ebbinghaus1885"]["gamma"] - 0.13) < 0.01
    assert all(r["verdict"] for r in result.rows)  # the form check, in words
    assert main(["fit", "gamma", "--human", "ebbinghaus1885", "--method", "mle",
                 "--results", str(results)]) != 0  # a result needs its title
    assert "--results and --title go together" in capsys.readouterr().err
