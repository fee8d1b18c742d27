"""Exceptions shared by every subpackage.

``CramError`` is the one error the CLI turns into a clean message and a non-zero exit code; every
check of user input (configs, CSVs, checkpoints, run folders) raises it or a subclass, with a
message that says *what* is wrong and *where* (file, row, column or config field).
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


class NotBuiltError(CramError):
    """A CLI verb that exists in the design but is not implemented yet."""

    exit_code = 3
