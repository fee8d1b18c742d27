"""The explorer driven headlessly by streamlit.testing.v1.AppTest.

Every page, widget changes, query-parameter state, and partial/corrupt inputs shown as messages
rather than tracebacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from app_helpers import make_demo_like, make_study_like
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "apps" / "explorer.py")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_like(tmp_path_factory.mktemp("runs") / "demo", seeds=2)


def _app(monkeypatch, runs: Path, page: str, **params) -> AppTest:
    monkeypatch.setenv("CRAM_APP_RUNS", str(runs))
    monkeypatch.delenv("CRAM_APP_FITS", raising=False)
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["page"] = page
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_runs_page_widgets_and_query_params(monkeypatch, demo_root):
    at = _app(monkeypatch, demo_root, "Runs")
    _clean(at)
    assert at.multiselect(key="run").value == ["cram-seed0", "cram-seed1"]
    headers = [s.value for s in at.subheader]
    assert "Attention fraction against step" in headers
    assert any(h.startswith("Share of each tier per layer") for h in headers)
    assert any(h.startswith("Per-pattern consolidation") for h in headers)
    assert "Library against novel queries" in headers
    assert "Is the logged reliance real? Accuracy with a tier removed" in headers  # issue 28
    # the transition table lists each run's change point and interval from transition.json
    trans = at.dataframe[0].value
    tj = json.loads((demo_root / "cram-seed0" / "transition.json").read_text())
    row = trans[trans["run"] == "cram-seed0"].iloc[0]
    assert (row["step"], row["low"], row["high"]) == (tj["step"], tj["low"], tj["high"])
    # change widgets: the view goes into the query parameters
    at.multiselect(key="run").set_value(["cram-seed1"]).run()
    at.selectbox(key="series").set_value("attention_library").run()
    at.checkbox(key="logy").check().run()
    at.selectbox(key="pvalue").set_value("qhat").run()
    _clean(at)
    assert at.query_params["run"] == "cram-seed1"
    assert at.query_params["series"] == "attention_library"
    assert at.query_params["logy"] == "1"
    assert at.query_params["focus"] == "cram-seed1"
    assert at.query_params["pvalue"] == "qhat"


def test_state_restored_from_a_shared_link(monkeypatch, demo_root):
    at = _app(monkeypatch, demo_root, "Runs", run="cram-seed1", series="attention_novel",
              logy="1")
    _clean(at)
    assert at.multiselect(key="run").value == ["cram-seed1"]
    assert at.selectbox(key="series").value == "attention_novel"
    assert at.checkbox(key="logy").value is True
    # a link naming a run that no longer exists falls back instead of failing
    at = _app(monkeypatch, demo_root, "Runs", run="gone", series="no_such_series")
    _clean(at)
    assert at.multiselect(key="run").value == []
    assert at.selectbox(key="series").value == "attention_fraction"
    assert any("Choose at least one run" in i.value for i in at.info)


def test_human_page_shows_datasets_with_citations(monkeypatch, demo_root):
    at = _app(monkeypatch, demo_root, "Human data")
    _clean(at)
    from cram.psych_data import list_datasets

    listing = list_datasets()
    titles = [s.value for s in at.subheader]
    assert titles == list(listing["title"])
    captions = " ".join(c.value for c in at.caption)
    assert "Ebbinghaus" in captions and "Rubin" in captions
    text = " ".join(m.value for m in at.markdown)
    assert "Delay unit: **hours**" in text and "Delay unit: **intervening_items**" in text
    at.checkbox(key="hderived").uncheck().run()
    _clean(at)
    rubin = [d.value for d in at.dataframe if "curve" in d.value.columns]
    assert all(not df["derived"].any() for df in rubin)
    assert at.query_params["hderived"] == "0"


@pytest.mark.slow  # ~25 s of live fits; the compare page's fast tests: the user-CSV test
def test_compare_page_curves_mle_and_posterior(monkeypatch, demo_root):  # and the browser test
    at = _app(monkeypatch, demo_root, "Compare")
    _clean(at)
    assert at.multiselect(key="mcurves").value  # model curves chosen by default
    assert at.multiselect(key="hcurves").value  # human curves chosen by default
    table = at.dataframe[0].value
    assert set(table["group"]) == {"model", "human"}
    assert table["gamma"].between(0.05, 2.0).all()
    assert {"gamma low", "gamma high", "dataset"} <= set(table.columns)
    metrics = {m.label: m.value for m in at.metric}
    hdi, ci = "90% HDI (Bayesian posterior)", "90% confidence interval (MLE)"
    assert "Δγ posterior mean" in metrics and hdi in metrics and ci in metrics
    assert not any(k.startswith("90% interval") for k in metrics)
    result = json.loads((demo_root / "fit" / "result.json").read_text())
    assert float(metrics["Δγ posterior mean"]) == pytest.approx(
        result["delta_gamma"]["mean"], abs=2e-3)
    # the HDI is the one the fit wrote (summary.csv, az.summary), not computed by the app
    summary = pd.read_csv(demo_root / "fit" / "summary.csv").set_index("variable")
    lo, hi = summary.loc["delta_gamma", ["hdi_5%", "hdi_95%"]]
    assert metrics[hdi] == f"[{lo:+.3f}, {hi:+.3f}]"
    stated = " ".join(m.value for m in at.markdown)
    assert "form: power" in stated and "window: all delays" in stated and "measure:" in stated
    # the stored Δγ names what it compared; curves outside the fit are said to be outside it
    assert "This fit compared" in stated and "rubin1999 (3 curves)" in stated
    captions = " ".join(c.value for c in at.caption)
    assert "Not in this fit, so not covered by its Δγ: ebbinghaus1885" in captions
    assert "Why the two kinds of interval differ" in captions
    assert "Mean MLE γ" not in captions  # no Δγ averaged over datasets
    # the MLE Δγ is for one named pair
    pair = at.selectbox(key="dpm").value, at.selectbox(key="dph").value
    assert pair == ("cram-seed0:attention_library", "ebbinghaus1885")
    assert any("Δγ = γ(`cram-seed0:attention_library`" in c.value and "describes this pair"
               in c.value for c in at.caption)
    rows = table.set_index("curve")
    assert float(metrics["Δγ (MLE)"]) == pytest.approx(
        rows.loc[pair[0], "gamma"] - rows.loc[pair[1], "gamma"], abs=1e-3)

    # window + another form: the live fit changes and the view is in the URL
    g0 = table.set_index("curve")["gamma"]
    at.checkbox(key="win").check().run()
    at.slider(key="wdec").set_value((0.0, 1.0)).run()
    at.selectbox(key="form").set_value("wickelgren").run()
    _clean(at)
    table2 = at.dataframe[0].value.set_index("curve")
    assert "lam" in table2.columns and not table2["gamma"].equals(g0)
    assert at.query_params["form"] == "wickelgren"
    assert at.query_params["wdec"] == "0,1"
    assert any("This fit used form `power`" in c.value for c in at.caption)

    # another model-curve kind offers other curves
    at.selectbox(key="mkind").set_value("per_pattern").run()
    _clean(at)
    assert at.multiselect(key="mcurves").value
    assert all(":pattern" in c for c in at.multiselect(key="mcurves").value)
    at.radio(key="axes").set_value("linear").run()
    _clean(at)


def _claims_registry(path: Path) -> Path:
    """A two-claim registry in the format of claims/registry.toml."""
    common = ('paper = "0.43"\nours = "0.26 | 0.49"\ninterval = "90% HDI [0.1, 0.7]"\n'
              'seeds = "3"\nunits = "γ"\ncommand = "cram fit gamma"\n')
    path.write_text(
        '[[claim]]\nid = "gamma"\nsection = "Forgetting curves"\nclaim = "γ is 0.43"\n'
        'status = "qualified"\nsummary = "Depends on the offset."\n'
        'detail = "History: see [the other claim](#speed)."\n' + common +
        '\n[[claim]]\nid = "speed"\nsection = "Speed and compute"\nclaim = "CRAM is fast"\n'
        'status = "not yet tested"\nsummary = "Not timed."\ndetail = ""\n'
        'stale = "re-run the timing"\n' + common, encoding="utf-8")
    return path


def test_claims_page_reads_the_registry(monkeypatch, demo_root, tmp_path):
    monkeypatch.setenv("CRAM_APP_CLAIMS", str(_claims_registry(tmp_path / "registry.toml")))
    at = _app(monkeypatch, demo_root, "Claims")
    _clean(at)
    df = at.dataframe[0].value
    assert list(df["claim"]) == ["γ is 0.43", "CRAM is fast"]
    assert list(df.columns) == ["section", "claim", "paper", "status", "ours", "seeds"]
    assert df["ours"].iloc[0] == "0.26 | 0.49 (90% HDI [0.1, 0.7])"
    # the status filter offers exactly the four statuses; none chosen shows all
    assert at.multiselect(key="status").options == ["reproduced", "refuted", "qualified",
                                                    "not yet tested"]
    assert [e.label for e in at.expander] == ["γ is 0.43 · qualified",
                                              "CRAM is fast · not yet tested"]
    assert "**the other claim**" in [m.value for m in at.expander[0].markdown][-1]
    assert [w.value for w in at.expander[1].warning] == ["Stale: re-run the timing"]
    at.multiselect(key="status").set_value(["qualified"]).run()
    _clean(at)
    assert list(at.dataframe[0].value["status"]) == ["qualified"]
    assert at.query_params["status"] == "qualified"
    # the section filter travels as a short slug
    at.multiselect(key="status").set_value([]).run()
    at.multiselect(key="sec").set_value(["speed-and-compute"]).run()
    _clean(at)
    assert list(at.dataframe[0].value["claim"]) == ["CRAM is fast"]
    assert at.query_params["sec"] == "speed-and-compute"
    # a link restores the view
    at = _app(monkeypatch, demo_root, "Claims", status="not yet tested", sec="speed-and-compute")
    _clean(at)
    assert list(at.dataframe[0].value["claim"]) == ["CRAM is fast"]
    # missing and invalid registries are messages, not tracebacks
    monkeypatch.setenv("CRAM_APP_CLAIMS", str(tmp_path / "missing.toml"))
    at = _app(monkeypatch, demo_root, "Claims")
    assert not at.exception
    assert any("No claims to show" in w.value for w in at.warning)
    bad = tmp_path / "bad.toml"
    bad.write_text(_claims_registry(tmp_path / "b.toml").read_text().replace(
        '"qualified"', '"partly"'), encoding="utf-8")
    monkeypatch.setenv("CRAM_APP_CLAIMS", str(bad))
    at = _app(monkeypatch, demo_root, "Claims")
    assert not at.exception
    assert any("field 'status'" in w.value for w in at.warning)


def test_claims_page_on_the_shipped_registry(monkeypatch, demo_root):
    monkeypatch.delenv("CRAM_APP_CLAIMS", raising=False)
    at = _app(monkeypatch, demo_root, "Claims", status="refuted")
    _clean(at)
    df = at.dataframe[0].value
    assert len(df) >= 3 and set(df["status"]) == {"refuted"}
    assert all(len(str(v)) <= 400 for col in df.columns for v in df[col])
    assert len(at.expander) == len(df)


def test_partial_and_corrupt_runs_show_messages(monkeypatch, tmp_path):
    from cram.testing import write_synthetic_run

    root = tmp_path / "runs"
    write_synthetic_run(root / "good", seed=0)
    bad_json = write_synthetic_run(root / "bad_json", seed=1)
    (bad_json / "config.json").write_text("{not json")
    partial = write_synthetic_run(root / "partial", seed=2)
    (partial / "patterns.csv").unlink()
    (partial / "transition.json").write_text("[1, 2")
    (root / "only_config").mkdir()
    (root / "only_config" / "config.json").write_text("{}")
    text_metrics = write_synthetic_run(root / "text_metrics", seed=3)
    m = (text_metrics / "metrics.csv").read_text().splitlines()
    cells = m[2].split(",")
    cells[2] = "oops"
    (text_metrics / "metrics.csv").write_text("\n".join([m[0], m[1], ",".join(cells)] + m[3:]))
    for page in ("Runs", "Compare"):
        at = _app(monkeypatch, root, page)
        assert not at.exception, [e.value for e in at.exception]
        errors = " ".join(e.value for e in at.error)
        assert "bad_json" in errors and "not valid JSON" in errors
        assert "only_config" in errors and "metrics.csv" in errors
        assert "text_metrics" in errors and "'oops' is not a number" in errors
        assert "Traceback" not in errors
    at = _app(monkeypatch, root, "Runs")
    assert at.multiselect(key="run").value == ["good", "partial"]
    notes = " ".join(e.label for e in at.expander)
    assert "partial run folders" in notes
    at.selectbox(key="focus").set_value("partial").run()
    assert not at.exception
    assert any("has no patterns.csv" in i.value for i in at.info)


def test_empty_or_missing_folders(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "nowhere", "Runs")
    assert not at.exception
    assert any("does not exist" in w.value for w in at.warning)
    assert any("make demo" in i.value for i in at.info)
    at = _app(monkeypatch, tmp_path / "nowhere", "Compare")
    assert not at.exception
    assert any("No precomputed fit" in i.value for i in at.info)


def test_corrupt_fit_folder_is_a_message(monkeypatch, tmp_path):
    root = make_demo_like(tmp_path / "demo", seeds=1)
    (root / "fit" / "posterior.nc").write_bytes(b"not a netcdf file")
    at = _app(monkeypatch, root, "Compare")
    assert not at.exception
    assert any("posterior.nc: cannot be read" in w.value for w in at.warning)
    (root / "fit" / "result.json").write_text("{")
    at = _app(monkeypatch, root, "Compare")
    assert not at.exception
    assert any("cannot be shown" in e.value and "result.json" in e.value for e in at.error)


USER_CSV = (b"curve,delay_value,delay_unit,measure,value,n\n"
            b"mine,1,hours,recall,0.9,40\nmine,2,hours,recall,0.8,40\n"
            b"mine,4,hours,recall,0.7,40\nmine,8,hours,recall,0.62,40\n"
            b"mine,24,hours,recall,0.5,40\n")


def test_compare_page_reads_a_users_csv(monkeypatch, demo_root):
    """An uploaded CSV is checked like `cram data check`, shown as the user's, and fitted."""
    at = _app(monkeypatch, demo_root, "Compare")
    _clean(at)
    at.file_uploader(key="hcsv").set_value(("my data.csv", USER_CSV, "text/csv")).run()
    _clean(at)
    assert "my_data/mine" in at.multiselect(key="hcurves").value  # chosen on upload
    assert any("your CSV: my_data.csv" in c.value for c in at.caption)
    table = at.dataframe[0].value.set_index("curve")
    assert table.loc["my_data/mine", "dataset"] == "your CSV: my_data.csv"
    mine = [m.value for m in at.markdown if "my_data/mine" in m.value]
    assert mine and "γ = " in mine[0] and "90% confidence interval (MLE)" in mine[0]
    # the MLE Δγ pair turns to the user's curve
    assert at.selectbox(key="dph").value == "my_data/mine"
    assert any("my_data/mine" in c.value and "your CSV: my_data.csv" in c.value
               and "describes this pair only" in c.value for c in at.caption)
    # the on-demand fit would fit the user's file through --human-csv
    cmd = " ".join(c.value for c in at.code)
    assert "--human-csv" in cmd and "my_data.csv" in cmd and "--method bayes" in cmd
    # a bad file is one line of error text, never a traceback; the page goes on
    at.file_uploader(key="hcsv").set_value(("bad.csv", b"delay,value\n1,2\n", "text/csv"))
    at.run()
    assert not at.exception
    (err,) = [e.value for e in at.error]
    assert err.startswith("Your CSV was not loaded: bad.csv: missing required column(s)")
    assert "\n" not in err and "Traceback" not in err and "/tmp" not in err
    assert "my_data/mine" not in at.multiselect(key="hcurves").options
    for bad, why in ((b"delay_value,delay_unit,measure,value\n1,hours,recall,1.7\n",
                      "outside [0, 1]"), (b"\xff\xfe\x00", "not UTF-8"), (b"", "empty file")):
        at.file_uploader(key="hcsv").set_value(("x.csv", bad, "text/csv")).run()
        assert not at.exception
        assert len(at.error) == 1 and why in at.error[0].value, [e.value for e in at.error]


def test_the_app_never_imports_pymc():
    """The explorer reads fits and runs pure point fits; Bayesian fits are a subprocess."""
    import ast

    banned = {"pymc", "pytensor", "h5py", "cram.fitting.bayes", "cram.fitting.pipeline"}
    for name in ("explorer.py", "data.py"):
        tree = ast.parse((Path(APP).parent / name).read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        assert not {m for m in found if m.split(".")[0] in banned or m in banned
                    or any(m.startswith(b + ".") for b in banned)}, name


@pytest.mark.slow
def test_on_demand_bayesian_fit(monkeypatch, tmp_path):
    """The button runs `cram fit gamma` in a subprocess (a real PyMC fit) and shows its folder."""
    root = make_demo_like(tmp_path / "demo", seeds=2, with_fit=False)
    at = _app(monkeypatch, root, "Compare", hcurves="rubin1999/matched,rubin1999/white")
    _clean(at)
    assert any("No precomputed fit" in i.value for i in at.info)
    at.select_slider(key="bdraws").set_value(250).run()
    at.button(key="bayes_go").click().run(timeout=900)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    (out,) = (root / "app-fits").iterdir()
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "bayes" and "--human" in result["command"]
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Δγ posterior mean"]) == pytest.approx(
        result["delta_gamma"]["mean"], abs=2e-3)
    assert "90% HDI (Bayesian posterior)" in metrics
    assert any("method: bayes" in m.value for m in at.markdown)
    assert any(s.value.startswith("Wrote") for s in at.success)
    # the next run lists the new folder as the stored fit
    at.run()
    assert at.selectbox(key="fit").value == "app-fits/" + out.name


