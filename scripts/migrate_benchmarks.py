"""One-off: turn the old appended log docs/benchmarks.md into result files under results/.

Before result files, every benchmark appended a markdown section (``## title``, a bullet list
with the command, machine and date, a table, notes) to docs/benchmarks.md; some sections were
written by hand in other shapes. This script reads that log and writes one result file per
section (:mod:`cram.core.results`), never dropping one:

- **Provenance.** The leading bullets ``command``/``commands``, ``machine``, ``date`` and ``load``
  become fields (a ``; load ...`` part of the machine line becomes ``load``). The date is the
  first ``YYYY-MM-DD HH:MM`` of the date bullet, else of the machine bullet, the title or the
  text, else the date of the commit that added the section; the text as written is kept in
  ``extra.date_text``. The code commit was never recorded: ``commit`` is null and
  ``extra.recorded_in`` names the commit that added the section to the log (``git blame``).
- **Tables.** A section of the usual shape (bullets, a table, optionally ``Mean and 95%
  t-interval over seeds:`` and a second table, then prose) becomes rows, further tables and
  notes. Any other shape (prose before the table, tables between paragraphs, other bullets)
  keeps its text exactly as written in ``notes`` with ``extra.table_in_notes`` set, and its
  first table also as rows. A section without a table that parses (every row as wide as its
  header) gets ``rows: []`` and its text in ``notes``. Cells become numbers or booleans only
  where the renderer writes them back identically (``0.9964``, ``1.205e+06``, ``True``).
- **Machine paths.** A path on the machine that ran a table (under the system's temporary,
  work or home folders) is replaced by its first folder's name in capitals (a ``gc`` output
  folder becomes ``GC``, as the later commands wrote ``OUT``); ``extra.paths_scrubbed`` counts
  the replacements. The repository names no machine.
- **Studies.** A study is one experiment, whose later tables replace the earlier ones:

  1. sections with the same title are one study, except that
  2. a ``cram bench`` command's ``--set`` and ``--task-arg`` settings that the title does not
     name are added to it (``SRCD: models × seeds (preset demo; data.key_encoding=vector)``):
     a table measured with other settings is another experiment, as the benchmarks now title
     it; presets, tasks and devices in titles likewise keep studies apart;
  3. a trailing parenthesis that holds a date moves into the result's ``variant`` (``Where the
     data are drawn: thread or worker process``, variant ``issue 16 item 3; CPU, 2026-12-01``);
  4. a few titles are grouped by hand (``RULES``): the SBC runs of the hierarchical model
     (each a revision of the same check: target acceptance, clipping, seed), the first and
     re-measured throughput comparison, the first and re-fitted γ of the consolidation curve,
     the GPU check, the hand-run and the benchmarked seed-0 tables of recall-unmarked and of
     the semantic-rank sweep.

Usage (from the repository root; refuses a results folder that already has files)::

    python scripts/migrate_benchmarks.py --doc docs/benchmarks.md --out results [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cram.core.benchlog import markdown_table
from cram.core.results import ResultFile, study_id, title_with_settings, write_result

SBC = "SBC: hierarchical γ model, coverage of the 90% interval"
THROUGHPUT = "Training throughput before and after issue 16"
GAMMA = "γ of the consolidation curve (demo preset, learned schedule, 3 seeds)"
#: (title pattern, study title or ``same as`` another section's title, variant); first match wins
RULES = [
    (re.compile(r"^SBC: hierarchical γ model, coverage of the 90% interval \((.+)\)$"), SBC,
     r"\1"),
    (re.compile(r"^Semantic-rank sweep \(preset demo, CRAM seed 0\)$"),
     "Semantic-rank sweep (preset demo)", "CRAM seed 0, one `cram bench srcd` per rank"),
    (re.compile(r"^Token task recall-unmarked: seed 0 only \((.+)\)$"),
     "same as:Token task recall-unmarked: models × seeds (preset demo)",
     r"seed 0 only, one `cram train` per model (\1)"),
    (re.compile(r"^Training throughput before and after issue 16 item 3 \((.+)\)$"), THROUGHPUT,
     r"first measurement (\1)"),
    (re.compile(r"^Training throughput before and after issue 16, re-measured \((.+)\)$"),
     THROUGHPUT, r"re-measured (\1)"),
    (re.compile(r"^γ of the consolidation curve: demo preset, learned schedule .*$"), GAMMA,
     "first fit (target acceptance 0.9)"),
    (re.compile(r"^γ of the consolidation curve, re-fitted at .*\((0\.99)\)$"), GAMMA,
     r"re-fitted at target acceptance \1"),
    (re.compile(r"^GPU check on one (\w+) \(issue 16; `scripts/gpu_check.sh`, (.+)\)$"),
     "GPU check (`scripts/gpu_check.sh`)", r"one \1, issue 16, \2"),
]
_MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|tmp|root|home|Users|mnt|scratch|opt)/"
                           r"([\w.-]+)/?")
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:,?[ T](\d{2}):(\d{2}))?")
_BULLET = re.compile(r"^- ([^:`]+?):(?: (.*))?$")
_KNOWN = ("command", "machine", "date", "load")
SUMMARY_CAPTION = re.compile(r"^[^|\n]{1,120}:$")


# ------------------------------------------------------------------------------ sections
def split_sections(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the title, title, body lines) for every ``## `` section."""
    sections, current = [], None
    for n, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            current = (n, line[3:].strip(), [])
            sections.append(current)
        elif current is not None:
            current[2].append(line)
    return sections


