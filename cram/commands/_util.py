"""Small helpers shared by the CLI verbs: JSON output, the ``--set`` argument, logging to stderr.

Kept free of heavy imports so that ``cram --help`` and the reading verbs never load torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, TextIO

from cram.core.jsonio import json_safe


def log(*parts: object) -> None:
    """Progress and log lines go to stderr, so that stdout stays one JSON document."""
    print(*parts, file=sys.stderr, flush=True)


#: where :func:`emit_json` writes while :func:`stdout_for_json` holds stdout (else sys.stdout)
_json_out: TextIO | None = None


def emit_json(obj: Any) -> None:
    """Print exactly one JSON document on stdout with finite numbers only (non-finite → null)."""
    # no local names the stream: the CLI's error boundary recognises this frame as stdout's
    (_json_out or sys.stdout).write(json.dumps(json_safe(obj), allow_nan=False, indent=None)
                                    + "\n")
    (_json_out or sys.stdout).flush()


@contextlib.contextmanager
def stdout_for_json(active: bool = True):
    """Keep stdout for :func:`emit_json` alone inside the block (the CLI's ``--json`` verbs).

    Everything else written to stdout goes to stderr: ``sys.stdout`` is pointed at
    ``sys.stderr`` (a user task's ``print``, a library's message) and, where stdout is file
    descriptor 1, descriptor 1 at stderr's too (C code, child processes, forked data workers);
    :func:`emit_json` writes to the saved stdout. Everything is put back on leaving.
    """
    global _json_out
    if not active:
        yield
        return
    real, previous = sys.stdout, _json_out
    saved = _detach_fd1(real)
    json_out = real if saved is None else os.fdopen(
        saved, "w", encoding=getattr(real, "encoding", None) or "utf-8", closefd=False)
    sys.stdout, _json_out = sys.stderr, json_out
    try:
        yield
    finally:
        sys.stdout, _json_out = real, previous
        if saved is not None:
            with contextlib.suppress(OSError, ValueError):  # a failed write was raised already
                json_out.close()
            os.dup2(saved, 1)
            os.close(saved)


def _detach_fd1(real) -> int | None:
    """Point descriptor 1 at stderr's; return a duplicate of stdout's, or None where it is not 1."""
    try:
        if real.fileno() != 1 or sys.stderr.fileno() == 1:
            return None
        real.flush()
        saved = os.dup(1)
    except (AttributeError, OSError, ValueError):  # no descriptor (io.UnsupportedOperation)
        return None
    try:
        os.dup2(sys.stderr.fileno(), 1)
    except OSError:
        os.close(saved)
        return None
    return saved


def add_set_argument(parser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field of the preset (repeatable); checked against the dataclass",
    )


def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (one line naming the value otherwise)."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum} (an integer at least "
                                             f"{minimum})")
        return value

    return parse


#: seeds, and lengths where 0 means "none"
non_negative_int = int_at_least(0)
#: counts of at least one (seeds of a bench, repeats)
positive_int = int_at_least(1)
