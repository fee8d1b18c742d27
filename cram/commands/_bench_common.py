"""What the ``cram bench`` verbs share: their common arguments, the runs folder and the report.

Kept apart from ``bench.py`` so that every bench verb module (``bench.py``, ``bench_mechanism.py``)
imports it and none imports another.
"""

from __future__ import annotations

from pathlib import Path

from cram.commands._util import add_set_argument, emit_json, log, positive_int


def common_arguments(p, models_default: str, seeds: bool = True) -> None:
    """Options every bench verb that trains runs takes (preset, models, seeds, runs, results).

    ``seeds=False``: a verb that trains at one seed of its own (``cram bench sweep --seed``).
    """
    p.add_argument("--preset", default="demo")
    p.add_argument("--models", default=models_default,
                   help="comma-separated model names, or 'all'")
    if seeds:
        p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..K-1 (K >= 1)")
    p.add_argument("--runs-dir", default=None,
                   help="where runs are trained (finished runs are reused, partial ones resumed); "
                        "default runs/bench-<experiment>-<preset>")
    result_arguments(p)
    p.add_argument("--quiet", action="store_true")
    add_set_argument(p)


def result_arguments(p) -> None:
    """``--json``, ``--results DIR`` and ``--no-results``."""
    # the destinations stay ``doc`` and ``no_docs``: cram/commands/bench_mechanism.py reads them
    p.add_argument("--json", action="store_true",
                   help="print the rows as one JSON document (writes no file unless --results)")
    p.add_argument("--results", dest="doc", default=None, metavar="DIR",
                   help="folder the result files are written to, one subfolder per study "
                        "(default: $CRAM_RESULTS_DIR, else ./results; not written with --json "
                        "unless given)")
    p.add_argument("--no-results", "--no-docs", dest="no_docs", action="store_true",
                   help="write no result file")


def results_target(args):
    """The results folder of this invocation, or None (``--no-results``; ``--json`` alone)."""
    from cram.core.results import default_results_dir

    if args.no_docs or (args.json and args.doc is None):
        return None
    return default_results_dir() if args.doc is None else Path(args.doc)


def check_results_target(args) -> None:
    """Refuse a results folder that cannot be written, before any training or timing runs."""
    from cram.core.results import check_results_dir

    target = results_target(args)
    if target is not None:
        check_results_dir(target)


def settings_of(args) -> list[str]:
    """The ``--set`` overrides, ``--model-set`` and ``--task-arg`` values: a study of their own."""
    return [*getattr(args, "overrides", []), *getattr(args, "model_sets", []),
            *getattr(args, "task_args", [])]


def model_set_argument(p) -> None:
    """``--model-set MODEL:FIELD=VALUE``: a setting for one model only (its best from a sweep)."""
    p.add_argument("--model-set", dest="model_sets", action="append", default=[],
                   metavar="MODEL:FIELD=VALUE",
                   help="override a config field for one model only (repeatable), e.g. its best "
                        "learning rate from `cram bench sweep`: transformer:train.lr=0.01")


def model_overrides(args, models: list[str]) -> dict[str, list[str]]:
    """Each model's ``--set`` overrides followed by its own ``--model-set`` ones (which win)."""
    from cram.core.errors import ConfigError

    own: dict[str, list[str]] = {m: [] for m in models}
    for spec in getattr(args, "model_sets", []):
        model, sep, setting = spec.partition(":")
        if not sep or "=" not in setting or "." not in setting.partition("=")[0]:
            raise ConfigError(f"--model-set {spec!r}: expected MODEL:FIELD=VALUE, e.g. "
                              "transformer:train.lr=0.01")
        if model not in own:
            raise ConfigError(f"--model-set {spec!r}: {model!r} is not one of --models "
                              f"({', '.join(models)})")
        own[model].append(setting)
    return {m: [*args.overrides, *extra] for m, extra in own.items()}


def checked_task_name(args) -> str:
    """The name a bench gives ``--task`` in its runs folder (``srcd`` without one).

    The task is loaded with its ``--task-arg`` values first, so a bad task fails before any
    training.
    """
    from cram.tasks import load_task

    if args.task is None:
        return "srcd"
    load_task(args.task, args.task_args)
    return Path(args.task.rpartition(":")[2] or args.task).name


def model_list(arg: str) -> list[str]:
    """Model names from ``--models`` (``all``: the bench's defaults), each checked."""
    from cram.experiments.bench import DEFAULT_MODELS, check_models

    if arg == "all":
        models = list(DEFAULT_MODELS)
    else:
        models = [m.strip() for m in arg.split(",") if m.strip()]
    check_models(models)
    return models


def runs_dir(args, experiment: str):
    """``--runs-dir``, else ``runs/bench-<experiment>-<preset>``."""
    from pathlib import Path

    return Path(args.runs_dir or f"runs/bench-{experiment}-{args.preset}")


def report(title: str, rows: list[dict], columns: list[str], args, notes: str = "",
            summary: list[dict] | None = None, summary_columns: list[str] | None = None) -> None:
    """Log the table (and the summary over seeds); write its result file; print --json rows.

    The title gets the invocation's settings it does not name yet, and the study is the id of
    that title (:func:`cram.core.results.study_id`).
    """
    from cram.core.benchlog import markdown_table, record_benchmark
    from cram.core.results import study_id, title_with_settings

    log(markdown_table(rows, columns))
    tables = []
    if summary:
        log(markdown_table(summary, summary_columns))
        tables.append({"caption": "Mean and 95% t-interval over seeds:",
                       "columns": list(summary_columns or summary[0]), "rows": summary})
    target = results_target(args)
    if target is not None:
        title = title_with_settings(title, settings_of(args))
        seeds = sorted({r["seed"] for r in rows if isinstance(r.get("seed"), int)}) or None
        path = record_benchmark(study_id(title), title, rows, columns, notes, results=target,
                                seeds=seeds, tables=tables)
        log(f"result file: {path}")
    if args.json:
        emit_json(rows)
