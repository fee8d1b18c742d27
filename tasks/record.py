"""How a run folder records its task, and how a recorded task is loaded again, with consent.

A run folder is data: reading one must never run code that the reader did not name. So
config.json's ``task`` entry says *what* the task was, and loading it again follows rules:

- a **built-in** task is recorded by name and cram version and rebuilt from ``BUILTIN`` (no
  import by string, whatever the record says);
- a **file** task (``FILE.py:FACTORY``) is recorded with its resolved path and the SHA-256 of
  the file; a **module** task (``MODULE:FACTORY``) with the module's file and its SHA-256;
- such a task is imported again only when the user names it on the command line (``--task``)
  or passes ``--trust-task``; either way the file's hash is compared with the record *before*
  anything is imported, and a mismatch is refused in one line;
- a task given to :func:`cram.train` as a Python object cannot be rebuilt: ``--task`` is needed.

``--task`` at ``--resume`` must be the recorded task (same kind, factory, content, arguments):
a run never changes task half way. At ``cram eval`` ``--task`` may name another task on
purpose (evaluation on other data); naming the recorded file again still checks its hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .batch import TaskLoadError
from .registry import BUILTIN, load_task, parse_task_args

#: record kinds
BUILTIN_KIND, FILE_KIND, MODULE_KIND, OBJECT_KIND = "builtin", "file", "module", "object"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cram_version() -> str:
    from cram import __version__

    return __version__


def _parse(spec: str) -> tuple[str, str, str]:
    """``(kind, target, factory)`` of a ``--task`` spec (no import)."""
    if ":" not in spec:
        return BUILTIN_KIND, spec, ""
    target, _, factory = spec.rpartition(":")
    return (FILE_KIND if target.endswith(".py") else MODULE_KIND), target, factory


def _module_file(name: str) -> Path | None:
    """The file a module would be imported from (its parent packages are imported to find it)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    return Path(origin).resolve() if origin and Path(origin).is_file() else None


def task_record(task: Any, spec: str | None = None,
                args: Mapping[str, Any] | None = None) -> dict:
    """config.json's ``task`` entry for ``task`` (built from ``spec`` with ``args``, if given)."""
    record: dict[str, Any] = {
        "kind": OBJECT_KIND, "spec": spec,
        "args": {str(k): str(v) for k, v in (args or {}).items()},
        "name": str(getattr(task, "name", type(task).__name__)),
        "vocab_size": int(task.vocab_size), "n_library": int(task.n_library)}
    if spec is None:
        return record
    kind, target, factory = _parse(spec)
    record.update(kind=kind, factory=factory or None)
    if kind == BUILTIN_KIND:
        record.update(builtin=target, version=_cram_version())
        return record
    path = Path(target).expanduser().resolve() if kind == FILE_KIND else _module_file(target)
    record.update(module=target if kind == MODULE_KIND else None,
                  path=str(path) if path else None,
                  sha256=sha256_of(path) if path and path.is_file() else None)
    if kind == FILE_KIND:
        record["spec"] = f"{path}:{factory}"
    return record


def _arg_list(record: dict, extra: Sequence[str] = ()) -> list[str]:
    return [f"{k}={v}" for k, v in (record.get("args") or {}).items()] + list(extra)


def _legacy_kind(record: dict) -> str:
    """The kind of a record written before records had one (spec only)."""
    spec = record.get("spec")
    if spec is None:
        return OBJECT_KIND
    return _parse(str(spec))[0]


