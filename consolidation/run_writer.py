"""Everything ``cram train`` writes into a run folder, and the lock that makes it one writer's.

- :class:`RunLock`: an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` held for the life of a
  training (or resume) process. The file records the holder's PID for the error message; the
  kernel drops the lock when the process dies, so a lock left by a killed run is simply taken.
- :func:`prepare_folder`: the checks on the folder before anything is written in it (fresh,
  restart or resume).
- :class:`RunWriter`: ``config.json``, ``meta.json`` (status), the three CSV logs,
  ``transition.json`` at the end, and the progress bar. Only rank 0 has one.

The file layout is in docs/run_folder.md; the file names come from ``cram.core.runs``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from cram.core.columns import FORGETTING_COLUMNS, PATTERN_COLUMNS, RETENTION_COLUMNS
from cram.core.errors import RunFolderError
from cram.core.identity import refuse_newer_schema
from cram.core.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FORGETTING_FILE,
    META_FILE,
    METRICS_FILE,
    PATTERNS_FILE,
    RETENTION_FILE,
    SCHEMA_VERSION,
    TRANSITION_FILE,
    CsvLog,
    atomic_write_json,
)

LOCK_FILE = ".lock"
RUN_FILES = (CONFIG_FILE, META_FILE, METRICS_FILE, PATTERNS_FILE, RETENTION_FILE, TRANSITION_FILE,
             FORGETTING_FILE)


class RunLocked(RunFolderError):
    """Another live process is writing this run folder."""


class RunLock:
    """Exclusive lock on a run folder (context manager); the folder must exist."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        """Take the lock or raise :class:`RunLocked` naming the holder's PID."""
        while True:
            fd = self._open_locked()
            try:  # the holder we waited on may have removed the file: lock the file on disk
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _open_locked(self) -> int:
        try:  # never through a symbolic link: a planted .lock must not truncate its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                         0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise RunFolderError(f"{self.path}: is a symbolic link; refusing to write "
                                     "through it (remove it)") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunFolderError(f"{self.path}: is not a regular file; refusing to use it as "
                                 "the run's lock (remove it)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(f"{self.path.parent}: another cram process (pid {holder}) is "
                                "writing this run folder; wait for it or use another --out"
                                ) from None
            raise
        return fd

    def __exit__(self, *exc) -> None:
        """Remove the lock file and release the lock, so a finished folder holds no lock file."""
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def folder_contents(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than the lock file (empty if the folder does not exist)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds last.pt or prev.pt."""
    ckpts = Path(run_dir) / CHECKPOINT_DIR
    return any((ckpts / name).exists() for name in ("last.pt", "prev.pt"))


def prepare_folder(run_dir: Path, mode: str) -> None:
    """Check (and for ``restart`` empty) a locked run folder before training writes into it.

    ``mode`` is ``"fresh"`` (the folder must be empty), ``"restart"`` (a folder without a
    checkpoint: its files are removed and the run starts over) or ``"resume"`` (config.json must
    exist).
    """
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder")
    refuse_links(Path(run_dir))
    if mode == "fresh" and folder_contents(run_dir):
        raise RunFolderError(f"{run_dir}: already exists; refusing to overwrite "
                             "(use --resume to continue it, or another --out)")
    if mode == "restart":
        if has_checkpoint(run_dir):
            raise RunFolderError(f"{run_dir}: has checkpoints; --restart only starts over a run "
                                 "that never saved one (use --resume, or delete the folder)")
        for name in RUN_FILES:
            (Path(run_dir) / name).unlink(missing_ok=True)
        shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)
    if mode == "resume" and not (Path(run_dir) / CONFIG_FILE).is_file():
        raise RunFolderError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); "
                             "use --restart to start it over")
    if mode == "resume":
        refuse_newer_schema(run_dir)


def refuse_links(run_dir: Path) -> None:
    """Refuse a run folder whose files are symbolic links (a write would land on their target)."""
    for name in (*RUN_FILES, CHECKPOINT_DIR, LOCK_FILE):
        path = Path(run_dir) / name
        if path.is_symlink():
            raise RunFolderError(f"{path}: is a symbolic link; a run folder's files must be its "
                                 "own (remove the link)")


class RunWriter:
    """The rank-0 writer of one run folder (created by :meth:`open` once the folder is locked)."""

    def __init__(self, run_dir: Path, record: dict, metric_columns: list[str], meta: dict):
        self.dir = Path(run_dir)
        self.record = record
        self.meta = meta
        self.metrics = CsvLog(self.dir / METRICS_FILE, metric_columns)
        self.patterns = CsvLog(self.dir / PATTERNS_FILE, list(PATTERN_COLUMNS))
        self.retention = CsvLog(self.dir / RETENTION_FILE, list(RETENTION_COLUMNS))
        self.forgetting = (CsvLog(self.dir / FORGETTING_FILE, list(FORGETTING_COLUMNS))
                           if "study" in record else None)  # the study protocol is on
        self.bar = None

    @classmethod
    def open(cls, run_dir: Path, record: dict, metric_columns: list[str], *, after_step: int | None,
             write_config: bool, meta: dict) -> RunWriter:
        """Write config.json (if asked) and meta.json with status ``running``; open the logs.

        ``after_step``: on resume, rows past the checkpoint's step are dropped from every log
        (-1 drops all rows: a run restarted from step 0).
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if write_config:
            atomic_write_json(run_dir / CONFIG_FILE, record)
        meta = {"schema_version": SCHEMA_VERSION, **meta, "status": "running",
                "started": _now()}
        atomic_write_json(run_dir / META_FILE, meta)
        writer = cls(run_dir, record, metric_columns, meta)
        if after_step is not None:
            for log in (writer.metrics, writer.patterns, writer.retention, writer.forgetting):
                if log is not None:
                    log.truncate_after(after_step)
        return writer

    def start_progress(self, total: int, initial: int, desc: str) -> None:
        """Show a tqdm bar on stderr (at most one line per 30 s when stderr is not a terminal)."""
        from tqdm.auto import tqdm

        terminal = sys.stderr.isatty()  # a redirected log gets a line every 30 s, not a flood
        self.bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.1 if terminal else 30.0)

    def log(self, row: dict, pattern_rows: list[dict], retention_rows: list[dict],
            forgetting_rows: list[dict] = ()) -> None:
        """Append one metrics row (and that step's pattern, retention and forgetting rows)."""
        self.metrics.append({k: v for k, v in row.items() if k in self.metrics.columns})
        if forgetting_rows and self.forgetting is not None:
            self.forgetting.append(list(forgetting_rows))
        if pattern_rows:
            self.patterns.append(pattern_rows)
        if retention_rows:
            self.retention.append(retention_rows)
        if self.bar is not None:
            self.bar.set_postfix(attn=f"{row['attention_fraction']:.3f}",
                                 lib=f"{row['attention_library']:.2f}",
                                 acc=f"{row['retrieval_acc']:.2f}",
                                 refresh=sys.stderr.isatty())

    def advance(self) -> None:
        """Count one training step on the bar."""
        if self.bar is not None:
            self.bar.update(1)

    def close_progress(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def fail(self, err: BaseException, train_seconds: float) -> None:
        """Record status ``failed`` (``interrupted`` for Ctrl-C / SIGINT); never raises.

        Never raises: the disk may be the thing that failed. Either status resumes.
        """
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        self.meta.update(status=status, error=f"{type(err).__name__}: {err}",
                         train_seconds=train_seconds)
        try:
            atomic_write_json(self.dir / META_FILE, self.meta)
        except OSError:  # a full disk has no room for a temp file: rewrite it in place
            _write_in_place(self.dir / META_FILE, self.meta)

    def finish(self, transition: dict, train_seconds: float) -> None:
        """Write transition.json and status ``finished``."""
        atomic_write_json(self.dir / TRANSITION_FILE, transition)
        self.meta.update(status="finished", train_seconds=train_seconds, finished=_now())
        self.meta.pop("error", None)
        atomic_write_json(self.dir / META_FILE, self.meta)


def _write_in_place(path: Path, meta: dict) -> None:
    """Overwrite ``path`` with ``meta`` in its own blocks (no temp file); never raises.

    The last resort for the status on a full disk: meta.json is small, so the rewritten text
    usually fits in the blocks the file already holds.
    """
    import json

    from cram.core.jsonio import json_safe

    text = (json.dumps(json_safe(meta), indent=2) + "\n").encode()
    try:
        with open(path, "r+b") as fh:
            fh.write(text)
            fh.truncate(len(text))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        pass


def run_meta(argv: list[str] | None, device, world_size: int, train_seconds: float,
             parameters: int) -> dict:
    """Collect the provenance fields of meta.json (the writer adds status and timestamps)."""
    from cram import __version__

    return {"command": argv or sys.argv, "cram_version": __version__,
            "git_commit": _git_commit(), "libraries": _library_versions(), "device": str(device),
            "world_size": world_size, "train_seconds": train_seconds, "parameters": parameters}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _library_versions() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "numpy", "pandas", "scipy", "triton"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions
