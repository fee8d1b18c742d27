"""The repository stands alone: no web link, no link out of the tree, no machine path.

Scanned: README.md, docs/*.md, notebooks/*.ipynb and every text file of the package folders.
Each of them fails on

- a URL (``http://`` or ``https://``): published work is cited as plain text (authors, year,
  title, venue or arXiv id), never by address;
- a relative link that leaves the repository (``../`` above the root) or, in markdown, a link to
  a file that does not exist;
- a path of a development machine (``/work/``, ``/tmp/``, ``/root/``, ``/home/``, ``/Users/``,
  ``/mnt/``, ``/scratch/``, ``/opt/``, ``/usr/`` other than ``/usr/bin/env``, ``file://``,
  ``../shared``, a Windows drive).

``ALLOWED`` lists the few things that must stay, each with its reason; ``EXEMPT`` the files that
are regenerated from data and are checked once they are. ``tests/`` and ``.ci/`` are out of scope.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package folders whose text files are scanned
PACKAGE_DIRS = ("cram", "models", "kernels", "consolidation", "tasks", "fitting", "psych_data",
                "apps", "redundancy", "scripts")

#: suffixes read as text (anything else, e.g. images and checkpoints, is skipped)
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".jsonl", ".csv", ".tsv", ".cpp", ".c", ".h",
                 ".cu", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".ipynb", ".xml"}

#: pages not checked: none (docs/benchmarks.md and docs/claims.md are rendered by
#: `cram docs render` from results/ and claims/registry.toml, and checked like every page)
EXEMPT: set[str] = set()


@dataclass(frozen=True)
class Allowed:
    """One thing that must stay: a regular expression, the files it may appear in, and why."""

    pattern: str
    files: tuple[str, ...]
    reason: str


ALLOWED = (
    Allowed(r"http://127\.0\.0\.1:8501\S*", ("README.md", "docs/app.md"),
            "the local address `cram app` serves on (this machine, not the web)"),
    Allowed(r"http://\{args\.address\}:\{args\.port\}", ("cram/commands/app.py",),
            "the log line that prints the app's local address"),
    Allowed(r"/usr/bin/chromium", ("docs/app.md",),
            "the browser the app's end-to-end test drives, where CI installs it"),
)

URL = re.compile(r"https?://[^\s)\]>\"'`]*")
MACHINE_PATH = re.compile(
    r"(?<![\w.~/-])(?:/(?:work|tmp|root|home|Users|mnt|scratch|opt)/|/usr/(?!bin/env\b))"
    r"[^\s)\]>\"'`]*"
    r"|file://[^\s)\]>\"'`]*"
    r"|(?:\.\./)+shared\b[^\s)\]>\"'`]*"
    r"|\b[A-Za-z]:\\\\?[A-Za-z]")
PARENT_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.{}/-]*")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"(?:href|src)\s*=\s*[\"']([^\"']+)[\"']")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


#: text files of the measured records under docs/ (logs, tables, JSON, JUnit XML)
RECORD_SUFFIXES = {".md", ".txt", ".log", ".json", ".jsonl", ".csv", ".tsv", ".xml"}


def scanned_files(root: Path = ROOT) -> list[Path]:
    """README.md, every text file under docs/, notebooks/*.ipynb and the package's text files.

    docs/ includes the measured records below it (e.g. docs/gpu/), whose logs must not name the
    machine they ran on either.
    """
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")),
             *sorted(p for p in (root / "docs").rglob("*")
                     if p.parent != root / "docs" and p.suffix in RECORD_SUFFIXES),
             *sorted((root / "notebooks").glob("*.ipynb"))]
    for folder in PACKAGE_DIRS:
        for path in sorted((root / folder).rglob("*")):
            parts = path.relative_to(root).parts
            if (path.is_file() and path.suffix in TEXT_SUFFIXES
                    and not any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info")
                                for p in parts)):
                files.append(path)
    return [f for f in files if f.is_file()]


def _notebook_text(path: Path) -> tuple[str, str]:
    """A notebook's whole text (sources and outputs) and its markdown cells' text."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    everything, markdown = [], []
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", []))
        everything.append(source)
        if cell.get("cell_type") == "markdown":
            markdown.append(source)
        for out in cell.get("outputs", []):
            everything.append("".join(out.get("text", [])))
            everything += ["".join(v) if isinstance(v, list) else str(v)
                           for v in (out.get("data") or {}).values()]
    return "\n".join(everything), "\n".join(markdown)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _allowed(rel: str, hit: str) -> bool:
    return any(rel in a.files and re.fullmatch(a.pattern, hit) for a in ALLOWED)


def _links(markdown: str) -> list[tuple[int, str]]:
    """Link targets of markdown text, outside code blocks and code spans, with their offsets."""
    prose = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), markdown)
    prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)
    return [(m.start(1), m.group(1)) for rx in (MD_LINK, HTML_LINK) for m in rx.finditer(prose)]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every URL, machine path and escaping or broken link in ``path``, as ``file:line: what``."""
    rel = path.relative_to(root).as_posix()
    if path.suffix == ".ipynb":
        text, markdown = _notebook_text(path)
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        markdown = text if path.suffix == ".md" else ""
    found = []
    for rx, what in ((URL, "URL"), (MACHINE_PATH, "machine path")):
        for m in rx.finditer(text):
            if not _allowed(rel, m.group(0)):
                found.append(f"{rel}:{_line(text, m.start())}: {what} {m.group(0)!r}")
    for m in PARENT_PATH.finditer(text):
        if not _inside(path.parent / m.group(0), root):
            found.append(f"{rel}:{_line(text, m.start())}: leaves the repository "
                         f"{m.group(0)!r}")
    for pos, target in _links(markdown):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a scheme is the URL check's; an anchor stays in the page
        local = path.parent / target.split("#")[0].split("?")[0]
        if not _inside(local, root) or not local.exists():
            found.append(f"{rel}:{_line(markdown, pos)}: link to a missing or outside file "
                         f"{target!r}")
    return found


def _scope() -> list[Path]:
    return [f for f in scanned_files() if f.relative_to(ROOT).as_posix() not in EXEMPT]


def test_docs_readme_notebooks_and_package_stand_alone():
    found = [p for f in _scope() for p in problems(f)]
    assert not found, "\n".join(found)


def test_the_scan_covers_docs_notebooks_and_the_package():
    names = {f.relative_to(ROOT).as_posix() for f in _scope()}
    assert {"README.md", "docs/cram.md", "docs/method.md", "cram/cli.py",
            "models/cram.py"} <= names
    assert any(n.startswith("notebooks/") for n in names)


def test_every_allowance_is_still_needed():
    for allowed in ALLOWED:
        texts = [(ROOT / f).read_text(encoding="utf-8") for f in allowed.files
                 if (ROOT / f).is_file()]
        assert any(re.search(allowed.pattern, t) for t in texts), allowed


def test_no_page_is_exempt():
    assert EXEMPT == set()


@pytest.mark.parametrize(("text", "expected"), [
    ("see https://example.org/paper", "URL"),
    ("run in /work/main/runs", "machine path"),
    ("logs in `/tmp/gc/runs`", "machine path"),
    ("read `../shared/reference/X.md`", "machine path"),
    ("a [link](../../outside.md)", "leaves the repository"),
    ("a [link](missing.md)", "missing or outside file"),
    ("open file:///home/me/x", "machine path"),
])
def test_the_checker_finds_each_kind(tmp_path, text, expected):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(text + "\n", encoding="utf-8")
    assert any(expected in p for p in problems(page, tmp_path)), problems(page, tmp_path)


@pytest.mark.parametrize("text", [
    "a [link](page.md#section) to itself and [the code](../README.md)",
    "a shell line `#!/usr/bin/env bash` and a path runs/tmp/x",
    "code: `FORMS[name](t, **params)`",
    "Shihab, Akter & Sharma (2026), arXiv:2602.12204",
])
def test_the_checker_accepts_what_is_fine(tmp_path, text):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("x\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(text + "\n", encoding="utf-8")
    assert problems(page, tmp_path) == []