def load_recorded_task(record: dict, *, spec: str | None = None, args: Sequence[str] = (),
                       trust: bool = False, where: str = "the run", resuming: bool = False
                       ) -> Any:
    """Rebuild the task of a run's ``task`` record, importing user code only with consent.

    Parameters
    ----------
    record : dict
        config.json's ``task`` entry.
    spec, args : str, sequence of "key=value"
        What the user named on the command line (``--task``, ``--task-arg``), if anything.
    trust : bool
        ``--trust-task``: import the recorded file (after its hash is checked) without naming it.
    where : str
        The run folder, for messages.
    resuming : bool
        ``--resume``: the named task must be the recorded one (same factory, content, arguments).
    """
    if not isinstance(record, dict):
        raise TaskLoadError(f"{where}: config.json's task entry is not an object")
    kind = record.get("kind") or _legacy_kind(record)
    if spec is not None:
        return _load_named(record, kind, spec, args, where, resuming)
    if kind == BUILTIN_KIND:
        name = record.get("builtin") or record.get("spec")
        if name not in BUILTIN:
            raise TaskLoadError(f"{where}: recorded built-in task {name!r} is not in this cram "
                                f"(known: {', '.join(BUILTIN)})")
        _check_version(record, where)
        return load_task(name, _arg_list(record, args))
    if kind == OBJECT_KIND:
        raise TaskLoadError(f"{where}: the task {record.get('name')!r} was given as a Python "
                            "object; name it with --task SPEC")
    if not trust:
        raise TaskLoadError(
            f"{where}: trained on the user task {record.get('spec')!r} ({kind}); a run folder "
            "never runs code by itself: name it again with --task (checked against the recorded "
            "SHA-256), or pass --trust-task")
    _check_hash(record, kind, _recorded_file(record, kind, where), where)
    return load_task(str(record.get("spec")), _arg_list(record, args))


def _load_named(record: dict, kind: str, spec: str, args: Sequence[str], where: str,
                resuming: bool) -> Any:
    """``--task SPEC`` given at eval or resume: check it against the record, then load it."""
    new_kind, target, factory = _parse(spec)
    same_source = new_kind == kind and factory == (record.get("factory") or factory)
    if new_kind == FILE_KIND and kind == FILE_KIND:
        path = Path(target).expanduser()
        if not path.is_file():
            raise TaskLoadError(f"--task {target}: no such file")
        same_source = same_source and (record.get("sha256") is None
                                       or sha256_of(path) == record.get("sha256"))
        if resuming or Path(record.get("path") or "").resolve() == path.resolve():
            _check_hash(record, kind, path, where)
    elif new_kind == BUILTIN_KIND:
        same_source = same_source and target == (record.get("builtin") or record.get("spec"))
    elif new_kind == MODULE_KIND and kind == MODULE_KIND:
        same_source = same_source and target == record.get("module", target)
        if same_source:
            _check_hash(record, kind, _module_file(target), where)
    full_args = _arg_list(record, args) if same_source else list(args)
    if resuming:
        if not same_source:
            raise TaskLoadError(f"--task {spec}: {where} was trained on {record.get('spec')!r}; "
                                "--resume continues the recorded task (start a new run for "
                                "another)")
        if args and parse_task_args(args) != parse_task_args(record.get("args") or {}):
            raise TaskLoadError("--task-arg: --resume continues the recorded task arguments "
                                f"({record.get('args') or {}}); start a new run for others")
        full_args = _arg_list(record)  # the same arguments, named again (a bench resuming)
    return load_task(spec, full_args)


def _recorded_file(record: dict, kind: str, where: str) -> Path:
    path = record.get("path")
    if kind == MODULE_KIND and record.get("module"):
        found = _module_file(str(record["module"]))
        if found is None:
            raise TaskLoadError(f"{where}: module {record['module']!r} is not importable here")
        return found
    if not path or not Path(path).is_file():
        raise TaskLoadError(f"{where}: the recorded task file {path} is missing; name the task "
                            "with --task FILE.py:FACTORY")
    return Path(path)


def _check_hash(record: dict, kind: str, path: Path | None, where: str) -> None:
    expected = record.get("sha256")
    if expected is None:
        return  # a record from before hashes were kept: naming the task is the consent
    if path is None or not path.is_file():
        raise TaskLoadError(f"{where}: the task's {kind} file cannot be found to check it")
    actual = sha256_of(path)
    if actual != expected:
        raise TaskLoadError(f"{path}: content differs from the task {where} was trained on "
                            f"(SHA-256 {actual[:12]}..., recorded {expected[:12]}...); refusing "
                            "to run it")


def _check_version(record: dict, where: str) -> None:
    version = record.get("version")
    if version is not None and version != _cram_version():
        raise TaskLoadError(f"{where}: its built-in task was recorded by cram {version}, this "
                            f"is cram {_cram_version()}; the task may have changed")
