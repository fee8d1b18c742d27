"""Run folders: the self-describing output of ``cram train`` (reading and crash-safe writing).

This module never imports torch: the fitting code, the app and the notebooks read runs through it.

Layout (``SCHEMA_VERSION`` 1)::

    RUN_DIR/
      config.json      the resolved config: {"model", "preset", "seed", "data", "model_config",
                       "train"}
      meta.json        schema_version, command line, cram version, git commit, library versions,
                       device, status ("running" | "finished" | "failed" |
                       "interrupted"), train_seconds
      metrics.csv      one row per logged step (columns: docs/run_folder.md)
      patterns.csv     every K steps, one row per library pattern: step, pattern, exposures,
                       episodic_share, q, qhat, n_queries, accuracy (hard routing; not in
                       folders written before 2026-12-07)
      retention.csv    retrieval accuracy against store→query lag at several training stages,
                       with episodic memory on and off
      transition.json  change-point estimate of the phase transition with a bootstrap interval
      checkpoints/last.pt, checkpoints/prev.pt   checkpoints that rebuild their model

Writes are atomic (temp file + ``os.replace``); the metrics log is append-only with fsync and is
truncated back to the checkpoint's step on ``--resume``, so a killed run neither loses nor
duplicates rows.

Reading treats the folder as data: a last line without its newline (a write cut short) is
dropped with a warning, and JSON of the wrong shape is a :class:`RunFolderError` naming the file
and the field (for the optional ``transition.json``, a warning and None).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cram.core.errors import RunFolderError
from cram.core.jsonio import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
METRICS_FILE = "metrics.csv"
PATTERNS_FILE = "patterns.csv"
RETENTION_FILE = "retention.csv"
FORGETTING_FILE = "forgetting.csv"
TRANSITION_FILE = "transition.json"
CHECKPOINT_DIR = "checkpoints"

class CsvLog:
    """Append-only CSV table with a fixed header, flushed and fsynced row by row.

    ``truncate_after(step)`` drops rows whose ``step`` exceeds the checkpoint's step (and any
    partial last line left by a kill), rewriting the file atomically. Columns that appear later
    than the header are an error: declare them up front.
    """

    def __init__(self, path: str | os.PathLike, columns: Iterable[str]):
        self.path = Path(path)
        self.columns = list(columns)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, encoding="utf-8", newline="") as fh:
                header = next(csv.reader(fh), None)
            if header is not None and header != self.columns:
                missing = [c for c in self.columns if c not in header]
                if missing:
                    raise RunFolderError(
                        f"{self.path}: existing header lacks columns {missing}; "
                        "was this run written by another model or version?"
                    )
                self.columns = header
        else:
            atomic_write_text(self.path, ",".join(self.columns) + "\n")

    def append(self, rows: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Append one row or a list of rows to the CSV; unknown columns are an error."""
        rows = [rows] if isinstance(rows, dict) else rows
        unknown = {k for r in rows for k in r} - set(self.columns)
        if unknown:
            raise RunFolderError(f"{self.path}: columns {sorted(unknown)} are not in the header")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        for r in rows:
            writer.writerow({k: _fmt(v) for k, v in r.items()})
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_after(self, step: int) -> int:
        """Keep only complete rows with ``step <= step``; return how many rows were dropped."""
        with open(self.path, encoding="utf-8", newline="") as fh:
            text = fh.read()
        lines = text.split("\n")
        complete = lines[:-1]  # a complete last line leaves '' after the split; else partial
        header, body = complete[0], complete[1:]
        idx = header.split(",").index("step")
        kept = []
        for line in body:
            cells = next(csv.reader([line]))
            if len(cells) != len(self.columns):
                continue
            try:
                if float(cells[idx]) <= step:
                    kept.append(line)
            except ValueError:
                continue
        dropped = len(body) - len(kept) + (0 if text.endswith("\n") else 1)
        atomic_write_text(self.path, "\n".join([header, *kept]) + "\n")
        return dropped


