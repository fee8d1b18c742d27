"""Exceptions shared by every subpackage.

``CramError`` is the one error the CLI turns into a clean message and a non-zero exit code; every
check of user input (configs, CSVs, checkpoints, run folders) raises it or a subclass, with a
message that says *what* is wrong and *where* (file, row, column or config field).

Exit codes: 2 for bad input (``CramError`` and its subclasses, and argument errors), 3 for a
resource the machine lacks (``ResourceError``: no space left, out of memory, permission denied),
4 for ``cram fit --strict`` when diagnostics fail, 70 for an internal error (a bug: the CLI prints
one line and, with ``CRAM_DEBUG=1``, the traceback), 130 for Ctrl-C (SIGINT), 143 for SIGTERM
(:class:`Terminated`).
"""

from __future__ import annotations


class CramError(Exception):
    """A problem with user input that the CLI reports without a traceback (exit code 2)."""

    exit_code = 2


class ConfigError(CramError, ValueError):
    """A config field has a value that cannot work; the message names the field."""


class DataError(CramError, ValueError):
    """A data file is malformed; the message names the file, the row and the column."""


class CheckpointError(CramError):
    """A checkpoint is missing, truncated or belongs to another model."""


class RunFolderError(CramError):
    """A run folder is missing, partial or corrupt, or would be overwritten."""


class ResourceError(CramError):
    """The machine ran out of something the command needs: disk space, memory, permissions."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the handler ``cram`` installs (exit code 143).

    A subclass of ``KeyboardInterrupt``, so that every path that handles Ctrl-C handles a SIGTERM
    the same way: a run folder records status ``interrupted`` and its lock is removed.
    """

    exit_code = 143
