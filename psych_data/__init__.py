"""Human forgetting data: a registry of small tidy tables, and a loader for a user's own CSV.

``list_datasets()`` names what ships; ``load_dataset(name)`` returns the tidy curve table (see
:mod:`cram.psych_data.tidy`) after a schema check; ``dataset_info(name)`` returns the schema entry
(units, measure, n, citation, licence). ``load_dataset()`` with no name returns the listing.

Shipped data lives in ``psych_data/data/``: one CSV per dataset plus ``datasets.json`` (the
registry and schema) and ``LICENCE_NOTES.txt``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from cram.core.errors import DataError
from cram.psych_data.tidy import (
    TIDY_COLUMNS,
    USER_REQUIRED,
    load_curves_csv,
    read_csv_checked,
    validate_curves,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
REGISTRY_FILE = DATA_DIR / "datasets.json"

__all__ = ["DATA_DIR", "TIDY_COLUMNS", "USER_REQUIRED", "dataset_info", "list_datasets",
           "load_all_human", "load_curves_csv", "load_dataset", "validate_curves"]

_REQUIRED_SCHEMA = ("file", "title", "citation", "measure", "delay_unit", "n", "n_kind",
                    "licence", "likelihood", "curves")


@lru_cache(maxsize=1)
def _registry() -> dict:
    with open(REGISTRY_FILE, encoding="utf-8") as fh:
        reg = json.load(fh)["datasets"]
    for name, entry in reg.items():
        missing = [k for k in _REQUIRED_SCHEMA if k not in entry]
        if missing:  # a packaging bug, not user input
            raise DataError(f"{REGISTRY_FILE}: dataset {name!r} lacks schema fields {missing}")
    return reg


def list_datasets() -> pd.DataFrame:
    """One row per shipped dataset: name, title, measure, unit, n, curves, licence, citation."""
    rows = []
    for name, e in _registry().items():
        rows.append({"name": name, "title": e["title"], "measure": e["measure"],
                     "delay_unit": e["delay_unit"], "n": e["n"], "n_kind": e["n_kind"],
                     "curves": len(e["curves"]),
                     "derived_curves": sum(bool(c.get("derived")) for c in e["curves"].values()),
                     "confidence": e.get("confidence", ""), "licence": e["licence"],
                     "citation": e["citation"]})
    return pd.DataFrame(rows)


def dataset_info(name: str) -> dict:
    """The schema entry of a shipped dataset (a copy)."""
    reg = _registry()
    if name not in reg:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(reg))}")
    return json.loads(json.dumps(reg[name]))


def _curve_id(name: str, entry: dict, source: str) -> str:
    if len(entry["curves"]) == 1:
        return next(iter(entry["curves"]))
    for cid, meta in entry["curves"].items():
        cond = meta.get("condition")
        if cond is not None and f"condition '{cond}'" in source:
            return cid
    raise DataError(f"{DATA_DIR / entry['file']}: source {source!r} matches no curve of "
                    f"dataset {name!r} in {REGISTRY_FILE.name}")


def load_dataset(name: str | None = None) -> pd.DataFrame:
    """Load a shipped dataset as a tidy curve table (or, with no name, the listing).

    Raises
    ------
    DataError
        For an unknown name (listing the known ones) or a shipped file that fails the schema.
    """
    if name is None:
        return list_datasets()
    entry = dataset_info(name)
    path = DATA_DIR / entry["file"]
    raw = read_csv_checked(path)
    df = raw.copy()
    df["curve"] = [_curve_id(name, entry, s) for s in df["source"].astype(str)]
    df["group"] = "human"
    df["derived"] = [bool(entry["curves"][c].get("derived", False)) for c in df["curve"]]
    df["n_kind"] = entry["n_kind"]
    df["dataset"] = name
    df["condition"] = [entry["curves"][c].get("condition", "") for c in df["curve"]]
    df = validate_curves(df, str(path))
    for col, want in (("measure", entry["measure"]), ("delay_unit", entry["delay_unit"])):
        bad = df[col] != want
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"{path}: row {i + 1}, column '{col}': {df[col].iloc[i]!r} differs "
                            f"from the schema's {want!r}")
    return df


def load_all_human(include_derived: bool = True) -> pd.DataFrame:
    """All shipped datasets in one tidy table."""
    df = pd.concat([load_dataset(n) for n in _registry()], ignore_index=True)
    return df if include_derived else df[~df["derived"]].reset_index(drop=True)
