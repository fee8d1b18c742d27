"""Model curves from (synthetic) run folders, and the no-torch guarantee of fitting/."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cram.core.errors import RunFolderError
from cram.fitting import ComparisonRules, fit_mle
from cram.fitting.model_curves import (
    episodic_reliance_curve,
    model_curves,
    per_pattern_curve,
    retention_curve,
)
from cram.psych_data import TIDY_COLUMNS
from cram.testing import write_synthetic_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [write_synthetic_run(root / f"cram-seed{s}", seed=s, gamma=0.45) for s in range(3)]


def test_episodic_reliance_starts_at_end_of_warmup(runs):
    df = episodic_reliance_curve(runs[0])
    assert list(df.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert df["delay_value"].min() == 0 and (df["onset_step"] == 100).all()
    assert (df["step"] - df["onset_step"] == df["delay_value"]).all()
    assert (df["group"] == "model").all() and (df["delay_unit"] == "steps").all()
    assert df["measure"].unique().tolist() == ["attention_library"]


def test_reliance_gamma_recovered_from_fixture(runs):
    # the fixture decays as (1 + t/10)^-0.45 with 5% log-noise: offset 10 makes it a pure power
    df = episodic_reliance_curve(runs[0])
    fit = fit_mle(df, rules=ComparisonRules(offset={"steps": 10.0}, window=(0.3, 3)))
    assert fit.params["gamma"] == pytest.approx(0.45, abs=0.05)


def test_per_pattern_and_retention_curves(runs):
    p = per_pattern_curve(runs[0])
    assert p["curve"].nunique() == 8 and (p["delay_unit"] == "exposures").all()
    assert (p["n_kind"] == "queries").all() and (p["n"] == 10).all()
    r = retention_curve(runs[0])
    # two training stages x episodic on/off, novel binding by default
    assert r["curve"].nunique() == 4
    assert set(r["condition"]) == {"episodic_on", "episodic_off"}
    assert (r["delay_unit"] == "intervening_items").all() and (r["delay_value"] == 0).any()
    on = r[(r["condition"] == "episodic_on")].groupby("lag" if "lag" in r else "delay_value")
    assert on["value"].mean().iloc[0] > 0.5
    off = r[r["condition"] == "episodic_off"]["value"].mean()
    assert off < 0.2  # without episodic memory, retrieval is near chance in the fixture


def test_model_curves_concatenates_and_rejects_clashes(runs, tmp_path):
    df = model_curves(runs)
    assert df["curve"].nunique() == 3
    other = write_synthetic_run(tmp_path / "cram-seed0", seed=0)
    with pytest.raises(Exception, match="clash"):
        model_curves([runs[0], other])


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="no such run folder"):
        episodic_reliance_curve(tmp_path / "nope")


def test_fitting_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "import cram.fitting, cram.fitting.model_curves, cram.fitting.pipeline\n"
        "import cram.fitting.io, cram.fitting.sensitivity, cram.fitting.plots, cram.fitting.bayes\n"
        "import cram.psych_data\n"
        "from cram.testing import write_synthetic_run\n"
        f"r = write_synthetic_run({str(tmp_path / 'r')!r}, seed=0)\n"
        "cram.fitting.model_curves.model_curves([r])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
    assert np.isfinite(1.0)


def test_cli_data_curves_retention_figure(runs, tmp_path, capsys):
    from cram.cli import main

    fig, table = tmp_path / "ret.png", tmp_path / "ret.csv"
    assert main(["data", "curves", "--run", str(runs[0]), "--kind", "retention",
                 "--binding", "novel", "--binding", "library", "--figure", str(fig),
                 "--csv", str(table)]) == 0
    assert fig.stat().st_size > 10_000
    import pandas as pd

    df = pd.read_csv(table)
    assert set(df["binding"]) == {"novel", "library"} and df["step"].nunique() == 2
    # never overwrite
    assert main(["data", "curves", "--run", str(runs[0]), "--csv", str(table)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_fit_retention_curves_use_binomial(runs, capsys):
    import json

    from cram.cli import main

    assert main(["fit", "gamma", "--run", str(runs[0]), "--curve-kind", "retention",
                 "--method", "mle", "--offset", "1", "--json", "--no-window-sensitivity"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["curves"]) == 4
    assert {c["likelihood"] for c in doc["curves"]} == {"binomial"}
