"""Result files: every benchmark and study writes its table as one JSON file, never markdown.

A result file holds what a reader needs to trust and reuse a table: the rows themselves (one
object per row, every key the benchmark measured), the columns shown, the command, the machine
and its load, the code commit, the seeds, the date and free notes (markdown). Files live in a
results folder, one subfolder per study: ``<root>/<study>/<date>-<commit>.json``. A *study* is
one experiment whose tables replace each other as it is re-run; its id is stable (lowercase
letters, digits and hyphens, :func:`study_id`). ``docs/benchmarks.md`` is rendered from these
files (:mod:`cram.core.render`, ``cram docs render``) and shows each study's newest result.

The folder is the one the user names (``--results DIR``), else ``$CRAM_RESULTS_DIR``, else
``./results`` in the working directory; never a folder inside the installed package. Files are
created exclusively (a second writer in the same second gets ``_2``, ``_3``, ...), so
concurrent benchmarks never overwrite each other. Non-finite numbers are stored as the strings
``"nan"``, ``"inf"`` and ``"-inf"`` so that every file is standard JSON.

Torch-free; imports nothing of the project outside :mod:`cram.core`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cram.core.errors import ConfigError, DataError
from cram.core.jsonio import file_mode, json_safe

#: the version written into every result file; a reader refuses a newer one
SCHEMA_VERSION = 1
#: the folder name used when neither ``--results`` nor ``$CRAM_RESULTS_DIR`` is given
DEFAULT_DIRNAME = "results"
ENV_VAR = "CRAM_RESULTS_DIR"
_STUDY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")
_MAX_ID = 80
_FIELDS = ("schema_version", "study", "title", "variant", "date", "command", "machine", "load",
           "commit", "seeds", "columns", "rows", "tables", "notes", "extra")


class ResultFileError(DataError):
    """A result file that cannot be read: the one-line message names the file and the field."""


@dataclass
class ResultFile:
    """One measured table with its provenance: the content of one result file.

    Parameters
    ----------
    study : str
        Stable id of the experiment (the folder name): lowercase letters, digits, hyphens.
    title : str
        Human title of the table (the section heading when this is the study's newest result).
    command : str
        The command line that produced it ("" when it was not recorded).
    machine : str
        CPU, cores, Python, torch and its threads, the accelerator ("" when not recorded).
    date : str
        UTC, ``YYYY-MM-DDTHH:MM:SSZ`` (or ``YYYY-MM-DD`` for migrated tables without a time).
    columns : list of str
        The columns shown, in order; rows may carry more keys (all of them are data).
    rows : list of dict
        One object per row.
    load : str or None
        The machine's load average when the table was written (other jobs skew timings).
    commit : str or None
        ``git rev-parse HEAD`` of the code that ran, when known.
    seeds : list of int or None
        The seeds the rows come from, when the experiment has seeds.
    variant : str or None
        What distinguishes this result from the study's others (a setting, a re-measurement).
    tables : list of dict
        Further tables, each ``{"caption": str, "columns": [...], "rows": [...]}``.
    notes : str
        Markdown shown under the table.
    extra : dict
        Anything else (free form).
    """

    study: str
    title: str
    command: str
    machine: str
    date: str
    columns: list[str]
    rows: list[dict]
    load: str | None = None
    commit: str | None = None
    seeds: list[int] | None = None
    variant: str | None = None
    tables: list[dict] = field(default_factory=list)
    notes: str = ""
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: where the file was read from (not part of the file)
    path: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The JSON object of the file, in the schema's field order."""
        d = dataclasses.asdict(self)
        return {k: _plain(d[k]) for k in _FIELDS}

    @classmethod
    def from_dict(cls, obj: Any, source: str = "<result>") -> ResultFile:
        """Check ``obj`` against the schema; a :class:`ResultFileError` names ``source``'s field."""
        _validate(obj, source)
        return cls(**{k: obj[k] for k in _FIELDS if k in obj})


# ----------------------------------------------------------------------------------- validation
def _fail(source: str, where: str, what: str):
    raise ResultFileError(f"{source}: field '{where}': {what}")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), "a number")


