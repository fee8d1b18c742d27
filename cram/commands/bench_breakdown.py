"""``cram bench breakdown RUN...``: novel accuracy of trained recall runs, broken down.

For each run folder (trained on ``recall-unmarked``, ``recall-marked`` or ``mqar``), novel accuracy
on its task's evaluation set by store → query distance and by the number of distinct keys stored
before the query. A model that matches keys answers alike at every count; one that copies some
value seen in context falls with every key added (docs/baselines.md). A second table gives the
share of each token class (store key, stored value, novel query, library query, other) that reads
attention, per layer, under hard routing: where a routed model pays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cram.commands._bench_common import check_results_target, report, result_arguments
from cram.commands._util import positive_int

COLUMNS = ["run", "model", "setting", "steps_to_converge", "converged", "by", "bin", "n",
           "novel_acc"]
ATTENTION_COLUMNS = ["run", "model", "setting", "layer", "token_class", "per_sequence",
                     "attention"]


def run_setting(config: dict) -> str:
    """What tells runs apart in a table: task, steps, lr, heads, rope, layout, a routed run's gate.

    The layout (``model.working_layout``) is named only where it is not the default serial one.
    """
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    args = task.get("args") if isinstance(task.get("args"), dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    model = config.get("model_config") if isinstance(config.get("model_config"), dict) else {}
    parts = [f"{task.get('spec', 'srcd')}", *(f"{k}={v}" for k, v in args.items()),
             f"steps={train.get('steps')}", f"lr={train.get('lr')}",
             f"n_heads={model.get('n_heads')}"]
    if model.get("attention_rope"):
        parts.append("rope")
    if model.get("working_layout", "serial") != "serial":
        parts.append(f"working_layout={model['working_layout']}")
    if str(config.get("model", "")).startswith("cram") and train.get("cost_gate"):
        parts.append(f"cost_gate={train['cost_gate']}")
    return " ".join(parts)


def run_names(dirs: list[Path]) -> list[str]:
    """Each run folder named by its path below the folders' common parent (unique in a table)."""
    import os

    parents = [str(d.resolve().parent) for d in dirs]
    common = Path(os.path.commonpath(parents)) if parents else Path(".")
    return [str(d.resolve().relative_to(common)) for d in dirs]


def add_parser(bsub) -> None:
    """Register ``breakdown`` under ``cram bench``."""
    p = bsub.add_parser("breakdown", help="novel accuracy of recall runs by store distance and "
                        "keys in context (issue 32)", description=__doc__,
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="trained run folders")
    p.add_argument("--sequences", type=positive_int, default=1024,
                   help="evaluation sequences per run")
    p.add_argument("--label", default=None,
                   help="what the tables' titles name (default: the runs' common folder)")
    result_arguments(p)
    p.set_defaults(func=run, overrides=[])


def run(args) -> int:
    """The ``cram bench breakdown`` verb."""
    from cram.core.errors import RunFolderError
    from cram.core.runs import read_json
    from cram.experiments.recall_breakdown import breakdown
    from cram.experiments.sweep import run_convergence

    check_results_target(args)
    dirs = [Path(r) for r in args.runs]
    for d in dirs:
        if not (d / "config.json").is_file():
            raise RunFolderError(f"{d}: no config.json; is this a cram run folder?")
    rows, attention = [], []
    for d, name in zip(dirs, run_names(dirs)):
        config = read_json(d / "config.json")
        who = {"run": name, "model": config.get("model", "?"), "setting": run_setting(config)}
        accuracy, reads = breakdown(d, n_sequences=args.sequences)
        rows += [{**who, **run_convergence(d), **row} for row in accuracy]
        attention += [{**who, **row} for row in reads]
    common = dirs[0].parent if len({d.parent for d in dirs}) == 1 else None
    label = args.label or str(common or "several folders")
    notes = (f"{args.sequences} evaluation sequences per run (the task's own evaluation set); "
             "novel queries only. by = distance: tokens from the stored key to its query; by = "
             "keys_before: distinct keys stored before the query, its own included; "
             "steps_to_converge and converged are read from the run's validation curve "
             "(docs/baselines.md).")
    table_args = argparse.Namespace(**{**vars(args), "json": False,  # --json: rows on stdout
                                       "no_docs": args.no_docs or (args.json and not args.doc)})
    report(f"Recall breakdown: novel accuracy by store distance and keys in context ({label})",
           rows, COLUMNS, table_args, notes)
    if all(r["attention"] == 1.0 for r in attention):
        from cram.commands._util import log

        log("no routing table: every token of every run reads attention in every layer (dense)")
    else:
        report(f"Recall routing: attention per token class and layer ({label})", attention,
               ATTENTION_COLUMNS, table_args, notes + " attention = share of that class's "
               "tokens that read episodic memory under hard routing; layer any = in any layer.")
    if args.json:
        from cram.commands._util import emit_json

        emit_json(rows)
    return 0
