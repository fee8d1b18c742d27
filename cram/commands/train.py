"""`cram train`: not built yet."""

from __future__ import annotations

from cram.errors import NotBuiltError


def register(sub) -> None:
    p = sub.add_parser("train", help="(train: not built yet)", description="Not built yet.")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise NotBuiltError("'cram train' is not built yet")
