"""Comparison rules fixed before any fit, and written into every result.

The rules decide which points a γ is estimated from, so they are set up front and recorded; a
result without them cannot be compared with another. Defaults (see docs/fitting.md):

- model curves start at the end of warm-up (``onset = "end_of_warmup"``);
- the fit window is given in decades from the first fitted time: ``window=(A, B)`` keeps the
  points with ``A <= log10(t / t_first) <= B`` (``None`` keeps all);
- forms that need t > 0 take an explicit, stated offset: ``t = delay_value + offset``;
  a zero delay with such a form and no offset is an error, never silently dropped;
- γ is null for forms without a power exponent;
- the ROPE for Δγ = γ_model − γ_human is ±0.05;
- derived curves (e.g. a mean over conditions) are kept out of pooled fits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from cram.core.errors import ConfigError, DataError
from cram.fitting.forms import get_form

ONSET = "end_of_warmup"


@dataclass(frozen=True)
class ComparisonRules:
    """The rules a γ comparison is made under (all recorded in ``result.json``)."""

    form: str = "power"
    window: tuple[float, float] | None = None
    offset: float | dict | None = None
    rope: float = 0.05
    onset: str = ONSET
    exclude_derived: bool = True
    interval: float = 0.90

    def __post_init__(self):
        get_form(self.form)
        if self.window is not None:
            a, b = self.window
            if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b <= a:
                raise ConfigError(f"window {self.window}: need 0 <= A < B (decades from the "
                                  "first delay)")
        if isinstance(self.offset, dict):
            object.__setattr__(self, "offset", {str(k): float(v) for k, v in self.offset.items()})
            vals = list(self.offset.values())
        else:
            vals = [] if self.offset is None else [float(self.offset)]
            if self.offset is not None:
                object.__setattr__(self, "offset", float(self.offset))
        for v in vals:
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"offset {self.offset}: must be finite and >= 0")
        if not (isinstance(self.rope, (int, float)) and math.isfinite(self.rope)
                and self.rope > 0):
            raise ConfigError(f"rope {self.rope}: must be a finite number > 0")
        if not 0 < self.interval < 1:
            raise ConfigError(f"interval {self.interval}: must be in (0, 1)")

    def fingerprint(self) -> str:
        """sha256 of the canonical rule values: equal fingerprints, same comparison rules."""
        import hashlib
        import json

        core = asdict(self)
        core["window"] = list(self.window) if self.window is not None else None
        text = json.dumps(core, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_file(cls, path) -> "ComparisonRules":
        """Rules written down in advance, read from a JSON object.

        Keys among form, window (``[A, B]`` or ``"A:B"``), offset (number or {unit: number}),
        rope, onset, exclude_derived, interval. Unknown keys are an error.
        """
        import json
        from pathlib import Path

        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such rules file") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte offset {err.start})") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a rules file") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}: expected a JSON object of rules")
        known = {"form", "window", "offset", "rope", "onset", "exclude_derived", "interval"}
        extra = sorted(set(obj) - known - {"gamma_reported", "t_definition", "window_definition",
                                            "rope_definition", "fingerprint"})
        if extra:
            raise ConfigError(f"{path}: unknown rule field(s) {extra}; known: {sorted(known)}")
        kw = {k: obj[k] for k in known if k in obj}
        if isinstance(kw.get("window"), str):
            kw["window"] = parse_window(kw["window"])
        elif kw.get("window") is not None:
            kw["window"] = tuple(float(x) for x in kw["window"])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict:
        """The rules as a JSON-ready dict, with the derived γ and t definitions added."""
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        d["gamma_reported"] = get_form(self.form).has_gamma
        d["t_definition"] = ("t = delay_value" if self.offset is None else
                             "t = delay_value + offset[delay_unit] (units not listed: + 0)"
                             if isinstance(self.offset, dict) else "t = delay_value + offset")
        d["window_definition"] = "A <= log10(t / t_first) <= B, t_first = first t > 0 of the curve"
        d["rope_definition"] = f"|delta_gamma| < {self.rope}"
        d["fingerprint"] = self.fingerprint()
        return d


def offset_for(units: pd.Series, offset) -> np.ndarray:
    """The offset of each row: one number for all, or per delay unit (missing units: 0)."""
    if offset is None:
        return np.zeros(len(units))
    if isinstance(offset, dict):
        return units.map(lambda u: offset.get(str(u), 0.0)).to_numpy(float)
    return np.full(len(units), float(offset))


def parse_offset(items) -> float | dict | None:
    """``["1"]`` -> 1.0; ``["steps=20", "intervening_items=1"]`` -> per-unit dict."""
    if not items:
        return None
    items = [str(x) for x in items]
    try:
        if len(items) == 1 and "=" not in items[0]:
            return float(items[0])
        out = {}
        for it in items:
            if "=" not in it:
                raise ValueError
            unit, val = it.split("=", 1)
            out[unit.strip()] = float(val)
        return out
    except ValueError:
        raise ConfigError(f"--offset {items}: give one number (all units) or UNIT=NUMBER "
                          "per unit, e.g. --offset steps=20 --offset intervening_items=1") from None


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``"A:B"`` -> (A, B) in decades; ``None``/``""``/``"all"`` -> None."""
    if text is None or str(text).strip().lower() in {"", "all", "none"}:
        return None
    try:
        a, b = (float(x) for x in str(text).split(":"))
    except ValueError:
        raise ConfigError(f"--window {text!r}: expected A:B in decades, e.g. 0:2") from None
    return (a, b)


