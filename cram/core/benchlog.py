"""Append benchmark tables to a markdown file with the command, the machine and the date.

The file is the one the user names (``cram bench ... --doc PATH``); without one it is
``$CRAM_BENCHMARKS_MD``, else ``benchmarks.md`` in the working directory, never a file inside the
installed package. The project's own table is regenerated with ``--doc docs/benchmarks.md``.
Appends are atomic and serialised: an exclusive ``flock`` on the file's folder around the
read-append-rename, so concurrent benches never lose each other's sections.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

from cram.core.jsonio import atomic_write_text

#: the file appended to when neither ``path`` nor ``$CRAM_BENCHMARKS_MD`` is given (in the cwd)
DEFAULT_NAME = "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured tables, newest last. Each section names its command, machine "
          "and date.\n")


def default_doc_path() -> Path:
    """``$CRAM_BENCHMARKS_MD`` if set, else ``./benchmarks.md`` (relative to the working dir)."""
    return Path(os.environ.get("CRAM_BENCHMARKS_MD") or DEFAULT_NAME)


def machine_description() -> str:
    """One line: CPU model, cores, torch threads, the accelerator if any, and the load average.

    The thread count is the writing process's; a benchmark that times with another count says
    so in its own rows. The load average (1, 5, 15 min) is read when the line is written.
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} cores", f"Python {platform.python_version()}"]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) in the "
                     "writing process")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    if hasattr(os, "getloadavg"):
        parts.append("load {:.2f} / {:.2f} / {:.2f} (1 / 5 / 15 min)".format(*os.getloadavg()))
    return "; ".join(parts)


def markdown_table(rows: list[dict], columns: list[str] | None = None,
                   floatfmt: str = ".4g") -> str:
    """A GitHub markdown table from row dicts."""
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Hold an exclusive ``flock`` on ``folder`` (no lock file is left behind; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no serialisation, appends stay atomic
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def append_benchmark(title: str, table_md: str, notes: str = "", argv: list[str] | None = None,
                     path: str | os.PathLike | None = None) -> Path:
    """Append a section (title, command, machine, date, table, notes) to a markdown file.

    ``path`` defaults to :func:`default_doc_path`. The file is created with a header if missing;
    the read-append-rename runs under an exclusive lock on its folder.
    """
    path = Path(path) if path is not None else default_doc_path()
    argv = argv if argv is not None else ["cram", *sys.argv[1:]]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n"
        f"- command: `{shlex.join(argv)}`\n"
        f"- machine: {machine_description()}\n"
        f"- date: {now}\n\n"
        f"{table_md}\n"
        + (f"{notes.strip()}\n" if notes.strip() else "")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path.parent):
        old = path.read_text(encoding="utf-8") if path.exists() else HEADER
        atomic_write_text(path, old.rstrip("\n") + "\n" + section)
    return path