def test_url_cannot_change_the_folders(monkeypatch, demo_root, tmp_path):
    """`?runs=/etc&fits=/` in a link is ignored: the folders are the command line's."""
    from cram.testing import write_synthetic_run

    other = tmp_path / "other"
    write_synthetic_run(other / "intruder", seed=0)
    monkeypatch.setenv("CRAM_APP_RUNS", str(demo_root))
    monkeypatch.delenv("CRAM_APP_FITS", raising=False)
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update({"page": "Runs", "runs": str(other), "fits": str(other)})
    at = at.run()
    _clean(at)
    assert "intruder" not in at.multiselect(key="run").options
    assert at.multiselect(key="run").value == ["cram-seed0", "cram-seed1"]
    assert "runs" not in at.query_params and "fits" not in at.query_params


def test_runs_page_shows_the_per_layer_view(monkeypatch, tmp_path):
    """Per-layer columns (issue 13) give a per-layer chart, a table and both units."""
    import shutil

    import pandas as pd

    from cram.testing import write_synthetic_run

    run = write_synthetic_run(tmp_path / "runs" / "cram-seed0", seed=0)
    path = run / "metrics.csv"
    metrics = pd.read_csv(path)
    for i in range(2):  # synthetic values: layer 0 holds library attention, layer 1 none
        metrics[f"attention_library_l{i}"] = metrics["attention_library"] * (1 - i)
        metrics[f"attention_novel_l{i}"] = 1.0 - 0.5 * i
        metrics[f"attention_nonquery_l{i}"] = 0.02
        metrics[f"qhat_library_l{i}"] = 0.8 - 0.6 * i
        metrics[f"qhat_novel_l{i}"] = 0.01
    metrics["attention_tokens"] = 2 * metrics["attention_fraction"]
    metrics.to_csv(path, index=False)
    shutil.copytree(run, tmp_path / "runs" / "cram-seed1")  # a second run keeps selection simple
    at = _app(monkeypatch, tmp_path / "runs", "Runs", focus="cram-seed0")
    _clean(at)
    assert any(s.value.startswith("Per layer: library, novel") for s in at.subheader)
    tables = [d.value for d in at.dataframe]
    per_layer = next(t for t in tables if "qhat library" in t.columns)
    assert list(per_layer["layer"]) == [0, 1]
    assert per_layer["qhat library"].tolist() == pytest.approx([0.8, 0.2])
    assert per_layer["attention novel"].tolist() == pytest.approx([1.0, 0.5])
    units = next(t for t in tables if "per token" in t.columns)
    row = units[units["tokens"] == "all tokens"].iloc[0]
    assert row["per token"] == pytest.approx(2 * row["per pair"])


