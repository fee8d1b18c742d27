"""Fit output folders written by ``cram fit gamma --out DIR`` and read back by :func:`load_fit`.

Layout::

    DIR/
      result.json     the --json document plus form, method, window, rules, seed, created
      summary.csv     tidy az.summary (Bayesian) or the point-fit parameter table
      posterior.nc    ArviZ InferenceData (Bayesian only; has delta_gamma with both groups)
      curves.csv      the tidy data actually fitted (after window and offset; column t)
      figures/*.png   fitted curves, γ forest, Δγ posterior, window sensitivity
      *.csv           extras: window_sensitivity, ppc, prior_sensitivity, loo_compare

The folder is built under a temporary name next to DIR and renamed at the end, so a crash never
leaves a half-written DIR, and an existing DIR is never overwritten.
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


class FitFolderWriter:
    """Context manager: write into a temp folder, rename to ``out`` on success."""

    def __init__(self, out: str | os.PathLike):
        self.out = check_out_free(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        (self.tmp / FIGURES_DIR).mkdir()

    @property
    def path(self) -> Path:
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
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_result_json(folder: Path, doc: dict) -> None:
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
    try:
        summary = pd.read_csv(path / SUMMARY_FILE)
        curves = pd.read_csv(path / CURVES_FILE)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise RunFolderError(f"{path}: corrupt CSV ({err})") from None
    idata = None
    if (path / POSTERIOR_FILE).is_file():
        import arviz as az

        try:
            idata = az.from_netcdf(path / POSTERIOR_FILE)
        except Exception as err:  # noqa: BLE001 - any netCDF failure is a corrupt folder
            raise RunFolderError(f"{path / POSTERIOR_FILE}: cannot be read ({err})") from None
    return FitFolder(path, result, summary, idata, curves)
