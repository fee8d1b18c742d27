"""``cram tasks``: list the built-in token tasks, or describe one with its measured statistics."""

from __future__ import annotations

import argparse

from cram.commands._util import emit_json, non_negative_int


def register(sub) -> None:
    """Add ``cram tasks`` to the CLI's subparsers."""
    p = sub.add_parser(
        "tasks", help="list the built-in token tasks (cram train --task NAME)",
        description="Without NAME: the built-in token tasks, one a line. With NAME: its sizes and "
                    "statistics measured on SAMPLES generated sequences (label share, library "
                    "share, the floor; docs/tasks.md). NAME may also be FILE.py:FACTORY or "
                    "MODULE:FACTORY.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   dest="task_args", help="argument of the task's factory (repeatable)")
    p.add_argument("--samples", type=int, default=256, help="sequences measured")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_tasks)


def _tasks(args) -> int:
    from cram.tasks import describe, list_tasks, load_task

    if args.name is None:
        tasks = list_tasks()
        if args.json:
            emit_json(tasks)
        else:
            width = max(map(len, tasks))
            for name, summary in tasks.items():
                print(f"{name:<{width}}  {summary}")
        return 0
    stats = describe(load_task(args.name, args.task_args), samples=args.samples, seed=args.seed)
    if args.json:
        emit_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0
