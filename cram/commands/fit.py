"""`cram fit`: not built yet (see the issue tracker)."""

from __future__ import annotations

from cram.errors import NotBuiltError


def register(sub) -> None:
    p = sub.add_parser("fit", help="(fit: not built yet)", description="Not built yet.")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise NotBuiltError("'cram fit' is not built yet")
