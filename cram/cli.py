"""The ``cram`` command line (also ``python -m cram``).

Verbs are grouped by subject; each group lives in ``cram/commands/<group>.py`` and exposes
``register(subparsers)``. Group modules import nothing heavy at import time, so ``cram --help``,
``cram data`` and ``cram fit`` never load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cram.core.errors import CramError

#: subject → module under ``cram.commands``; order is the order shown by ``--help``.
GROUPS = ("srcd", "train", "bench", "data", "fit", "app", "redundancy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cram",
        description=(
            "CRAM: consolidation-based routing for adaptive memory. Train hybrid sequence models "
            "on SRCD, benchmark them, and fit forgetting curves of models and humans."
        ),
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"cram.commands.{group}").register(sub)
    return parser


def _version() -> str:
    from cram import __version__

    return f"cram {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except CramError as err:
        print(f"cram: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("cram: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
