"""``cram bench forgetting``: forgetting curves with a delay axis and the classic findings.

Trains (or reuses) each model with the study protocol on (``--set study.protocol=study-test``:
library bindings studied in staggered cohorts, massed or spaced, then retired and tested with
their store removed), and writes two tables: the final test's retention against delay per model,
tier ablation and schedule, and the findings (a) form, (b) Jost's law, (c) spacing, (d) what
the semantic tier carries, (e) savings. Design: docs/forgetting.md.
"""

from __future__ import annotations

import argparse
import os

from cram.commands._bench_common import (
    check_results_target,
    common_arguments,
    model_list,
    report,
    runs_dir,
)


def add_parser(bsub) -> None:
    """Register ``forgetting`` under ``cram bench``."""
    from cram.experiments.forgetting import FORGETTING_MODELS

    p = bsub.add_parser("forgetting", help="forgetting curves over a delay, and the classic "
                        "findings (issue 29)", description=__doc__,
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(p, models_default=",".join(FORGETTING_MODELS))
    p.set_defaults(func=run)


def run(args) -> int:
    """The ``cram bench forgetting`` verb."""
    from cram.consolidation.config import resolve
    from cram.experiments.forgetting import (
        CURVE_COLUMNS,
        FINDING_COLUMNS,
        RELEARN_COLUMNS,
        RELEARN_STEPS,
        STUDY_OVERRIDES,
        curve_rows,
        finding_rows,
        run_forgetting,
    )

    check_results_target(args)
    models = model_list(args.models)
    config = resolve(models[0], args.preset, [*STUDY_OVERRIDES, *args.overrides])
    chance = 1.0 / config.data.n_values
    root = runs_dir(args, "forgetting")
    table_args = argparse.Namespace(**{**vars(args), "json": False,
                                       "no_docs": args.no_docs or (args.json and not args.doc)})
    df, relearn = run_forgetting(models, args.preset, args.seeds, root, args.overrides,
                                 progress=not args.quiet)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    study = config.study
    notes = (f"Preset `{args.preset}`, runs in `{root}`, study protocol: {study.studied} "
             f"library bindings in {study.cohorts} cohorts, {study.exposures} exposures (massed: "
             f"consecutive steps; spaced: {study.spacing} steps apart), weight {study.weight}; "
             "each test queries every binding with its store removed. Accuracy: mean over seeds "
             f"with a 95% t-interval; chance {chance:.4f}. Load average when written: {load}.")
    report(f"Forgetting curves: final test against delay (preset {args.preset})",
           curve_rows(df), CURVE_COLUMNS, table_args, notes)
    findings = finding_rows(df, chance, relearn)
    report(f"Forgetting findings (a)-(e) (preset {args.preset})", findings, FINDING_COLUMNS,
           table_args, notes + f" (e): relearning {RELEARN_STEPS} steps from the last "
           "checkpoint, retired against held-out bindings, cue-answer.")
    report(f"Relearning curves: retired against never-shown bindings (preset {args.preset})",
           relearn.to_dict("records"), RELEARN_COLUMNS, table_args, notes)
    if args.json:
        from cram.commands._util import emit_json

        emit_json(findings)
    return 0
