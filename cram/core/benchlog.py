"""Append benchmark tables to ``docs/benchmarks.md`` with the command, the machine and the date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

from cram.core.jsonio import atomic_write_text

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def machine_description() -> str:
    """One line: CPU model, cores, threads in use, and the accelerator if any."""
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
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4g") -> str:
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


def append_benchmark(title: str, table_md: str, notes: str = "", argv: list[str] | None = None,
                     path: str | os.PathLike | None = None) -> Path:
    """Append a section (title, command, machine, date, table, notes) to docs/benchmarks.md."""
    path = Path(path or os.environ.get("CRAM_BENCHMARKS_MD", DEFAULT_PATH))
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
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\nMeasured tables, newest last. Each section names its command, machine and date.\n"
    atomic_write_text(path, old.rstrip("\n") + "\n" + section)
    return path
