"""JSON that always parses: one sanitiser, and atomic writes of text and JSON files.

Torch-free and numpy-optional: everything above the core writes its files through these.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def json_safe(obj: Any, *, text_for_odd: bool = False) -> Any:
    """Return ``obj`` as plain JSON types.

    Arrays become lists, numpy/torch scalars Python numbers, and NaN or infinite floats ``None``
    (so the document parses everywhere). ``text_for_odd=True`` keeps what ``None`` would lose:
    non-finite floats become ``"nan"``, ``"inf"`` or ``"-inf"``, and any other object its
    ``str`` (result files, :mod:`cram.core.results`).
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v, text_for_odd=text_for_odd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, text_for_odd=text_for_odd) for v in obj]
    if getattr(obj, "ndim", 0) and callable(getattr(obj, "tolist", None)):
        return json_safe(obj.tolist(), text_for_odd=text_for_odd)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        if not text_for_odd:
            return None
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if text_for_odd and not (obj is None or isinstance(obj, (str, int, float, bool))):
        return str(obj)
    return obj


def current_umask() -> int:
    """The process's umask (read from /proc where possible, so no other thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask (0644 usually)."""
    return 0o666 & ~current_umask()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    The file gets the mode a plain ``open`` would give it (0o666 less the umask), not the 0600
    of ``mkstemp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (made JSON-safe first)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")
