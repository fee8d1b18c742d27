"""`cram fit gamma`: point or Bayesian γ fits of model and human forgetting curves.

Imports nothing heavy at module import; PyMC is loaded only for ``--method bayes``.
"""

from __future__ import annotations

import argparse
import sys

FORM_NAMES = ("power", "wickelgren", "fsrs", "power_asymptote", "exponential",
              "exponential_floor", "hyperbolic", "logarithmic", "logistic")


#: ``cram fit gamma --help``: what it does (before the options) and examples (after them)
GAMMA_DESCRIPTION = (
    "Estimate the forgetting exponent γ of each curve.\n\n"
    "Model curves come from run folders (--run, read via cram.load_run); human curves\n"
    "from shipped datasets (--human, see `cram data list`) or your own CSV (--human-csv,\n"
    "columns delay_value, delay_unit, measure, value[, n, source, curve]).\n"
    "The default, --method mle, fits each curve alone by maximum likelihood (seconds).\n"
    "--method bayes fits a hierarchical PyMC model with group-level γ for human and\n"
    "model curves and reports Δγ against a ROPE (about a minute for a few curves).\n"
    "The rules (form, window, offset, onset, ROPE) are written into every result.\n\n"
    "Form check: each curve's form is also compared with a power law, an exponential,\n"
    "a hyperbola and a logistic step (PSIS-LOO for bayes; ΔAIC/2 for point fits) and\n"
    "its predictive coverage is tested. A curve whose form fails keeps its γ in the\n"
    "output, marked gamma_valid: false with the verdict in words (e.g. 'not a power\n"
    "law: a logistic step fits better ...; γ is not a property of this curve').\n\n"
    "The model's episodic_reliance curve (share of library queries that read episodic\n"
    "memory, against training steps) is a transition in what the model attends to, not\n"
    "forgetting: it often drops like a step, and the form check then says so.")
GAMMA_EXAMPLES = (
    "examples:\n"
    "  cram fit gamma --human-csv my_recall.csv            # γ of your own curve\n"
    "  cram fit gamma --human rubin1999 --human ebbinghaus1885 "
    "--run runs/demo/cram-seed0 \\\n"
    "      --offset intervening_items=1 --offset steps=25 --method bayes "
    "--out fits/my-fit\n"
    "(--out must name a new folder; make demo's own fit is runs/demo/fit)")


