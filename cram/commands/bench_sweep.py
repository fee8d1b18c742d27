"""``cram bench sweep``: each model's best training setting from a stated grid, at one seed.

Trains every model at every point of ``--grid`` (default: learning rates 0.001, 0.003 and 0.01)
on SRCD or a token task, reads each run's validation curve, and writes two tables: every run
(final novel and library accuracy, attention per token, steps to converge, whether the curve
stopped improving) and each model's best point, with the ``--model-set`` options that train it
there in ``cram bench srcd``. Design: docs/baselines.md.
"""

from __future__ import annotations

import argparse
import os

from cram.commands._bench_common import (
    check_results_target,
    checked_task_name,
    common_arguments,
    model_list,
    report,
    runs_dir,
)

ROW_COLUMNS = ["model", "setting", "score", "retrieval_acc_novel", "retrieval_acc_library",
               "attention_per_token", "attention_over_floor", "best_acc", "steps_to_converge",
               "converged", "steps", "train_seconds"]
BEST_COLUMNS = ["model", "best_setting", "score", "converged", "steps_to_converge", "model_set"]


def add_parser(bsub) -> None:
    """Register ``sweep`` under ``cram bench``."""
    from cram.commands.train import add_task_arguments

    p = bsub.add_parser("sweep", help="each model's best learning rate (or other setting) from "
                        "a stated grid (issue 32)", description=__doc__,
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(p, models_default="cram,transformer", seeds=False)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a swept config field and its values (repeatable: the grid is every "
                        "combination); default train.lr=0.001,0.003,0.01")
    p.add_argument("--seed", type=int, default=0, help="the one seed every grid point trains")
    add_task_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """The ``cram bench sweep`` verb."""
    from cram.consolidation.config import get_preset
    from cram.experiments.sweep import DEFAULT_GRID, best_per_model, parse_grid, run_sweep

    check_results_target(args)
    get_preset(args.preset)
    models = model_list(args.models)
    axes = parse_grid(args.grid or list(DEFAULT_GRID))
    name = checked_task_name(args)
    root = runs_dir(args, f"sweep-{name}")
    rows = run_sweep(models, axes, args.preset, root, args.overrides, seed=args.seed,
                     progress=not args.quiet, task=args.task, task_args=args.task_args)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    grid = "; ".join(f"{field} ∈ {{{', '.join(values)}}}" for field, values in axes)
    task = f"task `{args.task}` {' '.join(args.task_args)}" if args.task else "SRCD"
    notes = (f"Grid {grid}; {task}, preset `{args.preset}`, seed {args.seed}, runs in `{root}`. "
             "score = mean of final novel and library accuracy on the task's evaluation set "
             "(novel alone where there is no library); steps_to_converge = first evaluated step "
             "within 0.01 of the run's best; converged = the last quarter of evaluations did "
             f"not improve on the best before it by more than 0.01. Load average when written: "
             f"{load}.")
    table_args = argparse.Namespace(**{**vars(args), "overrides": [*args.overrides,
                                                                   *[f"grid {g}" for g in
                                                                     args.grid]]})
    report(f"Sweep: each model's best setting ({name}, preset {args.preset})", rows,
           ROW_COLUMNS, table_args, notes)
    best = best_per_model(rows)
    report(f"Sweep winners ({name}, preset {args.preset})", best, BEST_COLUMNS, table_args, notes)
    return 0
