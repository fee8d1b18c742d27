"""Record a benchmark's table as a result file, with the command, the machine, its load and date.

:func:`record_benchmark` is what every benchmark calls: it fills in the provenance (command line,
machine, load average, git commit, UTC date) and writes a :class:`~cram.core.results.ResultFile`
into the results folder the user names (``--results DIR``), else ``$CRAM_RESULTS_DIR``, else
``./results`` in the working directory; never a folder inside the installed package. The
project's ``docs/benchmarks.md`` is rendered from the repository's ``results/`` by ``cram docs
render``; nothing appends markdown any more. :func:`markdown_table` formats rows for terminals
and the renderer.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from cram.core.results import ResultFile, write_result


def machine_line() -> str:
    """One line: CPU model, cores, Python, torch and its threads, the accelerator if any.

    The thread count is the writing process's; a benchmark that times with another count says
    so in its own rows.
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
    return "; ".join(parts)


def load_line() -> str | None:
    """The load average now, ``"1.21 / 1.10 / 0.95 (1 / 5 / 15 min)"``; None where unknown."""
    if not hasattr(os, "getloadavg"):
        return None
    return "{:.2f} / {:.2f} / {:.2f} (1 / 5 / 15 min)".format(*os.getloadavg())


def machine_description() -> str:
    """:func:`machine_line` and, where known, ``load`` :func:`load_line`, in one line."""
    load = load_line()
    return machine_line() + (f"; load {load}" if load else "")


def git_commit() -> tuple[str | None, bool]:
    """(``git rev-parse HEAD`` of the checkout this code runs from, whether it has changes).

    ``(None, False)`` outside a git checkout (an installed wheel) or without git.
    """
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None, False
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def utc_now() -> str:
    """The current UTC time as a result file's date, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def markdown_table(rows: list[dict], columns: list[str] | None = None,
                   floatfmt: str = ".4g") -> str:
    """A GitHub markdown table from row dicts (``|`` in a cell escaped, newlines as spaces)."""
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def record_benchmark(study: str, title: str, rows: list[dict], columns: list[str] | None = None,
                     notes: str = "", argv: list[str] | None = None,
                     results: str | os.PathLike | None = None, *, seeds=None,
                     variant: str | None = None, tables: list[dict] | None = None,
                     extra: dict | None = None) -> Path:
    """Write one result file (rows, command, machine, load, commit, seeds, date); its path.

    Parameters
    ----------
    study : str
        The study id (the folder under ``results``), e.g. ``study_id(title)``.
    title : str
        The table's title.
    rows, columns : list of dict, list of str
        The rows (every key is kept) and the columns to show (default: the first row's keys).
    notes : str
        Markdown shown under the table.
    argv : list of str
        The command line (default ``cram`` and this process's arguments).
    results : path or None
        The results folder (default :func:`cram.core.results.default_results_dir`).
    seeds, variant, tables, extra
        As in :class:`cram.core.results.ResultFile`.
    """
    argv = argv if argv is not None else ["cram", *sys.argv[1:]]
    columns = list(columns) if columns else (list(rows[0]) if rows else [])
    commit, dirty = git_commit()
    extra = dict(extra or {})
    if dirty:
        extra.setdefault("uncommitted_changes", True)
    result = ResultFile(study=study, title=title, command=shlex.join(argv),
                        machine=machine_line(), load=load_line(), commit=commit, date=utc_now(),
                        seeds=None if seeds is None else [int(s) for s in seeds],
                        columns=columns, rows=list(rows), variant=variant,
                        tables=list(tables or []), notes=notes.strip(), extra=extra)
    return write_result(result, results)