def register(sub) -> None:
    """Add the ``fit`` subcommand to ``sub``."""
    p = sub.add_parser(
        "fit", help="fit forgetting curves (γ) of model runs and human data",
        description="Fit forgetting curves of model runs and human datasets under comparison "
                    "rules fixed in advance (form, window, offset, ROPE).")
    fsub = p.add_subparsers(dest="fit_command", metavar="SUBCOMMAND")
    fsub.required = True
    g = fsub.add_parser(
        "gamma", help="estimate γ per curve, and Δγ = γ_model − γ_human (Bayesian)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=GAMMA_DESCRIPTION, epilog=GAMMA_EXAMPLES)
    g.add_argument("--run", action="append", default=[], metavar="DIR",
                   help="run folder (repeatable); gives one model curve each")
    g.add_argument("--curve-kind", default="episodic_reliance",
                   choices=("episodic_reliance", "per_pattern", "retention", "forgetting"),
                   help="which model curve to take from each run (default: episodic_reliance: "
                        "the attention-use transition, the share of library queries that read "
                        "episodic memory against training steps; a transition, not forgetting, "
                        "often a step that the form check reports as not a power law; "
                        "retention: retrieval accuracy against store-to-query lag; "
                        "forgetting: cued recall of retired bindings against the delay in "
                        "training sequences, from a run trained with the study protocol, "
                        "docs/forgetting.md)")
    g.add_argument("--human", action="append", default=[], metavar="NAME",
                   help="shipped human dataset (repeatable; see `cram data list`)")
    g.add_argument("--human-csv", action="append", default=[], metavar="FILE",
                   help="your own curve CSV (repeatable)")
    g.add_argument("--rules", default=None, metavar="FILE",
                   help="comparison rules written down in advance (JSON: form, window, offset, "
                        "rope, interval); then --form/--window/--offset/--rope/--interval must "
                        "not be given")
    g.add_argument("--form", default=None, choices=FORM_NAMES, help="curve form (power)")
    g.add_argument("--method", default="mle", choices=("mle", "ols", "bayes"),
                   help="mle (default: maximum likelihood per curve, scipy; seconds), ols "
                        "(log-log statsmodels baseline) or bayes (hierarchical PyMC fit with "
                        "Δγ; about a minute)")
    g.add_argument("--window", default=None, metavar="A:B",
                   help="fit window in decades from the first t > 0 (default: all points)")
    g.add_argument("--offset", action="append", default=[], metavar="X|UNIT=X",
                   help="t = delay + offset; one number for all curves, or per delay unit "
                        "(repeatable: --offset steps=20 --offset intervening_items=1); needed "
                        "for forms that need t > 0 when a delay is 0")
    g.add_argument("--rope", type=float, default=None, help="ROPE half-width for Δγ (0.05)")
    g.add_argument("--interval", type=float, default=None, help="interval level (0.90)")
    g.add_argument("--likelihood", default="auto",
                   choices=("auto", "beta", "binomial", "normal"),
                   help="auto: binomial where trial counts are known (n with n_kind trials or "
                        "queries), else beta (bayes) / normal (mle); binomial: reads n as trials "
                        "(a user CSV needs a column n; n_kind may be left out)")
    _bayes_arguments(g)
    g.add_argument("--out", default=None, metavar="DIR",
                   help="write the fit folder here (must not exist)")
    g.add_argument("--json", action="store_true", help="print the result as one JSON document")
    g.add_argument("--results", default=None, metavar="DIR",
                   help="also write a result file under DIR (e.g. the project's results/; "
                        "needs --title): one row per curve (γ, interval, form check) and Δγ, "
                        "rendered into docs/benchmarks.md by `cram docs render`")
    g.add_argument("--title", default=None, help="the result file's title (with --results)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars or summary lines on stderr (warnings still shown); "
                        "without it, bars over the curves' fits and the window sensitivity go "
                        "to stderr (in a log that is not a terminal: one update per 5 s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (sampler, restarts)")
    g.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    g.add_argument("--no-window-sensitivity", action="store_true",
                   help="skip the γ-against-window table (up to 8 more MLE fits per curve: "
                        "most of the time of a large point fit)")
    g.add_argument("--no-form-check", action="store_true",
                   help="skip the check of each curve's form against a power law, an "
                        "exponential, a hyperbola and a logistic step (3 more fits per curve "
                        "for point fits; 3 more Bayesian fits for bayes); with this flag no γ is "
                        "marked as a property of its curve or not (no gamma_valid)")
    g.add_argument("--strict", action="store_true",
                   help="exit with code 4 when diagnostics fail (R-hat, ESS, divergences)")
    g.set_defaults(func=_gamma)


def _bayes_arguments(g) -> None:
    """The sampler's options of ``cram fit gamma`` (``--method bayes``)."""
    g.add_argument("--draws", type=int, default=1000, help="posterior draws per chain")
    g.add_argument("--tune", type=int, default=1000, help="tuning steps per chain")
    g.add_argument("--chains", type=int, default=2, help="chains")
    g.add_argument("--target-accept", type=float, default=None, metavar="P",
                   help="NUTS target acceptance in (0, 1) (default: 0.99 for a hierarchical "
                        "fit, 0.9 per curve; docs/fitting.md, 'Sampler settings')")
    g.add_argument("--sampler", default=None, choices=("nutpie", "pymc"),
                   help="NUTS implementation (default: pymc, fastest to bulk ESS 400 in "
                        "docs/benchmarks.md)")
    g.add_argument("--no-pooling", action="store_true",
                   help="bayes: fit each curve with its own γ prior (no hierarchy, no Δγ); "
                        "default: hierarchical when there are several curves")
    g.add_argument("--loo-forms", default="", metavar="F1,F2",
                   help="also fit these forms and compare all by LOO (bayes only)")


def _gamma(args) -> int:
    from cram.commands._util import emit_json, log
    from cram.core.errors import ConfigError
    from cram.fitting.pipeline import fit_gamma, gather_curves, rules_from_args

    if args.draws < 1 or args.tune < 0 or args.chains < 1:
        raise ConfigError("--draws and --chains must be >= 1 and --tune >= 0")
    if args.target_accept is not None and not 0 < args.target_accept < 1:
        raise ConfigError(f"--target-accept {args.target_accept}: must be in (0, 1)")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed {args.seed}: must be in 0 .. 2**32 - 1")
    if args.loo_forms and args.method != "bayes":
        raise ConfigError("--loo-forms needs --method bayes")
    from cram.fitting.rules import ComparisonRules, parse_offset

    if args.rules:
        given = [f for f, v in (("--form", args.form), ("--window", args.window),
                                ("--offset", args.offset), ("--rope", args.rope),
                                ("--interval", args.interval)) if v not in (None, [])]
        if given:
            raise ConfigError(f"--rules {args.rules} fixes the comparison rules; do not also "
                              f"give {', '.join(given)}")
        rules = ComparisonRules.from_file(args.rules)
    else:
        rules = rules_from_args(args.form or "power", args.window, parse_offset(args.offset),
                                0.05 if args.rope is None else args.rope,
                                0.90 if args.interval is None else args.interval)
    if args.out is not None:
        from cram.fitting.io import check_out_free

        check_out_free(args.out)
    if (args.results is None) != (args.title is None):
        raise ConfigError("--results and --title go together")
    if args.results is not None:
        from cram.core.results import check_results_dir

        check_results_dir(args.results)
    from cram.core.runs import load_runs

    runs = load_runs(args.run, warn=lambda w: log(f"cram fit: warning: {w}"))
    df = gather_curves(runs, args.human, args.human_csv, args.curve_kind)
    if not args.quiet:
        log(f"cram fit: {df['curve'].nunique()} curve(s), {len(df)} point(s); rules: "
            f"form={rules.form} window={rules.window} offset={rules.offset} rope={rules.rope}")
    doc = fit_gamma(df, rules, args.method, out=args.out, seed=args.seed,
                    likelihood=args.likelihood, draws=args.draws, tune=args.tune,
                    chains=args.chains, sampler=args.sampler, target_accept=args.target_accept,
                    figures=not args.no_figures,
                    window_sens=not args.no_window_sensitivity,
                    loo_forms=[f for f in args.loo_forms.split(",") if f.strip()],
                    hierarchical=False if args.no_pooling else None,
                    progress=not args.quiet, form_check=not args.no_form_check,
                    argv=["cram", *sys.argv[1:]])
    _flag_bounds(doc, args.method)
    if args.results is not None:
        _record(doc, args)
    if args.json:
        emit_json(doc)
    else:
        for c in doc["curves"]:
            log(f"  {c['curve']:<50} {_gamma_text(c)}")
            if c.get("form_check"):
                log(f"      form check: {c['form_check']['verdict']}")
            elif c.get("gamma_note"):
                log(f"      {c['gamma_note']}")
        if doc.get("delta_gamma"):
            log(f"  Δγ: {doc['delta_gamma']['statement']}")
            if doc["delta_gamma"].get("form_caveat"):
                log(f"  Δγ is not interpretable as it stands: "
                    f"{doc['delta_gamma']['form_caveat']}")
        if doc.get("form_check"):
            log(f"  form check: {doc['form_check']['statement']}")
    diag = doc["diagnostics"]
    if not diag.get("ok", True):
        log("cram fit: WARNING: diagnostics failed; see 'diagnostics' in the result")
        if args.strict:
            return 4
    return 0


#: columns of the result file ``--results`` writes
RESULT_COLUMNS = ["curve", "group", "gamma", "gamma_low", "gamma_high", "gamma_valid", "verdict"]


def result_rows(doc: dict) -> list[dict]:
    """One row per curve of a fit result (γ, interval, form check), then Δγ if fitted."""
    rows = [{"curve": c["curve"], "group": c.get("group", ""), "gamma": c.get("gamma"),
             "gamma_low": c.get("gamma_low"), "gamma_high": c.get("gamma_high"),
             "gamma_valid": c.get("gamma_valid"),
             "verdict": (c.get("form_check") or {}).get("verdict", c.get("gamma_note", ""))}
            for c in doc["curves"]]
    delta = doc.get("delta_gamma")
    if delta:
        rows.append({"curve": "Δγ = γ_model − γ_human", "group": "",
                     "gamma": delta.get("mean", delta.get("median")),
                     "gamma_low": delta.get("low", delta.get("hdi_low")),
                     "gamma_high": delta.get("high", delta.get("hdi_high")),
                     "gamma_valid": delta.get("gamma_valid"),
                     "verdict": " ".join(x for x in (delta.get("statement", ""),
                                                     delta.get("form_caveat", "")) if x)})
    return rows


def _record(doc: dict, args) -> None:
    """Write the fit as a result file (``--results``, ``--title``)."""
    from cram.commands._util import log
    from cram.core.benchlog import record_benchmark
    from cram.core.results import study_id

    notes = (f"Method {doc['method']}, form {doc['form']}, rules {doc.get('rules')}. "
             + (doc.get("form_check") or {}).get("statement", ""))
    path = record_benchmark(study_id(args.title), args.title, result_rows(doc), RESULT_COLUMNS,
                            notes, results=args.results)
    log(f"result file: {path}")


def _flag_bounds(doc: dict, method: str) -> None:
    """Point fits: mark parameters stuck at a bound of the form and warn about each.

    ``at_bound`` is set per curve and a diagnostics warning is added for each, so that neither
    the JSON nor the text hides them.
    """
    if method == "bayes":
        return
    from cram.fitting.mle import params_at_bound

    for c in doc.get("curves", []):
        stuck = params_at_bound(doc["form"], c.get("params") or {})
        c["at_bound"] = stuck
        if stuck:
            diag = doc.setdefault("diagnostics", {})
            diag.setdefault("warnings", []).append(
                f"{c['curve']}: {', '.join(stuck)} at a bound of form {doc['form']!r}; not "
                "identified by these data (no interval)")
            diag["ok"] = False


def _gamma_text(c: dict) -> str:
    import math

    g, lo, hi = c.get("gamma"), c.get("gamma_low"), c.get("gamma_high")
    if g is None:
        return "γ = null (form has no power exponent)"
    if c.get("gamma_valid") is False:
        if str(c.get("curve", "")).startswith("group:"):
            return f"γ = {g:.4f} NOT INTERPRETABLE: it pools a curve that fails the form check"
        return (f"γ = {g:.4f} NOT INTERPRETABLE: the form check failed, γ is not a property "
                "of this curve")
    if "gamma" in c.get("at_bound", []):
        return f"γ = {g:.4f} AT ITS BOUND: not identified by these data (no interval)"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"γ = {g:.4f} (interval undefined)"
    return f"γ = {g:.4f} [{lo:.4f}, {hi:.4f}]"
