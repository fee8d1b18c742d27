"""The ``cram`` command line (also ``python -m cram``).

Verbs are grouped by subject; each group lives in ``cram/commands/<group>.py`` and exposes
``register(subparsers)``. Group modules import nothing heavy at import time, so ``cram --help``,
``cram data`` and ``cram fit`` never load torch.

Errors end in one line on stderr and a non-zero exit code, never a traceback:
``CramError`` (bad input, exit 2; ``ResourceError`` exit 3) is printed as it is; argument errors
are one line (exit 2); decode, JSON, OS (no space left, permission denied, ...), out-of-memory and
checkpoint-shape errors that escape a command are mapped at this boundary by
:func:`boundary_error` (exit 2 or 3); anything else is a bug and prints one line
``internal error: ...`` (exit 70); ``CRAM_DEBUG=1`` re-raises it with its traceback.

Signals: Ctrl-C (SIGINT) ends a command with ``cram: interrupted`` (exit 130) and SIGTERM with
``cram: terminated (SIGTERM)`` (exit 143): SIGTERM raises :class:`~cram.core.errors.Terminated`,
a ``KeyboardInterrupt``, so a training run records status ``interrupted`` and removes its lock
either way. With ``--json``, stdout holds the JSON document alone: anything else written to it
while the command runs (a user task's ``print``) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from cram.core.errors import CramError, Terminated

#: exit code of an unexpected exception (a bug), as in sysexits.h's EX_SOFTWARE
INTERNAL_ERROR = 70

#: subject → module under ``cram.commands``; order is the order shown by ``--help``.
GROUPS = ("srcd", "tasks", "train", "bench", "data", "fit", "app", "redundancy", "docs")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), naming --help."""

    def error(self, message: str):
        """Exit with code 2 after printing ``message`` as one line that names --help."""
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``cram`` argument parser with every group's subcommands registered."""
    parser = OneLineParser(
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
    _name_sub_verbs(sub)
    return parser


def _name_sub_verbs(sub) -> None:
    """End each group's line in ``cram --help`` with its sub-verbs, taken from the parser itself.

    So the top-level help can never omit one (``data curves``, ``bench mechanism``);
    tests/test_cli_help.py holds the README to the same list.
    """
    for action in sub._choices_actions:  # argparse's help entries of the sub-commands
        group = sub.choices[action.dest]
        verbs = [name for a in group._actions if isinstance(a, argparse._SubParsersAction)
                 for name in a.choices]
        if verbs:
            action.help = f"{action.help} [{', '.join(verbs)}]"


def _version() -> str:
    from cram import __version__

    return f"cram {__version__}"


def _one_line(text: object) -> str:
    """``text`` on one line: its non-empty lines joined with '; '."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return "; ".join(lines) or "(no message)"


#: locals that name the file or folder a frame works on, most specific first
_PATH_LOCALS = ("path", "file", "filename", "fname", "f", "target", "ckpt", "checkpoint",
                "run_dir", "out")
STDOUT = "standard output"


def _path_from_traceback(err: BaseException) -> str | None:
    """The file a failing frame was working on.

    The innermost local named like a path (or standard output when the failing write was the JSON
    document on stdout).
    """
    tb, found = err.__traceback__, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "emit_json":
            found = STDOUT
        local = frame.f_locals
        opened = [v.name for v in local.values()  # an open file object names itself
                  if callable(getattr(v, "read", None)) and isinstance(getattr(v, "name", 0), str)]
        named = [str(local[n]) for n in _PATH_LOCALS
                 if isinstance(local.get(n), (str, Path)) and str(local[n])]
        if opened or named:
            found = (opened or named)[0]
        tb = tb.tb_next
    return found


def _where(err: BaseException) -> str:
    path = getattr(err, "filename", None) or _path_from_traceback(err)
    return f"{path}: " if path else ""


def _torch_oom(err: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never import torch here: only if a command loaded it
    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                              getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                  if isinstance(t, type))
    if types and isinstance(err, types):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower()
                                              or "can't allocate memory" in text)


def _os_error(err: OSError) -> tuple[str, int]:
    where = err.filename or _path_from_traceback(err) or "a file"
    if where == STDOUT or err.errno == errno.EPIPE:
        _silence_stdout()
    if err.errno == errno.EPIPE:
        return "output closed early (broken pipe)", 141
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device writing {where}", 3
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}", 3
    if err.errno == errno.EROFS:
        return f"read-only file system: cannot write {where}", 3
    if err.errno == errno.ENOENT:
        return f"no such file or folder: {where}", 2
    if err.errno == errno.ENOTDIR:
        return f"not a folder: {where}", 2
    if err.errno == errno.EISDIR:
        return f"is a folder, expected a file: {where}", 2
    return f"{err.strerror or type(err).__name__}: {where}", 3


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the exit-time flush cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout already gone
        pass


def boundary_error(err: BaseException) -> tuple[str, int] | None:
    """One-line message and exit code for an error a user or the machine can cause, else None.

    Decode and JSON errors name the file being read (from the exception or the failing frame),
    OS errors their errno (ENOSPC → "no space left on device writing X"), out-of-memory errors
    (Python's and torch's, without importing torch) say what to lower, and a state dict of another
    shape says the checkpoint does not match the model.
    """
    if isinstance(err, UnicodeDecodeError):
        bad = err.object[err.start:err.start + 1]
        return f"{_where(err)}not UTF-8 text (byte {bad!r} at offset {err.start})", 2
    if isinstance(err, json.JSONDecodeError):
        return (f"{_where(err)}not valid JSON ({err.msg} at line {err.lineno} column "
                f"{err.colno})"), 2
    if isinstance(err, MemoryError) or _torch_oom(err):
        return ("out of memory" + (f" ({_one_line(err)[:200]})" if str(err) else "")
                + "; lower train.batch_size or data.length, or use a smaller preset"), 3
    if isinstance(err, OSError):
        return _os_error(err)
    if isinstance(err, RuntimeError) and "loading state_dict" in str(err):
        lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
        detail = lines[0] if lines else "parameter names or shapes differ"
        return (f"{_where(err)}checkpoint does not match the model ({detail[:200]}); was it "
                "written by another model, size or version?"), 2
    return None


def _fail(message: str, code: int) -> int:
    print(f"cram: error: {_one_line(message)}", file=sys.stderr)
    return code


def _raise_terminated(signum, frame):
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def _sigterm_raises():
    """Inside the block SIGTERM raises :class:`Terminated` in the main thread (as Ctrl-C does).

    Not where SIGTERM is ignored (as Python leaves an ignored SIGINT ignored), nor outside the
    main thread, which cannot set handlers; the previous handler is put back on leaving.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    """Run ``cram`` with ``argv``; return the exit code (errors as one line on stderr)."""
    from cram.commands._util import stdout_for_json

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_raises(), stdout_for_json(bool(getattr(args, "json", False))):
            code = args.func(args)
    except CramError as err:
        return _fail(str(err), err.exit_code)
    except Terminated:
        print("cram: terminated (SIGTERM)", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        print("cram: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the boundary: map it, or report a bug in one line
        if os.environ.get("CRAM_DEBUG"):
            raise
        mapped = boundary_error(err)
        if mapped is not None:
            return _fail(*mapped)
        return _fail(f"internal error: {type(err).__name__}: {_one_line(err)[:300]} (run with "
                     "CRAM_DEBUG=1 for the traceback)", INTERNAL_ERROR)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
