"""The demo report: summary rows, and the report in words (transition, tiers, human comparison).

Every test reads synthetic run folders (``cram.testing``) and, for the γ fit, a hand-written
``result.json``: no training and no sampler.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cram.commands.demo import delta_text, fit_section, verdict_sentence, write_report
from cram.core.runs import METRICS_FILE, load_run
from cram.experiments.report import (
    RUN_COLUMNS,
    change_point_text,
    fall_answer,
    report_rows,
    resume_hint,
    summary_rows,
    tier_text,
    transition_text,
)
from cram.testing import write_synthetic_run


def test_summary_rows_name_the_warmup_end_and_its_cause(tmp_path):
    folder = write_synthetic_run(tmp_path / "cram-seed0", seed=0, gamma=0.45)
    (row,) = summary_rows([load_run(folder)])
    assert row["warmup_ended_by"] == "fixed" and row["warmup_end"] == load_run(folder).warmup_steps
    transition = folder / "transition.json"
    data = json.loads(transition.read_text()) if transition.is_file() else {}
    data["schedule"] = {"kind": "learned", "warmup_end": 223, "fired_by": "criterion"}
    transition.write_text(json.dumps(data))
    (row,) = summary_rows([load_run(folder)])
    assert (row["warmup_end"], row["warmup_ended_by"]) == (223, "criterion")
    tokens = row["attention_tokens"]
    assert math.isnan(tokens) or row["attention_all"] <= tokens <= 1  # a token attends in any layer


def _edit_transition(folder: Path, **fields) -> None:
    path = folder / "transition.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _edit_last_row(folder: Path, **values) -> None:
    path = folder / METRICS_FILE
    table = pd.read_csv(path)
    for column, value in values.items():
        table.loc[table.index[-1], column] = value
    table.to_csv(path, index=False)


@pytest.fixture
def run_folder(tmp_path):
    return write_synthetic_run(tmp_path / "runs" / "cram-seed0", seed=0, gamma=0.45)


def test_a_degenerate_interval_is_stated_as_the_resolution():
    text = change_point_text({"step": 350.0, "low": 350.0, "high": 350.0}, 25)
    assert text == "at step 350 (resolution: one evaluation every 25 steps)"
    spread = change_point_text({"step": 350.0, "low": 325.0, "high": 400.0, "level": 0.9}, 25)
    assert "90% bootstrap interval 325-400" in spread and "[" not in spread


def test_the_transition_paragraph_says_when_and_why(run_folder):
    _edit_transition(run_folder, step=350.0, low=350.0, high=350.0, resolution=25,
                     familiarity_rise={"step": 300.0}, lag_after_familiarity=50.0,
                     schedule={"warmup_end": 216, "fired_by": "criterion", "threshold": 0.9})
    run = load_run(run_folder)
    text = transition_text(run)
    assert "ended at step 216, when the retrieval criterion was met" in text
    assert "fell at step 350 (resolution: one evaluation every 25 steps)" in text
    assert "q̂ began to separate library from novel queries at step 300, 50 steps before" in text
    assert "134 steps after warm-up ended" in fall_answer(run)
    assert resume_hint(run) is None


def test_a_warmup_ended_by_the_plateau_rule_says_so_with_its_level(run_folder):
    _edit_transition(run_folder, schedule={"warmup_end": 480, "fired_by": "plateau",
                                           "signal_at_switch": 0.75, "threshold": 0.9})
    text = transition_text(load_run(run_folder))
    assert "ended at step 480, when the retrieval signal stopped rising below the threshold" in text
    assert "answer 75% of the training queries" in text


def test_a_run_without_a_change_point_says_it_ended_before_its_transition(run_folder):
    _edit_transition(run_folder, step=None, low=None, high=None)
    run = load_run(run_folder)
    hint = resume_hint(run)
    assert "ended before its transition" in hint
    assert f"cram train --out {run.path} --resume --steps 1200" in hint  # twice the 600 steps
    assert "ended before its transition" in transition_text(run)
    assert "--resume --steps" in transition_text(run)
    assert "ended before its transition" in fall_answer(run)
    _edit_transition(run_folder, method="not a routed model")
    assert resume_hint(load_run(run_folder)) is None


@pytest.mark.parametrize(("semantic", "working", "expected"), [
    (0.99, 0.98, "does not depend on one tier"),
    (0.97, 0.05, "Only the semantic tier answers them"),
    (0.10, 0.95, "Working memory and the readout answer them"),
    (0.10, 0.05, "library queries still need episodic memory"),
])
def test_the_tier_paragraph_reads_the_forced_tier_accuracies(run_folder, semantic, working,
                                                             expected):
    _edit_last_row(run_folder, acc_library_semantic_only=semantic,
                   acc_library_working_only=working)
    text = tier_text(load_run(run_folder))
    assert expected in text
    assert f"{semantic:.3f} with every layer forced to semantic memory" in text
    assert "layer 1: working" in text  # the tier shares, per layer


def test_every_column_of_the_run_table_is_defined(run_folder):
    (row,) = report_rows([load_run(run_folder)])
    assert list(row) == list(RUN_COLUMNS)
    assert all(RUN_COLUMNS[c] for c in row)


DELTA = {"mean": 0.12, "sd": 0.05, "low": 0.04, "high": 0.2, "interval": 0.9, "rope": 0.05,
         "verdict": "undecided"}


def test_delta_gamma_is_written_in_words_with_real_characters():
    assert delta_text(DELTA) == "Δγ = 0.12 ± 0.05 (90% credible interval [0.04, 0.20])"
    assert "[−0.10, 0.20]" in delta_text({**DELTA, "low": -0.1})
    assert "cannot tell" in verdict_sentence(DELTA)
    assert "falls faster than people's" in verdict_sentence({**DELTA, "verdict": "different"})
    assert "more slowly" in verdict_sentence({**DELTA, "mean": -0.2, "verdict": "different"})
    assert "same exponent" in verdict_sentence({**DELTA, "verdict": "equivalent"})


def _write_fit(fit_dir: Path) -> None:
    curves = [{"curve": "cram-seed0:attention_library", "n_points": 20, "gamma": 0.5,
               "gamma_low": 0.45, "gamma_high": 0.55},
              {"curve": "rubin1999/matched", "n_points": 10, "gamma": 0.4, "gamma_low": 0.35,
               "gamma_high": 0.45}]
    (fit_dir / "figures").mkdir(parents=True)
    (fit_dir / "figures" / "curves.png").write_bytes(b"png")
    (fit_dir / "result.json").write_text(json.dumps(
        {"curves": curves, "delta_gamma": DELTA, "diagnostics": {"ok": True, "warnings": []}}))


def test_the_report_states_the_form_check_in_words(tmp_path):
    """A model curve that is not a power law: its γ is marked, the verdict is in words."""
    fit_dir = tmp_path / "fit"
    _write_fit(fit_dir)
    result = json.loads((fit_dir / "result.json").read_text())
    cliff = ("not a power law: a logistic step fits better (ΔELPD = 33.5 ± 4.5); γ is not a "
             "property of this curve")
    human = "a power law passes: 9 of 10 points (90%) lie inside its 90% predictive interval"
    result["curves"][0].update(group="model", gamma_valid=False,
                               form_check={"passes": False, "verdict": cliff})
    result["curves"][1].update(group="human", gamma_valid=True,
                               form_check={"passes": True, "verdict": human})
    result["form_check"] = {"method": "PSIS-LOO of the Bayesian fits", "criteria": "a form fails"}
    (fit_dir / "result.json").write_text(json.dumps(result))
    verdict, section = fit_section(fit_dir)
    assert verdict.startswith("The model's curve is not a power law (cram-seed0:attention_"
                              "library: a logistic step fits better (ΔELPD = 33.5 ± 4.5); γ is "
                              "not a property of this curve), so the comparison of exponents "
                              "below does not describe it.")
    assert "The data cannot tell" in verdict  # the Δγ sentence follows, qualified
    assert "| 0.500 (not a property of this curve) |" in section and "| fails |" in section
    assert f"- `cram-seed0:attention_library`: {cliff}." in section
    assert f"- `rubin1999/matched`: {human}." in section
    assert "- **form check**:" in section and "a transition in what the model attends to" in section
    old = tmp_path / "old"  # a fit made before the check: said, not hidden
    _write_fit(old)
    _, section = fit_section(old)
    assert "No form check in this fit" in section and "| form check |" not in section


def test_the_report_answers_both_questions_and_links_its_figures(run_folder):
    out = run_folder.parent
    _edit_transition(run_folder, step=None, low=None, high=None)
    _write_fit(out / "fit")
    verdict, section = fit_section(out / "fit")
    assert verdict in section and "](fit/figures/curves.png)" in section
    figure = out / "attention_fraction.png"
    figure.write_bytes(b"png")
    report = write_report(out, [load_run(run_folder)], "demo", 1, figure, out / "fit", "", 1.0)
    text = report.read_text(encoding="utf-8")
    assert "stop attending to library queries?** cram-seed0: not within" in text
    assert "**How does its curve compare with people's?** The data cannot tell" in text
    assert "ended before its transition" in text and "--resume --steps" in text
    assert "\\u" not in text and "Δγ = 0.12 ± 0.05" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):  # every link is relative and exists
        assert not link.startswith(("/", "http")) and (out / link).is_file(), link
    for column in RUN_COLUMNS:
        assert f"- **{column}**:" in text


def test_cram_train_ends_with_a_hint_when_the_run_has_no_transition(run_folder, monkeypatch,
                                                                    capsys):
    import cram.consolidation.api as api
    from cram.commands.train import _train

    _edit_transition(run_folder, step=None, low=None, high=None)
    monkeypatch.setattr(api, "train", lambda *a, **k: run_folder)
    args = argparse.Namespace(task_args=[], task=None, model="cram", resume=False,
                              trust_task=False, overrides=[], out=str(run_folder),
                              preset="demo", seed=0, steps=None, restart=False, quiet=True,
                              json=False)
    assert _train(args) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ended before its transition" in last and "--resume --steps 1200" in last


@pytest.mark.parametrize(("zeroed", "expected"), [
    (0.98, "do not depend on what the semantic tier says"),
    (0.05, "the library answers depend on it"),
])
def test_the_tier_paragraph_says_what_zeroing_the_semantic_tier_does(run_folder, zeroed, expected):
    _edit_last_row(run_folder, acc_library_semantic_only=0.97, acc_library_working_only=0.05,
                   acc_library_semantic_zeroed=zeroed, acc_novel_semantic_zeroed=0.99)
    text = tier_text(load_run(run_folder))
    assert f"leaves library accuracy at {zeroed:.3f} and novel accuracy at 0.990" in text
    assert expected in text


# ---- forgetting over a delay: the study run's section (issue 29 item 5)

PASSES = ("a power law passes: 6 of 6 points (100%) lie inside its 90% predictive interval; "
          "γ describes this curve")
FAILS = ("not a power law: an exponential fits better (ΔAIC/2 = 9.1 ± 2.0); γ is not a "
         "property of this curve")


def _write_forgetting_fit(fit_dir: Path, run) -> None:
    """A hand-written point fit of the run's forgetting curve and one human curve."""
    from cram.fitting.model_curves import forgetting_curve

    fit_dir.mkdir(parents=True)
    model = forgetting_curve(run)
    model.to_csv(fit_dir / "curves.csv", index=False)
    curves = [{"curve": model["curve"].iloc[0], "group": "model", "gamma": 0.41,
               "gamma_low": 0.33, "gamma_high": 0.49, "likelihood": "binomial",
               "gamma_valid": True, "form_check": {"passes": True, "verdict": PASSES}},
              {"curve": "rubin1999/matched", "group": "human", "gamma": 0.46,
               "gamma_low": 0.41, "gamma_high": 0.51, "likelihood": "normal",
               "gamma_valid": False, "form_check": {"passes": False, "verdict": FAILS}}]
    (fit_dir / "result.json").write_text(json.dumps(
        {"curves": curves, "delta_gamma": None, "method": "mle", "form": "power",
         "window": None, "rules": {"offset": {"intervening_items": 1.0}, "interval": 0.9},
         "diagnostics": {"ok": True, "warnings": []}}), encoding="utf-8")