def _check_type(obj: dict, key: str, types: tuple, source: str, required: bool = True) -> None:
    if key not in obj:
        if required:
            _fail(source, key, "missing")
        return
    if not isinstance(obj[key], types) or (isinstance(obj[key], bool) and bool not in types):
        names = " or ".join(_kind(t()) if t is not type(None) else "null" for t in types)
        _fail(source, key, f"expected {names}, got {_kind(obj[key])}")


def _check_table(columns: Any, rows: Any, prefix: str, source: str) -> None:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        _fail(source, f"{prefix}columns", "expected a list of strings")
    if not isinstance(rows, list):
        _fail(source, f"{prefix}rows", f"expected a list of objects, got {_kind(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            _fail(source, f"{prefix}rows[{i}]", f"expected an object, got {_kind(row)}")


def _validate(obj: Any, source: str) -> None:
    if not isinstance(obj, dict):
        raise ResultFileError(f"{source}: expected a JSON object, got {_kind(obj)}")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        _fail(source, unknown[0], "unknown field (free data belongs under 'extra')")
    _check_type(obj, "schema_version", (int,), source)
    if obj["schema_version"] > SCHEMA_VERSION or obj["schema_version"] < 1:
        _fail(source, "schema_version", f"{obj['schema_version']} is not supported (this cram "
              f"reads 1..{SCHEMA_VERSION}; a newer cram wrote it?)")
    for key in ("study", "title", "command", "machine", "date"):
        _check_type(obj, key, (str,), source)
    if not _STUDY_RE.match(obj["study"]) or len(obj["study"]) > _MAX_ID:
        _fail(source, "study", f"{obj['study']!r} is not an id (lowercase letters, digits, "
              f"hyphens; at most {_MAX_ID} characters)")
    if not obj["title"].strip():
        _fail(source, "title", "empty")
    if not _DATE_RE.match(obj["date"]):
        _fail(source, "date", f"{obj['date']!r} is not YYYY-MM-DDTHH:MM:SSZ (UTC)")
    for key in ("load", "commit", "variant"):
        _check_type(obj, key, (str, type(None)), source, required=False)
    _check_type(obj, "seeds", (list, type(None)), source, required=False)
    if any(not isinstance(s, int) or isinstance(s, bool) for s in obj.get("seeds") or []):
        _fail(source, "seeds", "expected a list of integers")
    _check_type(obj, "columns", (list,), source)
    _check_type(obj, "rows", (list,), source)
    _check_table(obj["columns"], obj["rows"], "", source)
    _check_type(obj, "tables", (list,), source, required=False)
    for i, table in enumerate(obj.get("tables", [])):
        if not isinstance(table, dict):
            _fail(source, f"tables[{i}]", f"expected an object, got {_kind(table)}")
        if not isinstance(table.get("caption", ""), str):
            _fail(source, f"tables[{i}].caption", "expected a string")
        _check_table(table.get("columns"), table.get("rows"), f"tables[{i}].", source)
    _check_type(obj, "notes", (str,), source, required=False)
    _check_type(obj, "extra", (dict,), source, required=False)


# -------------------------------------------------------------------------------- ids and values
#: settings that change which files a run saves, not what it trains or measures
BOOKKEEPING_SETTINGS = ("train.checkpoint_every", "train.pattern_every")
_SYMBOLS = {"γ": " gamma ", "Γ": " gamma ", "Δ": " delta ", "δ": " delta ", "×": " ", "%": " "}


def study_id(title: str) -> str:
    """A stable id for a study title: ``"SRCD: models × seeds (preset demo)"`` → ``srcd-models-…``.

    Lowercase ASCII letters, digits and hyphens; a title whose id would pass 80 characters keeps
    its first words and ends in 8 hex digits of a hash of the whole id.
    """
    text = "".join(_SYMBOLS.get(ch, ch) for ch in title)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "study"
    if len(slug) <= _MAX_ID:
        return slug
    digest = hashlib.sha1(slug.encode()).hexdigest()[:8]
    return slug[:_MAX_ID - 9].rsplit("-", 1)[0].rstrip("-") + "-" + digest


def title_with_settings(title: str, settings: list[str] | tuple[str, ...]) -> str:
    """``title`` with the settings it does not name yet, inside its closing parenthesis.

    ``("SRCD (preset demo)", ["data.length=1024"])`` → ``"SRCD (preset demo; data.length=1024)"``;
    a title without a trailing parenthesis gets one. Settings change the experiment, so a table
    measured with them is a study of its own (:func:`study_id` of the result). Settings that
    only change what is saved (:data:`BOOKKEEPING_SETTINGS`) are left out.
    """
    missing = [s for s in settings if s and s not in title
               and s.partition("=")[0] not in BOOKKEEPING_SETTINGS]
    if not missing:
        return title
    if title.endswith(")"):
        return f"{title[:-1]}; {' '.join(missing)})"
    return f"{title} ({' '.join(missing)})"


def _plain(value: Any) -> Any:
    """``value`` as standard JSON types; non-finite floats as strings, unknown objects as str."""
    return json_safe(value, text_for_odd=True)


def dumps(result: ResultFile) -> str:
    """The file's text: one field per line, one row per line (diffs stay readable)."""
    d = result.to_dict()
    lines = []
    for key, value in d.items():
        if key in ("rows", "tables") and value:
            inner = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f'"{key}": [\n{inner}\n]')
        else:
            lines.append(f'"{key}": {json.dumps(value, ensure_ascii=False)}')
    return "{\n" + ",\n".join(lines) + "\n}\n"


