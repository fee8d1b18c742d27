"""The tidy curve table shared by human data, user CSVs and model curves, and its checks.

One row per point. Columns (in this order, extra columns kept after them):

``curve``        str, unique curve id
``group``        ``"human"`` or ``"model"``
``source``       citation or run path
``delay_value``  float >= 0
``delay_unit``   str (hours, intervening_items, steps, exposures, ...)
``measure``      str (savings, recall, attention_library, episodic_share, accuracy, ...)
``value``        float; proportions in [0, 1]
``n``            float, trials or participants behind ``value`` (NaN if unknown)
``derived``      bool, True for e.g. a mean over conditions (kept out of pooled fits)

Optional column ``n_kind`` says what ``n`` counts (``trials``, ``participants``, ``subjects``,
``queries``); the Bayesian fits use a binomial likelihood only where ``n_kind`` is ``trials`` or
``queries`` (independent Bernoulli outcomes behind ``value``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cram.core.errors import DataError

TIDY_COLUMNS = ("curve", "group", "source", "delay_value", "delay_unit", "measure", "value", "n",
                "derived")
USER_REQUIRED = ("delay_value", "delay_unit", "measure", "value")
GROUPS = ("human", "model")
#: measures whose values are not proportions (no [0, 1] check); everything else must lie in [0, 1]
UNBOUNDED_MEASURES = frozenset({"activation", "log_odds", "need_odds", "latency"})
#: n_kind values for which ``n`` counts independent Bernoulli outcomes (binomial likelihood)
COUNT_KINDS = frozenset({"trials", "queries"})


def _line(df_index: int) -> int:
    """CSV line number of a 0-based data row (line 1 is the header)."""
    return int(df_index) + 2


def validate_curves(df: pd.DataFrame, where: str = "<table>", *, proportions: bool = True
                    ) -> pd.DataFrame:
    """Check a tidy curve table and return it with canonical dtypes and column order.

    Parameters
    ----------
    df : DataFrame
        Table with at least the columns in ``TIDY_COLUMNS``.
    where : str
        Name of the file or object, used in error messages.
    proportions : bool
        Require ``value`` in [0, 1] for every measure not in ``UNBOUNDED_MEASURES``.

    Raises
    ------
    DataError
        Naming ``where``, the row (CSV line) and the column of the first problem found.
    """
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")
    df = df.reset_index(drop=True).copy()
    for col in ("delay_value", "value", "n"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column '{col}': "
                            f"{df[col].iloc[i]!r} is not a number")
        df[col] = num.astype(float)
    for col in ("delay_value", "value"):
        nan = ~np.isfinite(df[col].to_numpy())
        if nan.any():
            i = int(np.flatnonzero(nan)[0])
            raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column '{col}': "
                            "missing or non-finite value (NaN/inf)")
    neg = df["delay_value"].to_numpy() < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column 'delay_value': "
                        f"delay {df['delay_value'].iloc[i]} < 0")
    nvals = df["n"].to_numpy()
    badn = np.isfinite(nvals) & (nvals <= 0)
    if badn.any():
        i = int(np.flatnonzero(badn)[0])
        raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column 'n': n must be > 0 "
                        "(or empty when unknown)")
    for col in ("curve", "delay_unit", "measure", "source"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column '{col}': empty")
        df[col] = df[col].astype(str)
    badg = ~df["group"].isin(GROUPS)
    if badg.any():
        i = int(np.flatnonzero(badg.to_numpy())[0])
        raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column 'group': "
                        f"{df['group'].iloc[i]!r} is not one of {list(GROUPS)}")
    if proportions:
        prop = ~df["measure"].isin(UNBOUNDED_MEASURES)
        v = df["value"].to_numpy()
        out = prop.to_numpy() & ((v < 0) | (v > 1))
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DataError(
                f"{where}: row {i + 1} (line {_line(i)}), column 'value': {v[i]} is outside "
                f"[0, 1] for the proportion measure {df['measure'].iloc[i]!r} "
                "(give proportions, not percent)")
    df["derived"] = _as_bool(df["derived"], where)
    for cid, sub in df.groupby("curve", sort=False):
        for col in ("delay_unit", "measure", "group"):
            if sub[col].nunique() > 1:
                i = int(sub.index[0])
                raise DataError(f"{where}: curve {cid!r} (first at line {_line(i)}) mixes several "
                                f"values in column '{col}': {sorted(sub[col].unique())}")
    extra = [c for c in df.columns if c not in TIDY_COLUMNS]
    return df[list(TIDY_COLUMNS) + extra]


def _as_bool(col: pd.Series, where: str) -> pd.Series:
    if col.dtype == bool:
        return col
    out = []
    for i, v in enumerate(col.tolist()):
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
            continue
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(False)
            continue
        s = str(v).strip().lower()
        if s in {"1", "true", "yes", "1.0"}:
            out.append(True)
        elif s in {"0", "false", "no", "", "0.0"}:
            out.append(False)
        else:
            raise DataError(f"{where}: row {i + 1} (line {_line(i)}), column 'derived': {v!r} is "
                            "not a boolean (true/false)")
    return pd.Series(out, index=col.index, dtype=bool)


def read_csv_checked(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV file, turning parser failures into :class:`DataError` naming the file."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    rows = [(i + 1, r) for i, r in enumerate(rows) if r and any(c.strip() for c in r)]
    if rows:
        width = len(rows[0][1])
        for line, r in rows[1:]:
            if len(r) != width:
                raise DataError(f"{path}: malformed CSV: line {line} (row {line - 1}) has "
                                f"{len(r)} fields, the header has {width}")
    try:
        return pd.read_csv(path, dtype={"curve": str, "source": str, "delay_unit": str,
                                        "measure": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (expected a CSV with a header row)") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None


def load_curves_csv(path: str | os.PathLike, group: str = "human") -> pd.DataFrame:
    """Load a user's own forgetting data as a tidy curve table.

    The CSV needs the columns ``delay_value, delay_unit, measure, value`` and may have ``n``,
    ``n_kind``, ``source``, ``curve``, ``group`` and ``derived``. ``curve`` groups rows into
    curves; without it, each ``source`` is one curve (and without ``source``, the whole file is
    one curve named by the file's stem, ``my_recall.csv`` → ``my_recall``, wherever it lies); a
    source text found on one row only is refused then, since
    it would make a curve of one point. One row per delay within a curve. Curve ids are prefixed
    with the file stem so that they do not clash with shipped datasets. Extra columns are kept.

    Raises
    ------
    DataError
        For a malformed or header-only file, a missing column, NaN, a value outside [0, 1] for a
        proportion, a negative delay, two rows at one delay of a curve, or a per-row ``source``
        without a ``curve`` column, naming the file, the row (and CSV line) and the column.
    """
    path = Path(path)
    raw = read_csv_checked(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in USER_REQUIRED if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; a curve CSV needs "
                        f"{list(USER_REQUIRED)} plus optional n, source, curve")
    if raw.empty:
        raise DataError(f"{path}: no data rows (only a header); a curve needs at least one row "
                        "per delay")
    df = raw.copy()
    no_source = "source" not in df.columns
    if no_source:  # the file is the source: named by its file name, not by how it was reached
        df["source"] = path.name
    df["source"] = df["source"].where(df["source"].notna(), path.name).astype(str)
    if "curve" not in df.columns:
        _check_source_grouping(df, path)
        # one curve per source, prefixed with the file stem; a file without sources is one curve
        df["curve"] = path.stem if no_source else path.stem + "/" + df["source"]
    else:
        empty = df["curve"].isna() | (df["curve"].astype(str).str.strip() == "")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{path}: row {i + 1} (line {_line(i)}), column 'curve': empty")
        df["curve"] = path.stem + "/" + df["curve"].astype(str)
    if "n" not in df.columns:
        df["n"] = np.nan
    if "group" not in df.columns:
        df["group"] = group
    if "derived" not in df.columns:
        df["derived"] = False
    df = validate_curves(df, str(path))
    _check_unique_delays(df, path)
    return df


def _check_source_grouping(df: pd.DataFrame, path: Path) -> None:
    """Refuse a grouping by ``source`` that makes curves of one point each.

    Without a ``curve`` column, rows are grouped by ``source``; a source text that differs from
    row to row would make every curve a single point.
    """
    sizes = df.groupby("source", sort=False)["source"].transform("size").to_numpy()
    single = np.flatnonzero(sizes == 1)
    if len(df) > 1 and len(single) > 0:
        i = int(single[0])
        raise DataError(
            f"{path}: row {i + 1} (line {_line(i)}): its 'source' text "
            f"{df['source'].iloc[i]!r} is on no other row, so it would be a curve of one point "
            f"({len(single)} such row(s)); without a 'curve' column rows are grouped into curves "
            "by 'source': add a 'curve' column naming each row's curve, or give the rows of one "
            "curve the same source")


def _check_unique_delays(df: pd.DataFrame, path: Path) -> None:
    """One point per delay within a curve: two rows at the same delay are refused by line."""
    dup = df.duplicated(["curve", "delay_value"], keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = df.iloc[int(rows[0])]
        same = [int(j) for j in rows if df["curve"].iloc[int(j)] == first["curve"]
                and df["delay_value"].iloc[int(j)] == first["delay_value"]]
        raise DataError(
            f"{path}: curve {first['curve']!r} has {len(same)} rows at delay_value "
            f"{first['delay_value']:g} (lines {', '.join(str(_line(j)) for j in same)}); give "
            "one row per delay (average repeated measurements) or put them in separate curves "
            "with a 'curve' column")