def test_the_forgetting_section_states_measure_tiers_and_verdicts(run_folder):
    from cram.commands.demo import FORGETTING_FIGURE, forgetting_section, plot_forgetting

    out = run_folder.parent
    study = load_run(write_synthetic_run(out / "study-cram-seed0", seed=0, study=True))
    _write_forgetting_fit(out / "fit-forgetting", study)
    figure = plot_forgetting(study, out / FORGETTING_FIGURE)
    assert figure.stat().st_size > 10_000
    section = forgetting_section(study, out / "fit-forgetting", figure, "")
    assert section.startswith("\n## Forgetting over a delay (study protocol, MLE fit)\n")
    assert "`--set study.protocol=study-test`, `cue-answer` study" in section
    # measure, unit and window of both sides
    assert "cued recall of the retired bindings at the last test (step 600)" in section
    assert "in training sequences (steps × 32 sequences per batch), 320 to 9600" in section
    assert "t = delay." in section and "intervening study items, 0 to 99, t = items + 1" in section
    assert "Window: every delay each curve has (no window)" in section
    assert "binomial for the model's query counts, normal for people's proportions" in section
    # which tier answers, from the ablations at the last test
    assert "**Which tier answers at test.** At the last test (step 600)" in section
    assert "with the semantic tier's output zeroed" in section
    assert "The semantic tier answers them" in section
    # each verdict in words; γ only where the form check passes
    model = f"- `study-cram-seed0:forgetting/last/none`: {PASSES}; γ = 0.41 [0.33, 0.49]"
    assert model + " (90% confidence interval (MLE))." in section
    assert f"- `rubin1999/matched`: {FAILS}.\n" in section and "0.46" not in section
    assert f"![recall against delay, model and people]({FORGETTING_FIGURE})" in section
    # in the report: after the comparison with people's curves, before the run table
    (out / "attention_fraction.png").write_bytes(b"png")
    _write_fit(out / "fit")
    report = write_report(out, [load_run(run_folder)], "demo", 1, out / "attention_fraction.png",
                          out / "fit", "", 1.0, section).read_text(encoding="utf-8")
    heads = re.findall(r"^## (.+)$", report, flags=re.M)
    assert heads.index("Forgetting over a delay (study protocol, MLE fit)") == \
        heads.index("How the curve compares with people's (power form, Bayesian fit)") + 1
    assert heads[-1].startswith("Final metrics")
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert not link.startswith(("/", "http")) and (out / link).is_file(), link


