"""``make demo``: train CRAM on the demo preset, fit γ against human curves, write a report.

Usage: ``python -m cram.commands.demo --out runs/demo [--seeds 1]``. Finished runs are reused and
partial ones resumed, so running it twice costs nothing the second time. It orchestrates training
(:mod:`cram.consolidation`) and fitting (:mod:`cram.fitting`), so it sits at the top with the CLI:
the fit is the same :func:`cram.fitting.pipeline.fit_gamma` call that ``cram fit gamma`` makes.
A second run, ``study-cram-seed0``, trains under the study protocol (docs/forgetting.md); its
forgetting curve is fitted by MLE beside people's cued recall (rubin1999) for the report's section
"Forgetting over a delay" (``--no-study`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HUMANS = ("ebbinghaus1885", "rubin1999")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr)


def train_runs(out: Path, preset: str, seeds: int) -> list[Path]:
    """Train (or reuse, or resume) one CRAM run per seed under ``out``."""
    from cram.experiments.bench import ensure_run

    run_dirs = []
    for seed in range(seeds):
        run_dir = out / f"cram-seed{seed}"
        _log(f"training CRAM (preset {preset}, seed {seed}) → {run_dir}")
        run_dirs.append(ensure_run("cram", preset, seed, run_dir, []))
    return run_dirs


def fit_gamma_power(run_dirs: list[Path], fit_dir: Path, log_every: int) -> str:
    """Bayesian power-form γ fit of the runs against the human curves; returns a failure note."""
    from cram.core.errors import CramError
    from cram.fitting.pipeline import fit_gamma, gather_curves, rules_from_args
    from cram.fitting.rules import parse_offset

    # forms with t > 0 need a stated offset: lag + 1 for intervening items (the Rubin et al.
    # convention) and one logging interval for training steps after onset
    offsets = ["intervening_items=1", f"steps={log_every}"]
    _log(f"fitting γ: power form, Bayesian, humans {list(HUMANS)}, offsets {offsets}, seed 0")
    try:
        rules = rules_from_args("power", None, parse_offset(offsets), 0.05, 0.90)
        df = gather_curves([str(d) for d in run_dirs], HUMANS)
        fit_gamma(df, rules, "bayes", out=fit_dir, seed=0,
                  argv=["python", "-m", "cram.commands.demo", *sys.argv[1:]])
    except CramError as err:
        _log(f"γ fit failed: {err}")
        return f"γ fit failed ({err})."
    return ""


#: the demo's run of the study protocol (docs/forgetting.md): CRAM, seed 0, cue-answer study
STUDY_RUN = "study-cram-seed0"
STUDY_OVERRIDES = ("study.protocol=study-test",)
#: its MLE fit beside people's cued recall, and its figure, next to the report
FORGETTING_FIT = "fit-forgetting"
FORGETTING_FIGURE = "forgetting.png"


def train_study_run(out: Path, preset: str) -> tuple[Path | None, str]:
    """Train (or reuse, or resume) the study run; ``(run folder, "")`` or ``(None, why)``."""
    from cram.core.errors import CramError
    from cram.experiments.bench import ensure_run

    run_dir = out / STUDY_RUN
    _log(f"training CRAM under the study protocol (preset {preset}, seed 0, "
         f"{' '.join(STUDY_OVERRIDES)}) → {run_dir}")
    try:
        return ensure_run("cram", preset, 0, run_dir, list(STUDY_OVERRIDES)), ""
    except CramError as err:
        _log(f"study run failed: {err}")
        return None, f"The study run could not be trained ({err})."


def fit_forgetting(run_dir: Path, fit_dir: Path) -> str:
    """MLE power-form fit of the run's forgetting curve beside rubin1999; returns a failure note.

    The same fit as ``cram fit gamma --run RUN --curve-kind forgetting --human rubin1999
    --offset intervening_items=1 --method mle``: cued recall beside cued recall, each curve
    fitted alone over all its delays, with the form check of every curve.
    """
    from cram.apps.data import FORGETTING_HUMAN
    from cram.core.errors import CramError
    from cram.fitting.pipeline import fit_gamma, gather_curves, rules_from_args
    from cram.fitting.rules import parse_offset

    _log(f"fitting the forgetting curve: power form, MLE, beside {FORGETTING_HUMAN}")
    try:
        rules = rules_from_args("power", None, parse_offset(["intervening_items=1"]), 0.05, 0.90)
        df = gather_curves([str(run_dir)], (FORGETTING_HUMAN,), curve_kind="forgetting")
        fit_gamma(df, rules, "mle", out=fit_dir, seed=0, progress=False,
                  argv=["python", "-m", "cram.commands.demo", *sys.argv[1:]])
    except CramError as err:
        _log(f"forgetting fit failed: {err}")
        return f"The fit of the forgetting curve failed ({err})."
    return ""


def plot_forgetting(run, path: Path) -> Path:
    """The forgetting figure: the model's recall beside people's (see ``FORGETTING_CAPTION``).

    Left: recall against delay (training sequences) per ablation and schedule; right: people's
    cued recall against intervening items + 1. Log x on both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cram.apps.data import FORGETTING_ABLATIONS, FORGETTING_HUMAN, forgetting_long
    from cram.apps.data import forgetting_tiers as tiers_of
    from cram.psych_data import load_dataset

    sns.set_theme(style="whitegrid", context="notebook")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6))
    curves = forgetting_long(run)
    colours = dict(zip(FORGETTING_ABLATIONS, sns.color_palette("deep", len(FORGETTING_ABLATIONS))))
    everything = curves[curves["schedule"] == "all"]
    for ablation in [a for a in FORGETTING_ABLATIONS if a != "none"] + ["none"]:  # own on top
        g = everything[everything["ablation"] == ablation]
        if len(g):
            left.plot(g["delay_sequences"], g["accuracy"], marker="o",
                      lw=2.4 if ablation == "none" else 1.2, color=colours[ablation],
                      label=FORGETTING_ABLATIONS[ablation], zorder=3 if ablation == "none" else 2)
    for schedule, ls in (("massed", "--"), ("spaced", ":")):
        g = curves[(curves["ablation"] == "none") & (curves["schedule"] == schedule)]
        if len(g):
            left.plot(g["delay_sequences"], g["accuracy"], ls=ls, color="black", lw=1,
                      label=f"own routing, {schedule} only")
    chance = tiers_of(run).set_index("ablation")["held_out"].get("none")
    if chance is not None and chance == chance:
        left.axhline(chance, color="grey", lw=1, ls="-.", label="held-out bindings (chance)")
    left.set(xscale="log", ylim=(-0.02, 1.02), ylabel="proportion recalled",
             xlabel="delay since last exposure (training sequences)",
             title=f"Model: cued recall at the last test ({run.name})")
    left.legend(fontsize=8)
    human = load_dataset(FORGETTING_HUMAN)
    for curve, g in human.groupby("curve", sort=False):
        right.plot(g["delay_value"] + 1, g["value"], marker="o",
                   ls="--" if bool(g["derived"].iloc[0]) else "-", label=str(curve))
    right.set(xscale="log", ylim=(-0.02, 1.02), ylabel="proportion recalled",
              xlabel="intervening items + 1", title="People: cued recall (Rubin et al. 1999)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the γ table of the demo report: column → what it means
FIT_COLUMNS = {
    "curve": "the model's curve (`RUN:attention_library`: share of library queries that read "
             "episodic memory, against training steps since warm-up ended) or a human curve "
             "(dataset/condition); `group:model` and `group:human` are the group-level "
             "exponents of the hierarchical fit (the median γ of the group's curves)",
    "points": "number of points of the curve that were fitted",
    "γ": "posterior mean of the forgetting exponent γ in the power form R = a·t^(−γ); "
         "marked 'not a property of this curve' where the form check fails",
    "90% interval": "equal-tailed 90% posterior credible interval of γ",
    "form check": "does a power law describe the curve? 'passes', or 'fails' when its points "
                  "fall outside their 90% predictive intervals too often or another form (an "
                  "exponential, a hyperbola, a logistic step) predicts them clearly better by "
                  "LOO; the verdicts in words follow the table",
}

#: what the comparison compares, and what it does not
CAVEAT = ("The curves measure different things: the model's is its reliance on episodic memory "
          "for library queries (it keeps answering them), against training steps since warm-up "
          "ended, a transition in what the model attends to, not forgetting; people's are "
          "savings in relearning (Ebbinghaus 1885, delay in hours) and cued "
          "recall (Rubin, Hinton & Wenzel 1999, delay in intervening items). Only the exponent γ "
          "of the power form R = a·t^(−γ) is compared; t is the delay, plus one for intervening "
          "items and plus one evaluation interval for training steps.")

#: the fit figures the report links, with what each shows
FIT_FIGURES = {
    "curves.png": "each curve with its fitted power law",
    "gamma_forest.png": "γ per curve with its interval",
    "delta_gamma.png": "the posterior of Δγ against the band of practical equality",
    "window_sensitivity.png": "γ when the fitted window of each curve changes",
}


def _interval(row: dict) -> str:
    return f"[{_signed(row['gamma_low'])}, {_signed(row['gamma_high'])}]"


def _signed(value: float) -> str:
    """Two decimals with a true minus sign."""
    return f"{value:.2f}".replace("-", "−")


def delta_text(delta: dict) -> str:
    """``Δγ = m ± sd (90% credible interval [a, b])``, with real characters."""
    return (f"Δγ = {_signed(delta['mean'])} ± {delta['sd']:.2f} "
            f"({delta.get('interval', 0.9):.0%} credible interval "
            f"[{_signed(delta['low'])}, {_signed(delta['high'])}])")


def verdict_sentence(delta: dict) -> str:
    """The human comparison's verdict in one sentence (Δγ = γ_model − γ_human)."""
    rope, text = delta.get("rope", 0.05), delta_text(delta)
    band = f"the band ±{rope:g} within which we call two exponents practically equal"
    if delta.get("verdict") == "equivalent":
        return (f"The model's curve falls with the same exponent as people's: {text} lies "
                f"inside {band}.")
    if delta.get("verdict") == "different":
        pace = "faster" if delta["mean"] > 0 else "more slowly"
        return (f"The model's curve falls {pace} than people's: {text} lies outside {band}.")
    return (f"The data cannot tell whether the model's curve falls like people's: {text} "
            f"reaches both inside and outside {band}.")


def _pooled_text(curves: list[dict]) -> str:
    """γ pooled per group, when the fit pooled them (a hierarchical fit)."""
    pooled = {r["curve"]: r for r in curves if str(r["curve"]).startswith("group:")}
    parts = [f"γ = {pooled[g]['gamma']:.2f} {_interval(pooled[g])} for the {name}"
             + (" (not a property of its curves: it pools a curve that is not a power law)"
                if pooled[g].get("gamma_valid") is False else "")
             for g, name in (("group:model", "model"), ("group:human", "human curves"))
             if g in pooled and pooled[g].get("gamma") is not None]
    return ("At the group level, " + " and ".join(parts) + ". ") if parts else ""


def _gamma_cell(row: dict) -> str:
    if row.get("gamma") is None:
        return "n/a"
    if row.get("gamma_valid") is False:
        return f"{row['gamma']:.3f} (not a property of this curve)"
    return f"{row['gamma']:.3f}"


def _check_cell(row: dict) -> str:
    check = row.get("form_check")
    if not check:  # a group row of a hierarchical fit
        return "pools a curve that fails" if row.get("gamma_valid") is False else ""
    return {True: "passes", False: "fails"}.get(check.get("passes"), "not checked")


def form_text(result: dict) -> str:
    """The form check in words: one sentence on the model's curves, one line per curve."""
    curves = [r for r in result.get("curves", []) if r.get("form_check")]
    if not curves:
        return ("No form check in this fit (made before it existed, or with "
                "--no-form-check): the γ below assume that a power law describes each curve.\n\n")
    check = result.get("form_check") or {}
    lines = "".join(f"- `{r['curve']}`: {r['form_check']['verdict']}.\n" for r in curves)
    how = f" How: {check['method']}; {check['criteria']}." if check.get("method") else ""
    return f"Form check of each curve.{how}\n\n{lines}\n"


def form_sentence(result: dict) -> str:
    """A sentence on the model curves whose form check failed ("" when none failed)."""
    bad = [r for r in result.get("curves", []) if r.get("group") == "model"
           and not str(r["curve"]).startswith("group:") and r.get("gamma_valid") is False]
    if not bad:
        return ""
    def reason(verdict: str) -> str:  # "not a power law: X; Y" -> "X; Y"
        return verdict.split(": ", 1)[1] if verdict.startswith("not ") else verdict

    verdicts = "; ".join(f"{r['curve']}: {reason(r['form_check']['verdict'])}" for r in bad)
    return (f"The model's curve is not a power law ({verdicts}), so the comparison of "
            "exponents below does not describe it. ")


def fit_section(fit_dir: Path) -> tuple[str, str]:
    """The verdict sentence and the markdown of the γ fit (empty strings without a result)."""
    from cram.core.benchlog import markdown_table
    from cram.experiments.report import legend

    if not (fit_dir / "result.json").is_file():
        return "", ""
    result = json.loads((fit_dir / "result.json").read_text(encoding="utf-8"))
    curves, delta = result.get("curves", []), result.get("delta_gamma")
    verdict = form_sentence(result) + (verdict_sentence(delta) if delta
                                       else "No Δγ: the fit has only one group.")
    checked = any(r.get("form_check") for r in curves)
    rows = [{"curve": r["curve"], "points": r.get("n_points"), "γ": _gamma_cell(r),
             "90% interval": "" if r.get("gamma") is None else _interval(r),
             **({"form check": _check_cell(r)} if checked else {})} for r in curves]
    columns = {k: v for k, v in FIT_COLUMNS.items() if checked or k != "form check"}
    diag = result.get("diagnostics") or {}
    notes = "" if diag.get("ok", True) else "**The sampler's diagnostics failed**; "
    warnings = diag.get("warnings") or []
    if notes or warnings:
        notes = (notes or "Fit warnings: ") + "; ".join(warnings) + ".\n\n"
    rel = fit_dir.name + "/figures/"
    figures = "".join(f"- [{name}]({rel}{name}): {what}\n" for name, what in FIT_FIGURES.items()
                      if (fit_dir / "figures" / name).is_file())
    shown = "".join(f"![{name}]({rel}{name})\n" for name in ("curves.png", "delta_gamma.png")
                    if (fit_dir / "figures" / name).is_file())
    body = (f"{verdict} {_pooled_text(curves)}Δγ is γ_model − γ_human (posterior mean ± "
            "standard deviation); a positive Δγ means the model's curve falls faster. " + CAVEAT
            + "\n\n" + markdown_table(rows) + "\n" + legend(columns)
            + "\n" + form_text(result) + notes + "Figures (in `" + rel + "`):\n\n" + figures
            + "\n" + shown)
    return verdict, body


#: what the forgetting section's figure shows
FORGETTING_CAPTION = (
    "left, the study run's proportion of retired bindings recalled at the last test against "
    "the delay since their last exposure (training sequences, log axis), with the model's own "
    "routing and with each tier taken away (massed and spaced bindings together; black dashed "
    "and dotted: own routing, massed or spaced only; grey: the held-out bindings, never shown, "
    "the chance control); right, people's cued recall (Rubin, Hinton & Wenzel 1999) against "
    "intervening items + 1 (log axis; dashed: the mean of the three conditions, a derived "
    "curve). The two delay units are not commensurable: compare the shapes, not the positions.")


def study_text(run) -> str:
    """What the study run did, in words, from its config (fields it lacks are left out)."""
    study, train = run.config.get("study") or {}, run.config.get("train") or {}
    how = (f"studies {study['studied']} library bindings in {study['cohorts']} cohorts "
           f"({study['exposures']} study steps each; half massed, half spaced "
           f"{study['spacing']} steps apart), retires them, and " if
           {"studied", "cohorts", "exposures", "spacing"} <= set(study) else "")
    every = f"every {train['pattern_every']} steps and at the end" if "pattern_every" in train \
        else "at every test"
    return (f"A second run, `{run.name}` (CRAM, preset `{run.config.get('preset', '?')}`, seed "
            f"{run.seed}, `--set {' '.join(STUDY_OVERRIDES)}`, "
            f"`{study.get('presentation', 'cue-answer')}` study), {how}{every} queries every "
            "library binding with its store removed, so that only the weights can answer: cued "
            "recall from long-term memory (docs/forgetting.md).")


def measure_text(run, fit_dir: Path) -> str:
    """Measure, unit and window of both sides of the comparison."""
    from cram.fitting.model_curves import forgetting_curve

    curve = forgetting_curve(run)
    lo, hi = float(curve["delay_value"].min()), float(curve["delay_value"].max())
    step = int(run.forgetting["step"].max())
    batch = (run.config.get("train") or {}).get("batch_size")
    per = f" (steps × {batch} sequences per batch)" if batch else ""
    result = {}
    if (fit_dir / "result.json").is_file():
        result = json.loads((fit_dir / "result.json").read_text(encoding="utf-8"))
    window = result.get("window")
    offset = (result.get("rules") or {}).get("offset") or {"intervening_items": 1}
    offset = offset if isinstance(offset, dict) else {}

    def t_of(unit: str, what: str) -> str:
        add = float(offset.get(unit, 0) or 0)
        return f"t = {what}" + (f" + {add:g}" if add else "")

    span = ("every delay each curve has (no window)" if window is None
            else f"{window[0]:g} to {window[1]:g} decades from each curve's first delay")
    return (f"**Measure, unit, window.** Model: proportion of test queries answered correctly "
            f"in cued recall of the retired bindings at the last test (step {step}), massed and "
            f"spaced pooled, {int(curve['n'].sum())} queries; delay since each binding's last "
            f"exposure in training sequences{per}, {lo:.0f} to {hi:.0f} "
            f"({math.log10(hi / lo):.1f} decades), {t_of('sequences', 'delay')}. People: Rubin, "
            "Hinton & Wenzel (1999), proportion of cued-recall probes answered correctly; delay "
            f"in intervening study items, 0 to 99, {t_of('intervening_items', 'items')} (2 "
            "decades with the offset 1). Window: " + span + ". The units "
            "are not commensurable, so only the exponent γ of the power form R = a·t^(−γ) is "
            "compared, which does not depend on the unit's scale; each curve is fitted alone"
            + _likelihoods(result) + ".\n")


def _likelihoods(result: dict) -> str:
    """`` (likelihood: binomial for the model's curve, normal for people's)`` from a fit."""
    by_group: dict[str, set] = {}
    for row in result.get("curves") or []:
        if row.get("likelihood") and not str(row.get("curve", "")).startswith("group:"):
            by_group.setdefault(row.get("group"), set()).add(str(row["likelihood"]))
    parts = [f"{'/'.join(sorted(by_group[g]))} for {who}"
             for g, who in (("model", "the model's query counts"),
                            ("human", "people's proportions")) if g in by_group]
    return f" (likelihood: {', '.join(parts)})" if parts else ""


def forgetting_fit_text(fit_dir: Path, run) -> str:
    """The form check of each curve in words, γ only where it passes, and the fit's figures."""
    from cram.apps.data import forgetting_fit_curves, form_check_lines, load_fit_folder

    fit = load_fit_folder(fit_dir)
    lines = form_check_lines(fit, forgetting_fit_curves(fit, run))
    rel = fit_dir.name + "/figures/"
    figures = "".join(f"- [{name}]({rel}{name}): {what}\n" for name, what in FIT_FIGURES.items()
                      if (fit_dir / "figures" / name).is_file())
    return ("**Form check and γ** (power form, maximum likelihood, fit folder `"
            f"{fit_dir.name}/`). γ is stated only for a curve whose form check passes:\n\n"
            + "".join(f"- {line}.\n" for line in lines)
            + (f"\nFigures of the fit (in `{rel}`):\n\n{figures}" if figures else ""))


def forgetting_section(run, fit_dir: Path, figure: Path | None, note: str) -> str:
    """The report's section "Forgetting over a delay" (markdown, with its heading)."""
    from cram.apps.data import forgetting_tier_text

    head = "\n## Forgetting over a delay (study protocol, MLE fit)\n\n"
    if run is None or run.forgetting is None or not len(run.forgetting):
        why = note or (f"`{run.name}` has no forgetting.csv (trained without the study "
                       "protocol?)." if run is not None else "No study run.")
        return head + why + "\n"
    parts = [study_text(run), measure_text(run, fit_dir)]
    if figure is not None and figure.is_file():
        parts.append(f"![recall against delay, model and people]({figure.name})\n\n"
                     f"[{figure.name}]({figure.name}): {FORGETTING_CAPTION}")
    parts.append("**Which tier answers at test.** " + forgetting_tier_text(run))
    parts.append(forgetting_fit_text(fit_dir, run) if (fit_dir / "result.json").is_file()
                 else (note or "No fit of the forgetting curve."))
    return head + "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def _seconds(runs) -> str:
    seconds = [run.meta.get("train_seconds") for run in runs]
    if not all(isinstance(t, (int, float)) for t in seconds):
        return ""
    return ", " + " and ".join(f"{t:.0f} s" for t in seconds) + " of training"


def trained_text(runs, preset: str, seeds: int) -> str:
    """What was trained, in words, from the first run's config (unknown fields left out)."""
    cfg = runs[0].config
    data, model, train = cfg.get("data", {}), cfg.get("model_config", {}), cfg.get("train", {})
    rate, share = data.get("query_rate", 0.05), data.get("library_share", 0.7)
    size = (f"{model['n_layers']} layers of width {model['d_model']}, "
            if "n_layers" in model and "d_model" in model else "")
    batch = f" of {train['batch_size']} sequences" if "batch_size" in train else ""
    held_out = (f" on {train['eval_sequences']} held-out sequences"
                if "eval_sequences" in train else " on held-out sequences")
    return (f"CRAM (model `{runs[0].model}`), preset `{preset}`, seeds {list(range(seeds))}: "
            f"{size}{train.get('steps', '?')} training steps{batch} on SRCD with "
            f"{data.get('length', '?')} positions per sequence, device "
            f"`{runs[0].meta.get('device', '?')}`{_seconds(runs)}. In SRCD {rate:.0%} of "
            "positions are queries that ask for the value stored earlier under a key; "
            f"{share:.0%} of the bindings "
            f"come from a library of {data.get('n_library', 100)} key→value pairs that recur "
            "in every sequence (they can be consolidated), the rest are new in each sequence "
            f"(only attention can answer them).{_task_text(data)} Every "
            f"{train.get('log_every', '?')} steps the "
            f"model is evaluated with hard routing{held_out}. The method is described in "
            "docs/method.md.\n")


def _task_text(data: dict) -> str:
    """What closes the task's shortcuts, in words (empty for the paper's labelled SRCD)."""
    parts = []
    if data.get("library_answer") == "unlabelled":
        parts.append(" Library queries carry no answer label in training, so the readout cannot "
                     "learn the library directly: a library value reaches its query only through "
                     "attention or through what consolidation wrote into the semantic tier.")
    if data.get("key_encoding") == "vector":
        parts.append(f" Keys are vectors with fresh noise (σ = {data.get('key_noise', '?')}) at "
                     "every occurrence, so familiarity is learned from what a key looks like.")
    return "".join(parts)


def _answers(runs, verdict: str, fit_note: str) -> str:
    """The two questions of the report, answered in a sentence each."""
    from cram.experiments.report import fall_answer

    def why(run) -> str:
        rise = run.familiarity_rise_step
        return ("" if rise is None or (run.transition or {}).get("step") is None
                else f", after its familiarity estimate q̂ began to mark library queries at "
                     f"step {rise:.0f}")

    fell = "; ".join(f"{run.name}: {fall_answer(run)}{why(run)}" for run in runs)
    compare = verdict or fit_note or "no fit was made."
    return ("**When did the model stop attending to library queries?** "
            f"{fell}.\n\n**How does its curve compare with people's?** {compare}\n")


def write_report(out: Path, runs, preset: str, seeds: int, figure: Path, fit_dir: Path,
                 fit_note: str, seconds: float, forgetting: str = "") -> Path:
    """Write ``OUT/report.md`` and return its path.

    The two answers come first, then what was trained, the transition, the tiers, the human
    comparison, forgetting over a delay (``forgetting``: the section of the study run, from
    :func:`forgetting_section`) and the run table, every column defined and every figure linked.
    """
    from cram.core.benchlog import markdown_table
    from cram.experiments.report import (
        RUN_COLUMNS,
        legend,
        report_rows,
        tier_text,
        transition_text,
    )

    verdict, fits = fit_section(fit_dir)
    def per_run(paragraph) -> str:
        named = len(runs) > 1
        return "\n\n".join((f"**{run.name}.** " if named else "") + paragraph(run)
                           for run in runs) + "\n"

    report = out / "report.md"
    report.write_text(
        "# CRAM demo report\n\n" + _answers(runs, verdict, fit_note)
        + "\n## What was trained\n\n" + trained_text(runs, preset, seeds)
        + "\n## When attention on library queries fell, and why\n\n" + per_run(transition_text)
        + f"\n![attention, familiarity and accuracy against step]({figure.name})\n\n"
        f"[{figure.name}]({figure.name}): left, the share of library queries (solid), novel "
        "queries (dashed) and all (token, layer) pairs (dotted) that read episodic memory, with "
        "the transition (vertical line) and the end of warm-up (dash-dotted grey); middle, q̂ "
        "(mean over layers) on library and novel queries, with the familiarity rise (vertical "
        "line); right, retrieval accuracy.\n"
        "\n## Which tier answers library queries\n\n" + per_run(tier_text)
        + "\n## How the curve compares with people's (power form, Bayesian fit)\n\n"
        + (fits or (fit_note or "No fit.") + "\n") + forgetting
        + "\n## Final metrics (hard-routed evaluation)\n\n" + markdown_table(report_rows(runs))
        + "\n" + legend(RUN_COLUMNS)
        + f"\nWall time of this command: {seconds:.0f} s (finished runs and an existing fit are "
        "reused, not redone). Explore: `cram app` (runs in this folder are found by default).\n",
        encoding="utf-8")
    return report


def study_step(out: Path, preset: str) -> str:
    """Train (or reuse) the study run, fit and plot its forgetting curve; its report section.

    An existing fit folder is reused, like the demo's other fit.
    """
    from cram.core.runs import load_run

    run_dir, note = train_study_run(out, preset)
    run = load_run(run_dir) if run_dir is not None else None
    if run is None or run.forgetting is None or not len(run.forgetting):
        return forgetting_section(run, out / FORGETTING_FIT, None, note)
    fit_dir = out / FORGETTING_FIT
    if not (fit_dir / "result.json").is_file():
        note = fit_forgetting(run_dir, fit_dir)
    figure = plot_forgetting(run, out / FORGETTING_FIGURE)
    return forgetting_section(run, fit_dir, figure, note)


def main(argv: list[str] | None = None) -> int:
    """Train, fit and write ``OUT/report.md``; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--no-study", dest="study", action="store_false",
                        help=f"skip the study run ({STUDY_RUN}) and its forgetting section")
    args = parser.parse_args(argv)

    from cram.core.benchlog import markdown_table
    from cram.core.runs import load_run
    from cram.experiments.report import plot_attention, report_rows, resume_hint

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_dirs = train_runs(out, args.preset, args.seeds)
    runs = [load_run(d) for d in run_dirs]
    for hint in filter(None, (resume_hint(run) for run in runs)):
        _log(hint)
    figure = plot_attention(runs, out / "attention_fraction.png")
    print(markdown_table(report_rows(runs)))
    fit_dir = out / "fit"
    fit_note = ""
    if not (fit_dir / "result.json").is_file():
        fit_note = fit_gamma_power(run_dirs, fit_dir, runs[0].config["train"]["log_every"])
    forgetting = study_step(out, args.preset) if args.study else ""
    report = write_report(out, runs, args.preset, args.seeds, figure, fit_dir, fit_note,
                          time.perf_counter() - t0, forgetting)
    _log(f"report: {report}; figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
