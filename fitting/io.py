"""Fit output folders written by ``cram fit gamma --out DIR`` and read back by :func:`load_fit`.

Layout::

    DIR/
      result.json     the --json document plus form, method, window, rules, seed, created
      summary.csv     tidy az.summary (Bayesian) or the point-fit parameter table
      posterior.nc    ArviZ InferenceData (Bayesian only; has delta_gamma with both groups)
      curves.csv      the tidy data actually fitted (after window and offset; column t)
      figures/*.png   fitted curves, γ forest, Δγ posterior, window sensitivity
      *.csv           extras: window_sensitivity, ppc, prior_sensitivity, loo_compare

The folder is built under a hidden temporary name next to DIR (``.DIR.tmp-<pid>-XXXX``) and
renamed at the end, so a crash never leaves a half-written DIR, and an existing DIR is never
overwritten; temp folders of killed fits are removed by the next write next to them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cram.core.errors import RunFolderError
from cram.core.jsonio import atomic_write_json

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
POSTERIOR_FILE = "posterior.nc"
CURVES_FILE = "curves.csv"
FIGURES_DIR = "figures"


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


@dataclass
class FitFolder:
    """A fit folder read back."""

    path: Path
    result: dict
    summary: pd.DataFrame
    idata: object  # arviz.InferenceData or None
    curves: pd.DataFrame

    def extra(self, name: str) -> pd.DataFrame | None:
        """An extra table (``window_sensitivity``, ``ppc``, ...) or None when absent."""
        f = self.path / f"{name}.csv"
        return pd.read_csv(f) if f.is_file() else None

    @property
    def figures(self) -> list[Path]:
        """The PNG figures of the fit folder, sorted by name."""
        return sorted((self.path / FIGURES_DIR).glob("*.png"))


def load_fit(path: str | os.PathLike) -> FitFolder:
    """Read a fit folder written by ``cram fit gamma --out DIR``.

    Raises
    ------
    RunFolderError
        If the folder or one of result.json / summary.csv / curves.csv is missing or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such fit folder")
    for f in (RESULT_FILE, SUMMARY_FILE, CURVES_FILE):
        if not (path / f).is_file():
            raise RunFolderError(f"{path}: missing {f}; is this a cram fit folder?")
    try:
        result = json.loads((path / RESULT_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path / RESULT_FILE}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{path / RESULT_FILE}: not UTF-8 text") from None
    try:
        summary = pd.read_csv(path / SUMMARY_FILE)
        curves = pd.read_csv(path / CURVES_FILE)
    except (ValueError, UnicodeDecodeError) as err:  # ParserError, EmptyDataError, bad bytes
        raise RunFolderError(f"{path}: corrupt CSV ({err})") from None
    idata = None
    if (path / POSTERIOR_FILE).is_file():
        import arviz as az

        try:
            idata = az.from_netcdf(path / POSTERIOR_FILE)
        except Exception as err:  # noqa: BLE001 - any netCDF failure is a corrupt folder
            raise RunFolderError(f"{path / POSTERIOR_FILE}: cannot be read ({err})") from None
    return FitFolder(path, result, summary, idata, curves)