def test_runs_page_without_per_layer_columns_says_so(monkeypatch, demo_root):
    at = _app(monkeypatch, demo_root, "Runs")
    _clean(at)
    assert any("logs no per-layer columns" in i.value for i in at.info)


# ---- forgetting over a delay (the study protocol's forgetting.csv; issue 29 item 5)

FORGETTING = "Forgetting over a delay: "


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    return make_study_like(tmp_path_factory.mktemp("runs") / "study")


def test_forgetting_section_of_a_study_run_with_its_fit(monkeypatch, study_root):
    at = _app(monkeypatch, study_root, "Runs", focus="study-cram-seed0")
    _clean(at)
    headers = [s.value for s in at.subheader]
    assert f"{FORGETTING}study-cram-seed0" in headers
    text = " ".join(m.value for m in at.markdown)
    # which tier answers, in words (the synthetic semantic tier holds the studied bindings)
    assert "At the last test (step 600) the retired bindings are recalled at" in text
    assert "The semantic tier answers them" in text
    # the verdict of the fit folder, in words, with γ where the form passes
    assert "**Form check** (fit `fit-forgetting`" in text
    assert "`study-cram-seed0:forgetting/last/none`: a power law passes" in text
    assert "`rubin1999/matched`: a power law passes" in text
    assert "90% confidence interval (MLE)" in text
    assert not [i.value for i in at.info if "cram fit gamma" in i.value]
    tiers = next(d.value for d in at.dataframe if "held_out" in d.value.columns)
    assert list(tiers["ablation"]) == ["none", "semantic_only", "working_only",
                                       "semantic_zeroed", "episodic_off"]
    captions = " ".join(c.value for c in at.caption)
    assert "rubin1999" in captions and "Massed against spaced" in captions


def test_forgetting_section_is_absent_without_forgetting_csv(monkeypatch, study_root, demo_root):
    at = _app(monkeypatch, study_root, "Runs", focus="cram-seed0")
    _clean(at)
    assert not [s.value for s in at.subheader if s.value.startswith(FORGETTING)]
    at = _app(monkeypatch, demo_root, "Runs")
    _clean(at)
    assert not [s.value for s in at.subheader if s.value.startswith(FORGETTING)]


def test_forgetting_section_without_a_fit_says_how_to_fit(monkeypatch, tmp_path):
    root = make_study_like(tmp_path / "runs", with_fit=False)
    at = _app(monkeypatch, root, "Runs", focus="study-cram-seed0")
    _clean(at)
    assert f"{FORGETTING}study-cram-seed0" in [s.value for s in at.subheader]
    (hint,) = [i.value for i in at.info if "cram fit gamma" in i.value]
    assert "fit with `cram fit gamma --curve-kind forgetting`" in hint
    assert "--human rubin1999" in hint and "Form check" not in hint
