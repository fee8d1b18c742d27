"""The interface every γ fit offers (``GammaFit``) and the submodules of ``cram.fitting``."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pandas as pd

from cram.fitting import ComparisonRules, fit_mle_many
from cram.fitting.pipeline import fit_gamma, gather_curves
from cram.fitting.results import GammaFit, PointFits


def test_model_curves_is_a_module_on_first_access():
    code = ("import types, cram.fitting as f\n"
            "m = f.model_curves\n"
            "assert isinstance(m, types.ModuleType), type(m)\n"
            "import cram.fitting.model_curves\n"
            "assert f.model_curves is m and callable(m.model_curves)\n"
            "from cram.fitting import model_curves as mc\n"
            "assert mc is m\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_submodules_and_lazy_names_resolve():
    import cram.fitting as f

    assert isinstance(f.pipeline, types.ModuleType) and f.results.GammaFit is GammaFit
    assert f.PointFits is PointFits


def test_point_fits_offer_the_gamma_fit_interface():
    df = gather_curves(humans=["ebbinghaus1885", "rubin1999"])
    rules = ComparisonRules(form="power", offset=1.0)
    fits = fit_mle_many(df, rules, progress=False)
    res = PointFits(fits, rules, df)
    assert isinstance(res, GammaFit)
    doc = res.to_json_doc()
    assert [c["curve"] for c in doc["curves"]] == [f.curve for f in fits]
    assert all(c["group"] == "human" for c in doc["curves"])
    table = res.gamma_table
    assert list(table.columns) == ["curve", "group", "gamma", "gamma_low", "gamma_high"]
    assert (table["gamma_low"] < table["gamma"]).all()
    assert (table["gamma"] < table["gamma_high"]).all()
    frame = res.to_frame()
    assert set(frame["curve"]) == set(table["curve"]) and {"param", "estimate"} <= set(frame)
    first = fits[0]
    t = np.array([1.0, 10.0])
    np.testing.assert_allclose(res.predict(first.curve, t), first.predict(t))
    assert len(res.fitted) == sum(len(f.t) for f in fits) and res.tables() == {}


def test_fit_gamma_doc_does_not_depend_on_how_it_is_reached(tmp_path):
    df = gather_curves(humans=["ebbinghaus1885"])
    rules = ComparisonRules(form="power")
    doc = fit_gamma(df, rules, "mle", out=tmp_path / "fit", figures=False, progress=False)
    direct = PointFits(fit_mle_many(df, rules, progress=False), rules, df).to_json_doc()
    # the form check adds its verdict to each curve and changes nothing else
    assert [c.pop("gamma_valid") for c in doc["curves"]] == [True]
    assert all(c.pop("form_check")["passes"] for c in doc["curves"])
    assert doc["curves"] == direct["curves"] and doc["diagnostics"] == direct["diagnostics"]
    written = pd.read_csv(tmp_path / "fit" / "summary.csv")
    assert list(written["param"]) == list(PointFits(fit_mle_many(df, rules, progress=False),
                                                    rules, df).to_frame()["param"])