def test_a_study_run_without_forgetting_csv_is_said_not_fitted(run_folder):
    from cram.commands.demo import forgetting_section

    section = forgetting_section(load_run(run_folder), run_folder.parent / "fit-forgetting",
                                 None, "")
    assert "`cram-seed0` has no forgetting.csv (trained without the study protocol?)" in section
    failed = forgetting_section(None, run_folder.parent / "x", None,
                                "The study run could not be trained (no space).")
    assert failed.rstrip().endswith("The study run could not be trained (no space).")


def test_the_study_step_fits_plots_and_reuses_its_fit(tmp_path, monkeypatch):
    """`make demo`'s new step on a synthetic study run: the real MLE fit, then reused."""
    import cram.commands.demo as demo

    out = tmp_path / "demo"
    study = write_synthetic_run(out / demo.STUDY_RUN, seed=0, study=True)
    monkeypatch.setattr(demo, "train_study_run", lambda o, p: (study, ""))
    section = demo.study_step(out, "demo")
    result = out / demo.FORGETTING_FIT / "result.json"
    assert result.is_file() and (out / demo.FORGETTING_FIGURE).is_file()
    fitted = json.loads(result.read_text())
    assert fitted["method"] == "mle" and fitted["command"][:3] == ["python", "-m",
                                                                   "cram.commands.demo"]
    groups = {c["group"] for c in fitted["curves"]}
    assert groups == {"model", "human"}
    assert all(c.get("form_check") for c in fitted["curves"])  # a verdict per curve
    assert "`study-cram-seed0:forgetting/last/none`: " in section
    assert "`rubin1999/white`: " in section
    stamp = result.stat().st_mtime_ns
    assert demo.study_step(out, "demo") == section and result.stat().st_mtime_ns == stamp
