"""`cram data`: list, show and check human forgetting datasets (no heavy imports)."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``data`` subcommand (list, show, check, curves) to ``sub``."""
    p = sub.add_parser("data", help="human forgetting datasets, your own curves, model curves",
                       description="Human forgetting data shipped with cram, checks of your own "
                                   "curve CSVs, and tidy model curves of run folders.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True
    ls = dsub.add_parser("list", help="list the shipped datasets",
                         description="List shipped datasets with measure, unit, n and licence.")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=_list)
    sh = dsub.add_parser("show", help="show one dataset (schema and rows)",
                         description="Show a dataset's schema (citation, licence, units) and rows.")
    sh.add_argument("name", help="dataset name (see `cram data list`)")
    sh.add_argument("--json", action="store_true", help="print one JSON document")
    sh.add_argument("--csv", action="store_true", help="print the tidy table as CSV")
    sh.set_defaults(func=_show)
    ck = dsub.add_parser("check", help="check your own curve CSV",
                         description="Validate a user CSV (delay_value, delay_unit, measure, "
                                     "value[, n, source, curve]) and list its curves.")
    ck.add_argument("file", help="CSV file")
    ck.add_argument("--json", action="store_true", help="print one JSON document")
    ck.set_defaults(func=_check)
    mc = dsub.add_parser(
        "curves", help="model curves from run folders (tidy table and figure)",
        description="Turn run folders into tidy model curves: episodic_reliance (attention on "
                    "library queries against steps after warm-up), per_pattern (episodic share "
                    "against exposures) or retention (accuracy against store-query lag, per "
                    "training stage, episodic memory on and off).")
    mc.add_argument("--run", action="append", required=True, metavar="DIR",
                    help="run folder (repeatable)")
    mc.add_argument("--kind", default="retention",
                    choices=("episodic_reliance", "per_pattern", "retention"))
    mc.add_argument("--binding", action="append", default=None, choices=("novel", "library"),
                    help="retention: which bindings (default novel; repeatable)")
    mc.add_argument("--csv", default=None, metavar="FILE", help="write the tidy table here")
    mc.add_argument("--figure", default=None, metavar="PNG", help="write a figure here")
    mc.add_argument("--json", action="store_true", help="print the table as one JSON document")
    mc.set_defaults(func=_curves)


def _list(args) -> int:
    from cram.commands._util import emit_json
    from cram.psych_data import list_datasets

    df = list_datasets()
    if args.json:
        emit_json({"datasets": df.to_dict("records")})
    else:
        with __import__("pandas").option_context("display.max_colwidth", 60,
                                                 "display.width", 200):
            print(df[["name", "title", "measure", "delay_unit", "n", "n_kind", "curves",
                      "derived_curves", "confidence"]].to_string(index=False))
    return 0


def _show(args) -> int:
    import pandas as pd

    from cram.commands._util import emit_json
    from cram.psych_data import dataset_info, load_dataset

    info = dataset_info(args.name)
    df = load_dataset(args.name)
    if args.json:
        emit_json({"name": args.name, "schema": info, "rows": df.to_dict("records")})
    elif args.csv:
        print(df.to_csv(index=False), end="")
    else:
        print(f"{args.name}: {info['title']}")
        for key in ("citation", "measure", "measure_definition", "delay_unit", "n", "n_kind",
                    "n_note", "likelihood", "licence", "confidence"):
            if key in info:
                print(f"  {key}: {info[key]}")
        with pd.option_context("display.width", 200):
            print(df[["curve", "delay_value", "delay_unit", "measure", "value", "n",
                      "derived"]].to_string(index=False))
    return 0


def _check(args) -> int:
    from cram.commands._util import emit_json
    from cram.psych_data import load_curves_csv

    df = load_curves_csv(args.file)
    summary = (df.groupby("curve", sort=False)
               .agg(points=("value", "size"), delay_unit=("delay_unit", "first"),
                    measure=("measure", "first"), delay_min=("delay_value", "min"),
                    delay_max=("delay_value", "max"))
               .reset_index())
    if args.json:
        emit_json({"file": args.file, "ok": True, "curves": summary.to_dict("records")})
    else:
        print(f"{args.file}: ok, {len(summary)} curve(s), {len(df)} row(s)")
        print(summary.to_string(index=False))
    return 0


def _curves(args) -> int:
    from pathlib import Path

    from cram.commands._util import emit_json, log
    from cram.core.errors import RunFolderError
    from cram.core.runs import load_runs
    from cram.fitting.model_curves import model_curves

    kw = {}
    if args.kind == "retention" and args.binding:
        kw["bindings"] = tuple(args.binding)
    runs = load_runs(args.run, warn=lambda w: log(f"cram data curves: warning: {w}"))
    df = model_curves(runs, kind=args.kind, **kw)
    for target in (args.csv, args.figure):
        if target and Path(target).exists():
            raise RunFolderError(f"{target}: already exists (never overwritten)")
    if args.csv:
        df.to_csv(args.csv, index=False)
        log(f"cram data curves: wrote {args.csv}")
    if args.figure:
        from cram.fitting.plots import plot_model_curves

        plot_model_curves(df, Path(args.figure), f"{args.kind}: {', '.join(args.run)}")
        log(f"cram data curves: wrote {args.figure}")
    if args.json:
        emit_json({"kind": args.kind, "rows": df.to_dict("records")})
    elif not args.csv:
        print(df.to_csv(index=False), end="")
    return 0
