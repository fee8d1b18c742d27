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
                       episodic_share, q, qhat, n_queries
      retention.csv    retrieval accuracy against store→query lag at several training stages,
                       with episodic memory on and off
      transition.json  change-point estimate of the phase transition with a bootstrap interval
      checkpoints/last.pt, checkpoints/prev.pt   checkpoints that rebuild their model

Writes are atomic (temp file + ``os.replace``); the metrics log is append-only with fsync and is
truncated back to the checkpoint's step on ``--resume``, so a killed run neither loses nor
duplicates rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
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
    warnings: list[str] = field(default_factory=list)

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
        else the configured ``train.warmup_steps``.
        """
        end = ((self.transition or {}).get("schedule") or {}).get("warmup_end")  # issue 13
        if end is not None:
            return int(end)
        return int(self.config.get("train", {}).get("warmup_steps", 0) or 0)

    @property
    def familiarity_rise_step(self) -> float | None:
        """Change-point step of q̂(library) − q̂(novel) from transition.json (None if absent)."""
        rise = (self.transition or {}).get("familiarity_rise")
        return rise.get("step") if isinstance(rise, dict) else None

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


def _read_csv(path: Path):
    import pandas as pd

    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
        if b"\x00" in head:
            raise RunFolderError(f"{path}: binary data (NUL bytes), not a CSV table")
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:  # ParserError, EmptyDataError, bad bytes
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunFolderError(f"{path}: cannot be read as CSV ({msg})") from None


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

    Raises
    ------
    RunFolderError
        If the folder, its ``config.json`` or its ``metrics.csv`` is missing or corrupt (not
        UTF-8, not JSON, binary, duplicate or out-of-order steps), if ``schema_version`` is not an
        integer, or if it was written with a newer schema. Optional tables that are missing or
        corrupt are reported in ``Run.warnings`` instead.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    for required in (CONFIG_FILE, METRICS_FILE):
        if not (path / required).is_file():
            raise RunFolderError(f"{path}: missing {required}; is this a cram run folder?")
    config = read_json(path / CONFIG_FILE)
    meta = read_json(path / META_FILE) if (path / META_FILE).is_file() else {}
    schema = _schema_version(path, meta)
    if schema > SCHEMA_VERSION:
        raise RunFolderError(
            f"{path}: run folder schema {schema} is newer than this cram ({SCHEMA_VERSION})"
        )
    metrics = _read_csv(path / METRICS_FILE)
    if "step" not in metrics.columns:
        raise RunFolderError(f"{path / METRICS_FILE}: no 'step' column")
    check_metric_steps(metrics, path / METRICS_FILE)
    warnings: list[str] = []
    optional = {}
    for key, fname in (("patterns", PATTERNS_FILE), ("retention", RETENTION_FILE)):
        f = path / fname
        optional[key] = None
        if f.is_file():
            try:
                optional[key] = _read_csv(f)
            except RunFolderError as err:
                warnings.append(str(err))
    transition = None
    if (path / TRANSITION_FILE).is_file():
        try:
            transition = read_json(path / TRANSITION_FILE)
        except RunFolderError as err:
            warnings.append(str(err))
    return Run(path, config, meta, metrics, optional["patterns"], optional["retention"], transition,
               warnings)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Every run folder (a folder with config.json and metrics.csv) at or below ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p.parent for p in root.rglob(CONFIG_FILE) if (p.parent / METRICS_FILE).is_file()]
    return sorted(set(found))
