"""Render ``docs/benchmarks.md`` from the result files in ``results/`` (``cram docs render``).

The page has a short intro, an index (one line per study: its title, linked to its section, the
date of its newest result and how many results it has), then one section per study with only
its newest result: the provenance (command, machine, load, commit, date, seeds), the table(s),
the notes, and a line ``Earlier results:`` linking the study's older result files. Studies are
ordered by title; the output depends on the files alone (no time of rendering), so a rendered
page can be checked against the committed one (``cram docs render --check``).

Torch-free, like the rest of :mod:`cram.core`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cram.core.benchlog import markdown_table
from cram.core.jsonio import atomic_write_text
from cram.core.results import ResultFile, load_results

INTRO = """\
# Benchmarks

Every benchmark and study of this repository writes its table as a result file: one JSON file
per run under `results/<study>/` with the rows, the command, the machine and its load, the git
commit, the seeds, the date and notes (schema in `cram/core/results.py`). A *study* is one
experiment; re-running it adds a file, and this page shows only each study's newest result,
with links to the earlier files under it.

This page is generated: do not edit it by hand. Run a benchmark with `--results results` from
the repository root (the default folder is `$CRAM_RESULTS_DIR`, else `./results` in the working
folder; `--json` alone writes no file), then `cram docs render` (or `make docs`) to rewrite this
page; `cram docs render --check` (run by the tests) fails when the page and `results/` disagree.
Tables recorded before result files existed were migrated from the old appended log by
`scripts/migrate_benchmarks.py`: their code commit was never recorded (each names the commit
that added it to the log), paths of the machine that ran them are replaced by placeholders
(`OUT`, `GC`), and where their prose and tables interleaved, the text is kept as it was written
(their first table is also in the file's rows).
"""


def _when(result: ResultFile) -> str:
    """``2026-12-01 05:55 UTC`` from the file's date (or its date as written, when migrated)."""
    text = result.extra.get("date_text") if isinstance(result.extra, dict) else None
    if isinstance(text, str) and text.strip():
        return text.strip()
    return _short_date(result.date)


def _short_date(date: str) -> str:
    if "T" not in date:
        return date
    day, time = date.rstrip("Z").split("T")
    return f"{day} {time[:5]} UTC"


def heading_anchor(text: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading (lowercase, punctuation dropped, spaces as hyphens).

    ``seen`` counts anchors already on the page; a repeated one gets ``-1``, ``-2``, ...
    """
    base = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


def _link(result: ResultFile, doc_dir: Path) -> str:
    """Relative link from the page's folder to the result file, with ``/`` separators."""
    rel = os.path.relpath(Path(result.path).resolve(), doc_dir.resolve())
    return rel.replace(os.sep, "/")


def _label(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]")


def _command(result: ResultFile) -> str:
    command = result.command.strip()
    if not command:
        return "not recorded"
    if "`" in command:  # migrated text that quotes its own commands
        return command.replace("\n", "\n  ")
    return f"`{command}`"


def _commit(result: ResultFile) -> str:
    extra = result.extra if isinstance(result.extra, dict) else {}
    if result.commit:
        dirty = " (with uncommitted changes)" if extra.get("uncommitted_changes") else ""
        return f"{result.commit[:10]}{dirty}"
    if extra.get("recorded_in"):
        return (f"not recorded; added to docs/benchmarks.md in {extra['recorded_in'][:10]}")
    return "not recorded"


def _provenance(result: ResultFile, n_results: int, doc_dir: Path) -> list[str]:
    def field(text) -> str:
        return str(text).strip().replace("\n", "\n  ") if text else "not recorded"

    seeds = ", ".join(str(s) for s in result.seeds) if result.seeds else "not recorded"
    variant = f"; variant: {result.variant}" if result.variant else ""
    return [
        f"- study: `{result.study}` ({n_results} result{'s' if n_results != 1 else ''}"
        f"{variant})",
        f"- command: {_command(result)}",
        f"- machine: {field(result.machine)}",
        f"- load: {field(result.load)}",
        f"- commit: {_commit(result)}",
        f"- date: {field(_when(result))}",
        f"- seeds: {seeds}",
        f"- result file: [{_label(Path(result.path).name)}]({_link(result, doc_dir)})",
    ]


def _tables(result: ResultFile) -> list[str]:
    """The table and the further tables (skipped when the notes already hold them)."""
    if result.extra.get("table_in_notes") or not result.columns:
        return []
    parts = [markdown_table(result.rows, result.columns).rstrip("\n")]
    for table in result.tables:
        if table.get("caption"):
            parts.append(table["caption"].strip())
        parts.append(markdown_table(table["rows"], table["columns"]).rstrip("\n"))
    return parts


def render_section(results: list[ResultFile], anchor_title: str, doc_dir: Path) -> str:
    """One study's section: its newest result in full, links to the earlier ones."""
    newest = results[-1]
    parts = [f"## {anchor_title}", "\n".join(_provenance(newest, len(results), doc_dir))]
    parts += _tables(newest)
    if newest.notes.strip():
        parts.append(newest.notes.strip())
    earlier = [f"[{_label(_short_date(r.date) + (f' ({r.variant})' if r.variant else ''))}]"
               f"({_link(r, doc_dir)})" for r in reversed(results[:-1])]
    parts.append("Earlier results: " + ("; ".join(earlier) if earlier else "none") + ".")
    return "\n\n".join(parts) + "\n"


def render_benchmarks(studies: dict[str, list[ResultFile]], doc_path: str | os.PathLike) -> str:
    """The whole page for ``studies`` (as :func:`cram.core.results.load_results` returns them).

    Links are relative to ``doc_path``'s folder. Studies are ordered by the title of their
    newest result (then by id).
    """
    doc_dir = Path(doc_path).parent
    order = sorted(studies, key=lambda s: (studies[s][-1].title.casefold(), s))
    seen: dict[str, int] = {}
    heading_anchor("Benchmarks", seen)
    heading_anchor("Index", seen)
    index, sections = [], []
    for sid in order:
        results = studies[sid]
        title = results[-1].title.strip()
        anchor = heading_anchor(title, seen)
        count = f"{len(results)} result{'s' if len(results) != 1 else ''}"
        index.append(f"- [{_label(title)}](#{anchor}): {_short_date(results[-1].date)} "
                     f"({count})")
        sections.append(render_section(results, title, doc_dir))
    head = INTRO + "\n## Index\n\n" + ("\n".join(index) if index else "_(no results yet)_")
    return head + "\n\n" + "\n".join(sections) if sections else head + "\n"


def render_benchmarks_file(results_root: str | os.PathLike, out_path: str | os.PathLike,
                           check: bool = False) -> bool:
    """Render ``results_root`` into ``out_path``; True when the file differs from the rendering.

    With ``check`` nothing is written. Without it the file is rewritten (atomically) only when
    it differs.
    """
    out_path = Path(out_path)
    text = render_benchmarks(load_results(results_root), out_path)
    try:
        current = out_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    differs = current != text
    if differs and not check:
        atomic_write_text(out_path, text)
    return differs