def blame(doc: Path) -> dict[int, tuple[str, str]]:
    """Line number → (commit, its UTC date ``YYYY-MM-DDTHH:MM:SSZ``) from ``git blame``."""
    out = subprocess.run(["git", "blame", "--line-porcelain", "--", str(doc)], check=True,
                         capture_output=True, text=True, cwd=doc.parent).stdout
    lines, commit, info = {}, None, {}
    for line in out.splitlines():
        head = line.split()
        if len(head) >= 3 and re.fullmatch(r"[0-9a-f]{40}", head[0]):
            commit, final = head[0], int(head[2])
            lines[final] = commit
        elif line.startswith("committer-time "):
            stamp = dt.datetime.fromtimestamp(int(line.split()[1]), dt.timezone.utc)
            info[commit] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {n: (c, info[c]) for n, c in lines.items()}


# ------------------------------------------------------------------------------ bullets
def metadata_block(body: list[str]) -> tuple[list[str], dict, list[str], list[str]]:
    """(lines before the block, known fields, other bullets as text, lines after the block).

    The block is the first bullet list before the first table with a command, machine or date.
    """
    first_table = next((i for i, ln in enumerate(body) if ln.startswith("|")), len(body))
    start = next((i for i in range(first_table) if (m := _BULLET.match(body[i]))
                  and m.group(1).strip().lower().startswith(_KNOWN)), None)
    if start is None:
        return [], {}, [], body
    end = start
    while end < len(body) and body[end].strip() and (body[end].startswith(("- ", "  "))):
        end += 1
    items: list[list[str]] = []
    for line in body[start:end]:
        if line.startswith("- "):
            items.append([line])
        else:
            items[-1].append(line)
    fields, others = {}, []
    for item in items:
        m = _BULLET.match(item[0])
        key = m.group(1).strip().lower() if m else ""
        value = "\n".join([m.group(2) or "" if m else item[0]] + [x[2:] for x in item[1:]])
        kind = next((k for k in _KNOWN if key.startswith(k)), None)
        if kind is None or kind in fields:
            others.append("\n".join(item))
        elif kind == "command" and key not in ("command", "commands"):
            fields[kind] = f"{value.strip()} ({key[len('command'):].strip(' ()')})"
        else:
            fields[kind] = value.strip()
    return body[:start], fields, others, body[end:]


def plain_command(value: str) -> str:
    """The command without its backticks when the value is exactly one backtick span."""
    m = re.fullmatch(r"`([^`]+)`", value.strip())
    return m.group(1) if m else value.strip()


def split_load(machine: str) -> tuple[str, str | None]:
    """Move ``load ...`` parts of a machine line (split on ``;``) into a load field."""
    parts = [p.strip() for p in machine.split(";")]
    load = [p for p in parts if re.search(r"\bload\b", p)]
    rest = [p for p in parts if p not in load]
    if not load:
        return machine, None
    text = "; ".join(load)
    return "; ".join(rest), re.sub(r"^load\s+", "", text)