def _fmt(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(round(v, 8))
    return v


@dataclass
class Run:
    """A run folder read back: ``.config`` (dict), ``.metrics`` (DataFrame) and friends."""

    path: Path
    config: dict
    meta: dict
    metrics: Any  # pandas.DataFrame, one row per logged step
    patterns: Any = None  # pandas.DataFrame or None
    retention: Any = None  # pandas.DataFrame or None
    transition: dict | None = None
    warnings: list[str] = field(default_factory=list)  # one line each: optional files
    #   missing, corrupt or of the wrong shape, and partial last lines that were dropped
    forgetting: Any = None  # pandas.DataFrame or None: the study protocol's tests

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def model(self) -> str:
        """The model name from the run's config, or ``?``."""
        return str(self.config.get("model", "?"))

    @property
    def seed(self) -> int | None:
        """The seed from the run's config (None when absent)."""
        return self.config.get("seed")

    @property
    def warmup_steps(self) -> int:
        """Where warm-up ended.

        transition.json's schedule block (issue 13: a learned schedule ends it on a criterion),
        else the configured ``train.warmup_steps`` (0 when absent).

        Raises
        ------
        RunFolderError
            If ``config.json``'s ``train`` is not an object or its ``warmup_steps`` not a whole
            number >= 0. A transition block of another shape is ignored, as
            :func:`load_run` ignores it.
        """
        schedule = _field(self.transition, "schedule")  # issue 13
        end = _field(schedule, "warmup_end")
        if end is not None and _whole(end):
            return int(end)
        train = self.config.get("train") if isinstance(self.config, dict) else None
        if train is None:
            return 0
        if not isinstance(train, dict):
            raise RunFolderError(f"{self.path / CONFIG_FILE}: field 'train' is {_short(train)}, "
                                 "expected a JSON object")
        raw = train.get("warmup_steps")
        if raw is None:
            return 0
        if not _whole(raw):
            raise RunFolderError(f"{self.path / CONFIG_FILE}: field 'train.warmup_steps' is "
                                 f"{_short(raw)}, expected a whole number >= 0")
        return int(raw)

    @property
    def familiarity_rise_step(self) -> float | None:
        """Change-point step of q̂(library) − q̂(novel) from transition.json (None if absent)."""
        step = _field(_field(self.transition, "familiarity_rise"), "step")
        return step if _is_number(step) else None

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"Run({str(self.path)!r}, model={self.model!r}, rows={len(self.metrics)})"


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``.

    Raises :class:`RunFolderError` naming the file if it is not UTF-8, not JSON or not an object.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise RunFolderError(f"{path}: not UTF-8 text (byte offset {err.start}); is the file "
                             "damaged?") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return obj


def read_table(path: str | os.PathLike) -> tuple[Any, list[str]]:
    """A CSV table of a run folder without a partial last line, and the warnings about it.

    Every row the writer (:class:`CsvLog`) appends ends with a newline, so a last line without
    one was cut by a kill or a full disk (a number cut mid-digits would read as a wrong value):
    it is dropped, and a warning names the file and the line.

    Returns
    -------
    (pandas.DataFrame, list of str)
        The complete rows, and the warnings (one line each).

    Raises
    ------
    RunFolderError
        If the file is binary (NUL bytes), not UTF-8, empty, has no complete header line or
        cannot be parsed as CSV.
    """
    import pandas as pd

    path = Path(path)
    data = path.read_bytes()
    if b"\x00" in data:
        raise RunFolderError(f"{path}: binary data (NUL bytes), not a CSV table")
    warnings = []
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        line = data.count(b"\n", 0, cut) + 1
        if cut == 0:
            raise RunFolderError(f"{path}: no complete header line (the file does not end with "
                                 "a newline: was its write cut short?)")
        warnings.append(f"{path}: line {line} is incomplete (no newline at the end of the file: "
                        "a write cut short by a kill or a full disk); ignored")
        data = data[:cut]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFolderError(f"{path}: not UTF-8 text (byte offset {err.start}); is the file "
                             "damaged?") from None
    try:
        return pd.read_csv(io.StringIO(text)), warnings
    except ValueError as err:  # ParserError, EmptyDataError
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunFolderError(f"{path}: cannot be read as CSV ({msg})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    """A whole number >= 0 (an int, or a float without fraction)."""
    return _is_number(value) and math.isfinite(value) and value >= 0 and value == int(value)


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` when ``obj`` is a dict, else None."""
    return obj.get(key) if isinstance(obj, dict) else None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_config(file: Path, config: dict) -> None:
    """Raise :class:`RunFolderError` naming the field where config.json has the wrong shape."""
    for key in ("data", "model_config", "train"):
        if key in config and not isinstance(config[key], dict):
            raise RunFolderError(f"{file}: field {key!r} is {_short(config[key])}, expected a "
                                 "JSON object")
    for key in ("model", "preset"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise RunFolderError(f"{file}: field {key!r} is {_short(config[key])}, expected a "
                                 "string")
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RunFolderError(f"{file}: field 'seed' is {_short(seed)}, expected an integer")
    warm = _field(config.get("train"), "warmup_steps")
    if warm is not None and not _whole(warm):
        raise RunFolderError(f"{file}: field 'train.warmup_steps' is {_short(warm)}, expected a "
                             "whole number >= 0")


def _check_meta(file: Path, meta: dict) -> None:
    """Raise :class:`RunFolderError` naming the field where meta.json has the wrong shape."""
    if meta.get("status") is not None and not isinstance(meta["status"], str):
        raise RunFolderError(f"{file}: field 'status' is {_short(meta['status'])}, expected a "
                             "string")
    seconds = meta.get("train_seconds")
    if seconds is not None and not _is_number(seconds):
        raise RunFolderError(f"{file}: field 'train_seconds' is {_short(seconds)}, expected a "
                             "number")


#: transition.json fields that are numbers (or null), at the top and in ``familiarity_rise``
_TRANSITION_NUMBERS = ("step", "low", "high", "onset", "resolution", "level_before",
                       "level_after", "lag_after_familiarity")


def _transition_problem(transition: dict) -> str | None:
    """What is of the wrong shape in transition.json (field and value), or None."""
    for block in ("schedule", "familiarity_rise"):
        value = transition.get(block)
        if value is not None and not isinstance(value, dict):
            return f"field {block!r} is {_short(value)}, expected a JSON object or null"
    rise = transition.get("familiarity_rise") or {}
    for prefix, obj in (("", transition), ("familiarity_rise.", rise)):
        for key in _TRANSITION_NUMBERS:
            value = obj.get(key)
            if value is not None and not _is_number(value):
                return f"field '{prefix}{key}' is {_short(value)}, expected a number or null"
    end = (transition.get("schedule") or {}).get("warmup_end")
    if end is not None and not _whole(end):
        return f"field 'schedule.warmup_end' is {_short(end)}, expected a whole number >= 0"
    return None


def _schema_version(path: Path, meta: dict) -> int:
    raw = meta.get("schema_version", SCHEMA_VERSION)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RunFolderError(f"{path / META_FILE}: schema_version {raw!r} is not an integer")
    return raw


def check_metric_steps(metrics, where: str | os.PathLike):
    """Raise :class:`RunFolderError` unless ``metrics.step`` is finite and strictly increasing.

    Duplicate rows come from two writers on one folder (or a copy); rows out of order from a log
    pieced together by hand. Either way the table cannot be trusted, so it is refused, naming the
    file, the step and the CSV line.
    """
    import pandas as pd

    steps = pd.to_numeric(metrics["step"], errors="coerce").to_numpy(dtype=float)
    for i, s in enumerate(steps):
        line = i + 2  # line 1 is the header
        if not math.isfinite(s):
            raise RunFolderError(f"{where}: line {line}: step {metrics['step'].iloc[i]!r} is "
                                 "not a number")
        if i and s == steps[i - 1]:
            raise RunFolderError(f"{where}: step {s:g} appears twice (lines {line - 1} and "
                                 f"{line}); did two processes write this run folder?")
        if i and s < steps[i - 1]:
            raise RunFolderError(f"{where}: line {line}: step {s:g} comes after step "
                                 f"{steps[i - 1]:g} (rows out of order)")


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder written by ``cram train``.

    A partial last line of a table (no newline at the end of the file: a write cut short by a
    kill or a full disk) is dropped with a warning in ``Run.warnings`` naming the file and line.

    Raises
    ------
    RunFolderError
        If the folder, its ``config.json`` or its ``metrics.csv`` is missing or corrupt (not
        UTF-8, not JSON, not an object, a field of the wrong shape, binary, no complete header,
        duplicate or out-of-order steps), if ``meta.json`` is corrupt or ``schema_version`` is
        not an integer, or if it was written with a newer schema. Optional tables and a
        ``transition.json`` that are missing, corrupt or of the wrong shape are reported in
        ``Run.warnings`` instead (and read as None).
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    for required in (CONFIG_FILE, METRICS_FILE):
        if not (path / required).is_file():
            raise RunFolderError(f"{path}: missing {required}; is this a cram run folder?")
    config = read_json(path / CONFIG_FILE)
    _check_config(path / CONFIG_FILE, config)
    meta = read_json(path / META_FILE) if (path / META_FILE).is_file() else {}
    schema = _schema_version(path, meta)
    if schema > SCHEMA_VERSION:
        raise RunFolderError(
            f"{path}: run folder schema {schema} is newer than this cram ({SCHEMA_VERSION})"
        )
    _check_meta(path / META_FILE, meta)
    metrics, warnings = read_table(path / METRICS_FILE)
    if "step" not in metrics.columns:
        raise RunFolderError(f"{path / METRICS_FILE}: no 'step' column")
    check_metric_steps(metrics, path / METRICS_FILE)
    optional = {}
    for key, fname in (("patterns", PATTERNS_FILE), ("retention", RETENTION_FILE),
                       ("forgetting", FORGETTING_FILE)):
        f = path / fname
        optional[key] = None
        if f.is_file():
            try:
                optional[key], more = read_table(f)
                warnings += more
            except RunFolderError as err:
                warnings.append(str(err))
    return Run(path, config, meta, metrics, optional["patterns"], optional["retention"],
               _read_transition(path / TRANSITION_FILE, warnings), warnings,
               forgetting=optional["forgetting"])


def _read_transition(file: Path, warnings: list[str]) -> dict | None:
    """transition.json, or None (absent; or corrupt or of the wrong shape: warned)."""
    if not file.is_file():
        return None
    try:
        transition = read_json(file)
    except RunFolderError as err:
        warnings.append(str(err))
        return None
    problem = _transition_problem(transition)
    if problem is not None:
        warnings.append(f"{file}: {problem}; the transition is ignored")
        return None
    return transition


def load_runs(paths: Iterable[str | os.PathLike],
              warn: Callable[[str], None] | None = None) -> list[Run]:
    """:func:`load_run` of each path; each of their warnings is passed to ``warn`` (one line)."""
    runs = [load_run(p) for p in paths]
    if warn is not None:
        for run in runs:
            for message in run.warnings:
                warn(" ".join(str(message).split("\n")))
    return runs


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Every run folder (a folder with config.json and metrics.csv) at or below ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p.parent for p in root.rglob(CONFIG_FILE) if (p.parent / METRICS_FILE).is_file()]
    return sorted(set(found))
