"""Writing fit folders for ``cram fit gamma --out DIR``; reading them is :mod:`cram.core.fits`.

The folder's files (``result.json``, ``summary.csv``, ``posterior.nc``, ``curves.csv``,
``figures/``, extra tables) are named once, in :mod:`cram.core.fits`, which also holds the one
reader (:func:`load_fit`, re-exported here and as ``cram.fitting.load_fit``).

The folder is built under a hidden temporary name next to DIR (``.DIR.tmp-<pid>-XXXX``) and
renamed at the end, so a crash never leaves a half-written DIR, and an existing DIR is never
overwritten; temp folders of killed fits are removed by the next write next to them.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

from cram.core.errors import RunFolderError
from cram.core.fits import (  # re-exported: the writer's users import them from here
    CURVES_FILE,
    FIGURES_DIR,
    POSTERIOR_FILE,
    RESULT_FILE,
    SUMMARY_FILE,
    FitFolder,
    load_fit,
)
from cram.core.jsonio import atomic_write_json


def check_out_free(out: str | os.PathLike) -> Path:
    """Raise :class:`RunFolderError` if ``out`` exists (never overwrite a fit silently)."""
    out = Path(out)
    if out.exists():
        raise RunFolderError(f"--out {out}: already exists; choose a new folder or remove it "
                             "yourself (fit folders are never overwritten)")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_folders(out: Path) -> list[Path]:
    """Delete the hidden temp folders of earlier writes of ``out`` whose process is gone.

    A killed fit (``kill -9``, power loss) leaves ``.<name>.tmp-<pid>-XXXX`` next to ``out``; the
    PID in the name tells whether its writer still runs. Returns the folders removed.
    """
    removed = []
    for tmp in out.parent.glob(f".{out.name}.tmp-*-*"):
        try:
            pid = int(tmp.name[len(f".{out.name}.tmp-"):].split("-", 1)[0])
        except ValueError:
            continue
        if tmp.is_dir() and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


class FitFolderWriter:
    """Context manager: write into a hidden temp folder, rename to ``out`` on success.

    The temp folder is ``.<name>.tmp-<pid>-XXXX`` next to ``out`` (the app never lists hidden
    folders as fits); temp folders of killed writers are removed when the next write starts.
    """

    def __init__(self, out: str | os.PathLike):
        from cram.core.jsonio import current_umask

        self.out = check_out_free(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(self.out)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-{os.getpid()}-",
                                         dir=self.out.parent))
        os.chmod(self.tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 → what mkdir would give
        (self.tmp / FIGURES_DIR).mkdir()

    @property
    def path(self) -> Path:
        """The temp folder being written (renamed to ``out`` on a clean exit)."""
        return self.tmp

    def __enter__(self) -> "FitFolderWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        check_out_free(self.out)
        os.replace(self.tmp, self.out)
        return False


def created_stamp() -> str:
    """The current UTC time as an ISO 8601 string, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_result_json(folder: Path, doc: dict) -> None:
    """Write ``doc`` as ``result.json`` into ``folder`` atomically (made JSON-safe)."""
    from cram.core.jsonio import json_safe

    atomic_write_json(folder / RESULT_FILE, json_safe(doc))


__all__ = ["CURVES_FILE", "FIGURES_DIR", "POSTERIOR_FILE", "RESULT_FILE", "SUMMARY_FILE",
           "FitFolder", "FitFolderWriter", "check_out_free", "created_stamp", "load_fit",
           "remove_stale_temp_folders", "write_result_json"]