def apply_rules(df: pd.DataFrame, rules: ComparisonRules, *, pooled: bool = False,
                where: str = "<curves>") -> pd.DataFrame:
    """Return the points a fit uses, with the fitted time in a new column ``t``.

    Drops derived curves when ``pooled`` and ``rules.exclude_derived``; adds ``t`` (delay plus
    offset); applies the window per curve. Raises :class:`DataError` for a zero t with a form
    that needs t > 0, naming the curve and row, and for a curve left with fewer than 3 points.
    """
    form = get_form(rules.form)
    df = df.reset_index(drop=True).copy()
    if "t" in df.columns:
        df = df.drop(columns="t")
    df["_row"] = np.arange(1, len(df) + 1)
    if pooled and rules.exclude_derived:
        df = df[~df["derived"].astype(bool)]
    if df.empty:
        raise DataError(f"{where}: no curves left to fit (derived curves are excluded from "
                        "pooled fits)")
    df["t"] = df["delay_value"].astype(float) + offset_for(df["delay_unit"], rules.offset)
    kept = []
    for cid, sub in df.groupby("curve", sort=False):
        sub = sub.sort_values("t")
        if rules.window is not None:
            pos = sub["t"][sub["t"] > 0]
            if pos.empty:
                raise DataError(f"{where}: curve {cid!r} has no t > 0 to anchor the window")
            dec = np.log10(np.where(sub["t"] > 0, sub["t"], np.nan) / pos.iloc[0])
            a, b = rules.window
            sub = sub[(dec >= a - 1e-9) & (dec <= b + 1e-9)]
        if len(sub) < 3:
            raise DataError(f"{where}: curve {cid!r} has {len(sub)} point(s) inside window "
                            f"{rules.window}; need at least 3")
        kept.append(sub)
    df = pd.concat(kept).reset_index(drop=True)
    if form.needs_positive_t:
        zero = df["t"].to_numpy() <= 0
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            row = df.iloc[i]
            raise DataError(
                f"{where}: curve {row['curve']!r}, row {int(row['_row'])}, column 'delay_value': "
                f"delay {row['delay_value']} gives t = 0, but form {form.name!r} needs t > 0; "
                "state an offset (e.g. --offset 1 for lag + 1) or a window (anchored at the "
                "first t > 0) that leaves it out")
    return df.drop(columns="_row")