# ------------------------------------------------------------------------------ tables
def blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The text as ("table" | "code" | "text", lines) blocks; blank lines separate text blocks."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")),
                     len(lines) - 1)
            out.append(("code", lines[i:j + 1]))
            i = j + 1
            continue
        kind = "table" if line.startswith("|") else "text"
        j = i
        while j < len(lines) and lines[j].strip() and lines[j].startswith("|") == (
                kind == "table") and not lines[j].startswith("```"):
            j += 1
        out.append((kind, lines[i:j]))
        i = j
    return out


def cells(line: str) -> list[str]:
    """The cells of a table line (a backslashed bar is a literal bar)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def value(text: str):
    """A cell as a number or boolean where the renderer writes it back as ``text``."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"-?\d+", text) and str(int(text)) == text:
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    ok = number == number and abs(number) != float("inf") and format(number, ".4g") == text
    return number if ok else text


def parse_table(lines: list[str]) -> tuple[list[str], list[dict]] | None:
    """(columns, rows) of a markdown table; None when a row is not as wide as the header."""
    if len(lines) < 2 or not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*\|?", lines[1]):
        return None
    columns = cells(lines[0])
    rows = []
    for line in lines[2:]:
        row = cells(line)
        if len(row) != len(columns):
            return None
        rows.append({c: value(v) for c, v in zip(columns, row)})
    if len(set(columns)) != len(columns):
        return None
    return columns, rows


def renders_back(columns: list[str], rows: list[dict], lines: list[str]) -> bool:
    """Whether the renderer writes this table back as it was (else keep its text)."""
    return markdown_table(rows, columns).rstrip("\n").splitlines()[2:] == [
        "| " + " | ".join(c.replace("|", "\\|") for c in cells(x)) + " |" for x in lines[2:]]


def tables_and_notes(rest: list[str], regular_start: bool) -> dict:
    """Columns, rows, further tables and notes of the text after the bullets."""
    parts = blocks(rest)
    tables = [(i, parse_table(b)) for i, (k, b) in enumerate(parts) if k == "table"]
    first = next((t for _, t in tables if t is not None), None) if tables else None
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(rest).strip("\n"))
    out = {"columns": [], "rows": [], "tables": [], "notes": text, "table_in_notes": False}
    if first is None:
        return out
    out["columns"], out["rows"] = first
    regular = regular_start and parts and parts[0][0] == "table" and tables[0][1] is not None
    i, extra = 1, []
    while regular and i + 1 < len(parts) and parts[i][0] == "text" and parts[i + 1][0] == "table" \
            and len(parts[i][1]) == 1 and SUMMARY_CAPTION.match(parts[i][1][0]):
        parsed = parse_table(parts[i + 1][1])
        if parsed is None:
            break
        extra.append({"caption": parts[i][1][0], "columns": parsed[0], "rows": parsed[1]})
        i += 2
    regular = regular and all(k != "table" for k, _ in parts[i:]) and renders_back(
        *first, parts[0][1]) and all(renders_back(t["columns"], t["rows"], parts[2 * n + 2][1])
                                     for n, t in enumerate(extra))
    if regular:
        out["tables"] = extra
        out["notes"] = "\n\n".join("\n".join(b) for _, b in parts[i:])
    else:
        out["table_in_notes"] = True
    return out


# ------------------------------------------------------------------------------ fields
def iso_date(*texts: str | None) -> tuple[str | None, int]:
    """The first date (with its time when given) in ``texts``, and which text held it."""
    for n, text in enumerate(texts):
        m = _DATE.search(text or "")
        if m:
            day, hh, mm = m.groups()
            return (f"{day}T{hh}:{mm}:00Z" if hh else day), n
    return None, -1


def seeds_of(rows: list[dict], command: str) -> list[int] | None:
    """Seeds from a ``seed`` column, else from ``--seeds K`` / ``--seed N`` in the command."""
    found = sorted({r["seed"] for r in rows if isinstance(r.get("seed"), int)
                    and not isinstance(r.get("seed"), bool)})
    if found:
        return found
    if m := re.search(r"--seeds (\d+)\b", command):
        return list(range(int(m.group(1))))
    if m := re.search(r"--seed (\d+)\b", command):
        return [int(m.group(1))]
    return None


def bench_settings(command: str) -> list[str]:
    """The ``--set`` and ``--task-arg`` values of one plain ``cram bench`` command."""
    if "`" in command or not command.startswith("cram bench"):
        return []
    try:
        argv = shlex.split(command)
    except ValueError:
        return []
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--set", "--task-arg")]


