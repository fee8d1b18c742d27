"""``make demo``: train CRAM on the demo preset, fit γ against human curves, write a report.

Usage: ``python -m cram.commands.demo --out runs/demo [--seeds 1]``. Finished runs are reused and
partial ones resumed, so running it twice costs nothing the second time. It orchestrates training
(:mod:`cram.consolidation`) and fitting (:mod:`cram.fitting`), so it sits at the top with the CLI:
the fit is the same :func:`cram.fitting.pipeline.fit_gamma` call that ``cram fit gamma`` makes.
"""

from __future__ import annotations

import argparse
import json
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
            f"(only attention can answer them). Every {train.get('log_every', '?')} steps the "
            f"model is evaluated with hard routing{held_out}. The method is described in "
            "docs/method.md.\n")


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
                 fit_note: str, seconds: float) -> Path:
    """Write ``OUT/report.md`` and return its path.

    The two answers come first, then what was trained, the transition, the tiers, the human
    comparison and the run table, every column defined and every figure linked.
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
        + (fits or (fit_note or "No fit.") + "\n")
        + "\n## Final metrics (hard-routed evaluation)\n\n" + markdown_table(report_rows(runs))
        + "\n" + legend(RUN_COLUMNS)
        + f"\nWall time of this command: {seconds:.0f} s (finished runs and an existing fit are "
        "reused, not redone). Explore: `cram app` (runs in this folder are found by default).\n",
        encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    """Train, fit and write ``OUT/report.md``; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--preset", default="demo")
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
    report = write_report(out, runs, args.preset, args.seeds, figure, fit_dir, fit_note,
                          time.perf_counter() - t0)
    _log(f"report: {report}; figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