# ---------------------------------------------------------------------------- folders and files
def default_results_dir() -> Path:
    """``$CRAM_RESULTS_DIR`` if set, else ``./results`` (relative to the working directory)."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIRNAME)


def check_results_dir(root: str | os.PathLike, option: str = "--results") -> Path:
    """Refuse a results folder that is a file, unwritable or inside the installed package."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{option} {root}: is a file; give a folder for the result files")
    package = Path(__file__).resolve().parents[1]
    resolved = root.resolve()
    if resolved == package or package in resolved.parents:
        raise ConfigError(f"{option} {root}: inside the installed package ({package}); give a "
                          "folder of your own (the repository's is results/ at its root)")
    existing = next((q for q in [root, *root.parents] if q.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{option} {root}: not writable; give a folder you can write")
    return root


def file_name(result: ResultFile) -> str:
    """``<date>-<commit>``: ``2026-12-01T055512Z-1a2b3c4d5e`` (no colons; sorts by date)."""
    date = result.date.replace(":", "")
    commit = (result.commit or (result.extra or {}).get("recorded_in") or "nocommit")[:10]
    return f"{date}-{commit}"


def write_result(result: ResultFile, root: str | os.PathLike | None = None) -> Path:
    """Validate ``result`` and write it as a new file under ``root/<study>/``; its path.

    ``root`` defaults to :func:`default_results_dir`. The file is written to a temporary name
    and linked into place exclusively, so a concurrent writer never replaces it.
    """
    text = dumps(result)
    ResultFile.from_dict(json.loads(text), source=f"result for study {result.study!r}")
    folder = check_results_dir(default_results_dir() if root is None else root) / result.study
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".result.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        stem = file_name(result)
        for n in range(1, 1000):
            path = folder / (f"{stem}.json" if n == 1 else f"{stem}_{n}.json")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise ConfigError(f"{folder}: 999 result files named {stem}*; clean the folder")
    finally:
        os.unlink(tmp)


def read_result(path: str | os.PathLike) -> ResultFile:
    """One result file, checked; a :class:`ResultFileError` names the file and the field."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg})") from None
    result = ResultFile.from_dict(obj, source=str(path))
    result.path = path
    return result


def load_results(root: str | os.PathLike) -> dict[str, list[ResultFile]]:
    """Every result file under ``root``, by study, each study's list oldest first.

    A file must lie in the folder named after its study; order is (date, file name), so ties
    within one second keep the order the files were written in (``_2`` after the first).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no results folder (write results with --results {root})")
    studies: dict[str, list[ResultFile]] = {}
    for path in sorted(root.glob("*/*.json")):
        result = read_result(path)
        if result.study != path.parent.name:
            raise ResultFileError(f"{path}: field 'study': {result.study!r} but the file is in "
                                  f"folder {path.parent.name!r}")
        studies.setdefault(result.study, []).append(result)
    for results in studies.values():
        results.sort(key=lambda r: (r.date, _stem_key(r.path)))
    return dict(sorted(studies.items()))


def _stem_key(path: Path | None) -> tuple:
    """Sort key of a file name: the stem, then its ``_N`` suffix as a number (``_10`` > ``_2``)."""
    base, _, n = (path.stem if path else "").partition("_")
    return (base, int(n) if n.isdigit() else 1)