def study_of(title: str, command: str) -> tuple[str, str | None]:
    """(study title, variant) of a section: the rules, else the title with its settings."""
    for pattern, study, variant in RULES:
        if pattern.match(title):
            return study, pattern.sub(variant, title) if variant else None
    m = re.match(r"^(.*\S)\s*\(([^()]*\d{4}-\d{2}-\d{2}[^()]*)\)$", title)
    if m:
        return m.group(1), m.group(2)
    return title_with_settings(title, bench_settings(command)), None


def scrub(obj, count: list[int]):
    """``obj`` with machine paths replaced by their first folder in capitals (counted)."""
    if isinstance(obj, str):
        def placeholder(m: re.Match) -> str:
            count[0] += 1
            return m.group(1).upper() + ("/" if m.group(0).endswith("/") else "")
        return _MACHINE_PATH.sub(placeholder, obj)
    if isinstance(obj, list):
        return [scrub(x, count) for x in obj]
    if isinstance(obj, dict):
        return {k: scrub(v, count) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------ the migration
def migrate_section(line: int, title: str, body: list[str], recorded: tuple[str, str]) -> dict:
    """One section as the fields of a result file (study resolved later)."""
    pre, fields, others, post = metadata_block(body)
    command = plain_command(fields.get("command", ""))
    machine, load = split_load(fields.get("machine", ""))
    load = fields.get("load") or load
    before = [*(x for x in pre), *others]
    parsed = tables_and_notes([*before, "", *post] if before else post,
                              regular_start=not any(x.strip() for x in before))
    date, source = iso_date(fields.get("date"), fields.get("machine"), title, "\n".join(body))
    extra = {"migrated_from": "docs/benchmarks.md", "section_line": line,
             "recorded_in": recorded[0]}
    if date is None:
        date, extra["date_from"] = recorded[1], "the commit that added the section"
    elif source > 0:
        extra["date_from"] = ("the machine line", "the title", "the text")[source - 1]
    date_text = fields.get("date")
    if date_text and not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", date_text):
        extra["date_text"] = date_text
    if parsed["table_in_notes"]:
        extra["table_in_notes"] = True
    count = [0]
    fields = scrub({"command": command, "machine": machine, "load": load, "date": date,
                    "columns": parsed["columns"], "rows": parsed["rows"],
                    "tables": parsed["tables"], "notes": parsed["notes"]}, count)
    extra = scrub(extra, count)
    if count[0]:
        extra["paths_scrubbed"] = count[0]
    return {**fields, "seeds": seeds_of(parsed["rows"], command), "extra": extra}


def migrate(doc: Path) -> list[ResultFile]:
    """Every section of ``doc`` as a result file, its study and variant resolved."""
    text = doc.read_text(encoding="utf-8")
    who = blame(doc)
    sections = split_sections(text)
    grouped = [study_of(title, plain_command(metadata_block(body)[1].get("command", "")))
               for _, title, body in sections]
    first = {}  # a title → the study of its first section ("same as:" rules)
    for (_, title, _), study in zip(sections, grouped):
        first.setdefault(title, study[0])
    results = []
    for (line, title, body), (study_title, variant) in zip(sections, grouped):
        fields = migrate_section(line, title, body, who[line])
        if study_title.startswith("same as:"):
            study_title = first[study_title[len("same as:"):]]
        if study_title != title:
            fields["extra"]["original_title"] = title
        results.append(ResultFile(study=study_id(study_title), title=study_title,
                                  variant=variant, **fields))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--doc", default="docs/benchmarks.md", help="the old appended log")
    ap.add_argument("--out", default="results", help="results folder to write (must be empty)")
    ap.add_argument("--dry-run", action="store_true", help="print the grouping, write nothing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.dry_run and out.exists() and any(out.iterdir()):
        print(f"migrate_benchmarks: {out} already has files; migrate into an empty folder",
              file=sys.stderr)
        return 2
    results = migrate(Path(args.doc).resolve())
    per_study = Counter(r.study for r in results)
    for r in results:
        shape = ("no table" if not r.columns else
                 "text kept" if r.extra.get("table_in_notes") else "table")
        print(f"{r.extra['section_line']:5d}  {r.study:<64}  {shape:<9}  {r.variant or ''}")
        if not args.dry_run:
            write_result(r, out)
    print(f"{len(results)} sections -> {len(per_study)} studies "
          f"({sum(1 for n in per_study.values() if n > 1)} with more than one result)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
