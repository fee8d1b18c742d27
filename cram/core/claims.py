"""The claims registry: what the paper claims, what we measured, and docs/claims.md from it.

``claims/registry.toml`` holds one ``[[claim]]`` table per claim of the paper (and a ``[doc]``
table with the page's title and introduction). :func:`load_claims` reads and validates it,
:func:`claims_frame` turns it into a table for the explorer and the notebooks, and
:func:`render_claims` writes ``docs/claims.md`` from it: a short row per claim, one table per
section, and a section of detail per claim below.

Every claim carries the same fields (:data:`FIELDS`). The short ones (:data:`SHORT_FIELDS`) are
table cells and hold at most :data:`MAX_CELL` characters; ``command`` and ``detail`` are free
markdown. Validation errors are one line naming the file, the claim and the field.

Torch-free; pandas is imported only by :func:`claims_frame`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cram.core.errors import DataError
from cram.core.jsonio import atomic_write_text

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the tomli backport, if installed
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

#: the four statuses a claim can have, in the order the summary lists them
STATUSES = ("reproduced", "refuted", "qualified", "not yet tested")

#: what each status means, as the rendered page and the explorer say it
STATUS_MEANING = {
    "reproduced": "measured here and in agreement with the paper, at the scale stated",
    "refuted": "measured here and in disagreement with the paper",
    "qualified": "true only in a narrower sense or setting, which the summary states",
    "not yet tested": "not measured in the paper's setting (yet)",
}

#: the longest a table cell may be, in characters
MAX_CELL = 400

#: fields every claim must have (``result`` and ``stale`` are optional and default to "")
REQUIRED = ("id", "section", "claim", "paper", "status", "ours", "interval", "seeds", "units",
            "command", "summary", "detail")
OPTIONAL = ("result", "stale")
FIELDS = REQUIRED + OPTIONAL
#: fields that must not be empty
NON_EMPTY = ("id", "section", "claim", "paper", "status", "ours", "seeds", "command", "summary")
#: fields shown as table cells (each at most MAX_CELL characters; the rendered ``ours`` cell too)
SHORT_FIELDS = ("section", "claim", "paper", "status", "ours", "interval", "seeds", "units",
                "result", "summary", "stale")

_ID = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")

DEFAULT_TITLE = "Claims of the paper"
GENERATED_NOTE = ("<!-- Generated from claims/registry.toml by `cram docs render`; edit the "
                  "registry, not this file. -->")


class ClaimsError(DataError):
    """A claims registry that cannot be read or breaks a rule (one line: file, claim, field)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and where we stand on it (fields as in ``claims/registry.toml``).

    Parameters
    ----------
    id : str
        Slug (lower case, digits, ``-`` and ``.``), unique in the registry; the anchor of the
        claim's detail section.
    section : str
        The section of the page the claim belongs to.
    claim : str
        The claim, in one short sentence.
    paper : str
        The paper's value.
    status : str
        One of :data:`STATUSES`.
    ours : str
        Our current value, in one sentence.
    interval : str
        The interval of our value and its kind ("" or "none" when there is none).
    seeds : str
        The seeds (and repetitions) behind our value.
    units : str
        What the numbers count.
    command : str
        The command(s) that reproduce the current value, one per line (``#`` lines comment).
    summary : str
        The current verdict, in one or two sentences.
    detail : str
        Markdown: the full current evidence, the mechanism, and a history of superseded values.
    result : str
        Path of a result file under ``results/`` ("" when there is none).
    stale : str
        What change made the current value stale and what to re-run ("" when it is current).
    """

    id: str
    section: str
    claim: str
    paper: str
    status: str
    ours: str
    interval: str
    seeds: str
    units: str
    command: str
    summary: str
    detail: str
    result: str = ""
    stale: str = ""

    @property
    def ours_cell(self) -> str:
        """The ``ours`` cell of the table: our value, then its interval when there is one."""
        if not self.interval or self.interval.lower().startswith(("none", "n/a")):
            return self.ours
        return f"{self.ours} ({self.interval})"


@dataclass(frozen=True)
class Registry:
    """A loaded registry: the page's title and introduction and the claims, in file order."""

    title: str
    intro: str
    claims: tuple[Claim, ...]


# --------------------------------------------------------------------------------------------
# reading and validation


def _read_toml(path: Path) -> dict:
    if tomllib is None:  # pragma: no cover - Python 3.10
        raise ClaimsError(f"{path}: reading TOML needs Python 3.11 or newer, or tomli")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ClaimsError(f"{path}: no such file") from None
    except OSError as err:
        raise ClaimsError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        msg = " ".join(str(err).split())
        raise ClaimsError(f"{path}: not valid TOML: {msg}") from None


def _check_claim(path: Path, i: int, raw: Any, seen: set[str]) -> Claim:
    where = f"{path}: claim #{i + 1}"
    if not isinstance(raw, dict):
        raise ClaimsError(f"{where}: expected a table, got {type(raw).__name__}")
    cid = raw.get("id")
    if isinstance(cid, str) and cid:
        where = f"{path}: claim {cid!r}"
    for name in REQUIRED:
        if name not in raw:
            raise ClaimsError(f"{where}: field {name!r} is missing")
    for name, value in raw.items():
        if name not in FIELDS:
            raise ClaimsError(f"{where}: field {name!r} is not a claim field "
                              f"(fields: {', '.join(FIELDS)})")
        if not isinstance(value, str):
            raise ClaimsError(f"{where}: field {name!r} must be a string, "
                              f"got {type(value).__name__}")
    for name in NON_EMPTY:
        if not raw[name].strip():
            raise ClaimsError(f"{where}: field {name!r} is empty")
    if not _ID.fullmatch(cid):
        raise ClaimsError(f"{where}: field 'id': {cid!r} is not a slug "
                          "(lower-case letters, digits, '-' and '.')")
    if cid in seen:
        raise ClaimsError(f"{where}: field 'id': duplicate id {cid!r}")
    if raw["status"] not in STATUSES:
        raise ClaimsError(f"{where}: field 'status': unknown status {raw['status']!r} "
                          f"(one of: {', '.join(STATUSES)})")
    result = raw.get("result", "")
    if result and (not result.startswith("results/") or ".." in Path(result).parts):
        raise ClaimsError(f"{where}: field 'result': {result!r} is not a path under results/")
    claim = Claim(**{k: raw.get(k, "") for k in FIELDS})
    cells = {name: getattr(claim, name) for name in SHORT_FIELDS}
    cells["ours (with its interval)"] = claim.ours_cell
    for name, value in cells.items():
        if len(value) > MAX_CELL:
            raise ClaimsError(f"{where}: field {name!r} has {len(value)} characters "
                              f"(at most {MAX_CELL}; move the rest to 'detail')")
        if "\n" in value.strip():
            raise ClaimsError(f"{where}: field {name!r} spans lines (a cell is one line)")
    seen.add(cid)
    return claim


def load_registry(path: str | os.PathLike) -> Registry:
    """Read and validate a claims registry.

    Parameters
    ----------
    path : str or os.PathLike
        The TOML file (``claims/registry.toml``).

    Returns
    -------
    Registry
        Title, introduction and claims in file order.

    Raises
    ------
    ClaimsError
        One line naming the file, the claim and the field: a missing, empty, unknown or
        non-string field, an unknown status, a duplicate or malformed id, a cell over
        :data:`MAX_CELL` characters, or a file that is missing or not TOML.
    """
    path = Path(path)
    data = _read_toml(path)
    unknown = sorted(set(data) - {"doc", "claim"})
    if unknown:
        raise ClaimsError(f"{path}: unknown top-level key {unknown[0]!r} (expected 'doc' and "
                          "'claim')")
    doc = data.get("doc", {})
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ClaimsError(f"{path}: [doc] must be a table of strings (title, intro)")
    raw_claims = data.get("claim")
    if not isinstance(raw_claims, list) or not raw_claims:
        raise ClaimsError(f"{path}: no [[claim]] tables")
    seen: set[str] = set()
    claims = tuple(_check_claim(path, i, raw, seen) for i, raw in enumerate(raw_claims))
    for c in claims:
        if slug(c.section) in seen or slug(c.section) == "details":
            raise ClaimsError(f"{path}: claim {c.id!r}: field 'section': {c.section!r} has the "
                              "anchor of a claim id or of the details; rename one of them")
    return Registry(title=doc.get("title", DEFAULT_TITLE), intro=doc.get("intro", ""),
                    claims=claims)


def load_claims(path: str | os.PathLike) -> list[Claim]:
    """The validated claims of a registry, in file order (see :func:`load_registry`).

    Parameters
    ----------
    path : str or os.PathLike
        The TOML file (``claims/registry.toml``).

    Returns
    -------
    list of Claim
        One per ``[[claim]]`` table.

    Raises
    ------
    ClaimsError
        As :func:`load_registry`.
    """
    return list(load_registry(path).claims)


def claims_frame(claims: list[Claim]):
    """The claims as a pandas DataFrame, one row per claim and one column per field.

    Parameters
    ----------
    claims : list of Claim
        As returned by :func:`load_claims`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FIELDS` plus ``ours_cell`` (the table's ``ours`` cell), in claim order.
    """
    import pandas as pd

    names = [f.name for f in fields(Claim)]
    rows = [{**{n: getattr(c, n) for n in names}, "ours_cell": c.ours_cell} for c in claims]
    return pd.DataFrame(rows, columns=[*names, "ours_cell"])


def sections(claims: list[Claim]) -> list[str]:
    """The sections of ``claims`` in order of first appearance."""
    return list(dict.fromkeys(c.section for c in claims))


def status_counts(claims: list[Claim]) -> dict[str, int]:
    """Claims per status, in the order of :data:`STATUSES` (zero counts included)."""
    return {s: sum(c.status == s for c in claims) for s in STATUSES}


# --------------------------------------------------------------------------------------------
# rendering


def slug(text: str) -> str:
    """A lower-case anchor for ``text`` (letters and digits joined by ``-``)."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())) or "section"


def _cell(text: str) -> str:
    """One markdown table cell: a single line with pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(claims: list[Claim]) -> list[str]:
    out = ["| claim | paper | status | ours | seeds |", "|---|---|---|---|---|"]
    for c in claims:
        out.append(f"| [{_cell(c.claim)}](#{c.id}) | {_cell(c.paper)} | {c.status} | "
                   f"{_cell(c.ours_cell)} | {_cell(c.seeds)} |")
    return out


def _details(c: Claim) -> list[str]:
    out = [f'<a id="{c.id}"></a>', "", f"### {' '.join(c.claim.split())}", "",
           f"*{c.section}* · **{c.status}** · paper: {' '.join(c.paper.split())}", "",
           c.summary.strip(), ""]
    facts = [("Ours", c.ours), ("Interval", c.interval), ("Seeds", c.seeds),
             ("Units", c.units)]
    out += [f"- **{k}:** {' '.join(v.split())}" for k, v in facts if v.strip()]
    if c.result:
        out.append(f"- **Result file:** [`{c.result}`](../{c.result})")
    if c.stale:
        out.append(f"- **Stale:** {' '.join(c.stale.split())}")
    out += ["", "Command:", "", "```bash", c.command.strip(), "```", ""]
    if c.detail.strip():
        out += [c.detail.strip(), ""]
    out += [f"[Back to the table](#{slug(c.section)})", ""]
    return out


def render_markdown(registry: Registry) -> str:
    """The text of ``docs/claims.md`` for a loaded registry (deterministic).

    Parameters
    ----------
    registry : Registry
        As returned by :func:`load_registry`.

    Returns
    -------
    str
        Markdown ending in one newline.
    """
    claims = list(registry.claims)
    out = [f"# {registry.title}", "", GENERATED_NOTE, ""]
    if registry.intro.strip():
        out += [registry.intro.strip(), ""]
    out += ["What the statuses mean:", ""]
    out += [f"- **{s}**: {STATUS_MEANING[s]}." for s in STATUSES]
    out += ["", "## Summary", "", "| status | claims |", "|---|---|"]
    out += [f"| {s} | {n} |" for s, n in status_counts(claims).items()]
    out += [f"| all | {len(claims)} |", ""]
    out += ["| section | claims |", "|---|---|"]
    out += [f"| [{name}](#{slug(name)}) | {sum(c.section == name for c in claims)} |"
            for name in sections(claims)]
    out.append("")
    for name in sections(claims):
        out += [f'<a id="{slug(name)}"></a>', "", f"## {name}", ""]
        out += _table([c for c in claims if c.section == name])
        out.append("")
    out += ["## Details", ""]
    for name in sections(claims):
        for c in claims:
            if c.section == name:
                out += _details(c)
    text = "\n".join(out)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_claims(registry_path: str | os.PathLike, out_path: str | os.PathLike,
                  check: bool = False) -> bool:
    """Render ``docs/claims.md`` from the registry, or check that it is up to date.

    Parameters
    ----------
    registry_path : str or os.PathLike
        The registry (``claims/registry.toml``).
    out_path : str or os.PathLike
        The markdown file (``docs/claims.md``).
    check : bool
        If true, write nothing and only compare.

    Returns
    -------
    bool
        Whether ``out_path`` already held exactly the rendering. Without ``check`` the file is
        (re)written when it did not.

    Raises
    ------
    ClaimsError
        If the registry is invalid (see :func:`load_registry`).
    """
    text = render_markdown(load_registry(registry_path))
    out_path = Path(out_path)
    try:
        current = out_path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        current = None
    if current == text or check:
        return current == text
    atomic_write_text(out_path, text)
    return False
