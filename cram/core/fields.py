"""Config fields checked from their type hints and their metadata: one validator for every config.

A config dataclass declares what each field may hold: the type hint says the kind (``bool``,
``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[int, ...]``) and
:func:`config_field` adds the bounds as field metadata::

    @dataclass(frozen=True)
    class Cfg:
        steps: int = config_field(700, min=1)
        rate: float = config_field(0.05, gt=0, lt=1)  # or range=(0, 1) for [0, 1]
        mode: Literal["a", "b"] = "a"

        def __post_init__(self) -> None:
            check_fields(self)  # then only the checks that join two fields

:func:`check_fields` raises :class:`~cram.core.errors.ConfigError` naming the class, the field
and what it must be (``Cfg.steps=0: must be an integer >= 1``). :func:`expected` answers, for one
hint and one value, what the value should be (``None`` if it is); ``ExperimentConfig.from_dict``
asks it of every field of a config.json before the dataclasses are built. The metadata never
changes a field's default, so ``dataclasses.asdict`` is the same with or without it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Any, Literal

from cram.core.errors import ConfigError

#: metadata keys :func:`check_fields` reads (``config_field``'s keyword arguments)
BOUND_KEYS = ("min", "gt", "max", "lt")


def config_field(default: Any = dataclasses.MISSING, *, min: float | None = None,
                 gt: float | None = None, max: float | None = None, lt: float | None = None,
                 range: tuple[float, float] | None = None, finite: bool = False,
                 pattern: tuple[str, str] | None = None) -> Any:
    """``dataclasses.field(default=default)`` with the bounds :func:`check_fields` enforces.

    Parameters
    ----------
    default
        The field's default (unchanged by the metadata).
    min, gt, max, lt
        Bounds of a number: ``>= min``, ``> gt``, ``<= max``, ``< lt``.
    range
        ``(lo, hi)``: the closed interval ``[lo, hi]`` (``min=lo, max=hi``).
    finite
        A number must also be finite (no inf or nan).
    pattern
        ``(regex, reads_as)``: a string must match ``regex`` in full; ``reads_as`` says what it
        must be in the error message (``"auto, cpu, cuda[:N] or mps"``).
    """
    if range is not None:
        min, max = range
    meta = {k: v for k, v in (("min", min), ("gt", gt), ("max", max), ("lt", lt),
                              ("finite", finite or None), ("pattern", pattern)) if v is not None}
    return dataclasses.field(default=default, metadata=meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def expected(hint: Any, value: Any, *, null: str = "null") -> str | None:
    """What ``value`` should be to be a value of ``hint`` (``"an integer"``), ``None`` if it is.

    ``bool`` wants a bool, ``int`` an integer (not a bool), ``float`` any real number, ``str`` a
    string, ``Literal[...]`` one of its values (of the same type), ``X | None`` an X or None
    (``null`` names None in the answer), ``tuple[X, ...]``/``list[X]`` a list or tuple of X. Any
    other hint is left to the class that declares it (``None``).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if _is_int(value) else "an integer"
    if hint is float:
        return None if _is_number(value) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if origin is Literal:
        ok = any(type(value) is type(a) and value == a for a in args)
        return None if ok else f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        wants = [expected(a, value, null=null) for a in args if a is not type(None)]
        if None in wants:
            return None
        return " or ".join([*wants, null] if type(None) in args else wants)
    if origin in (tuple, list):
        ok = isinstance(value, (list, tuple)) and all(
            expected(args[0], v, null=null) is None for v in value)
        return None if ok else ("a list of integers" if args[0] is int else "a list")
    return None  # a type the declaring class checks itself


def _bounds_text(meta: typing.Mapping[str, Any]) -> str:
    """``">= 1"``, ``"> 0"`` or ``"in (0, 1]"`` for the bounds in ``meta`` ("" if none)."""
    lo = ("[", meta["min"]) if "min" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["max"]) if "max" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""


def _in_bounds(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    if meta.get("finite") and not math.isfinite(value):
        return False
    return all(not ((key == "min" and not value >= bound) or (key == "gt" and not value > bound)
                    or (key == "max" and not value <= bound) or (key == "lt" and not value < bound))
               for key, bound in meta.items() if key in BOUND_KEYS)


def requirement(hint: Any, meta: typing.Mapping[str, Any]) -> str:
    """What a field of ``hint`` with metadata ``meta`` must do: ``"be an integer >= 1"``."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [hint]
    base = inner[0] if len(inner) == 1 else hint
    bounds = _bounds_text(meta)
    if "pattern" in meta:
        text = f"be {meta['pattern'][1]}"
    elif base is float and bounds.startswith("in "):
        text = f"lie {bounds}"
    elif base in (int, float):
        kind = "an integer" if base is int else "a finite number" if meta.get("finite") \
            else "a number"
        text = f"be {kind} {bounds}".rstrip()
    else:
        text = f"be {expected(base, object(), null='None')}"
    return f"{text} or None" if optional else text


@functools.lru_cache(maxsize=None)
def _hints(klass: type) -> dict[str, Any]:
    return typing.get_type_hints(klass)


def field_error(obj: Any, name: str) -> str | None:
    """Why field ``name`` of dataclass ``obj`` is invalid (one line), ``None`` if it is valid."""
    f = obj.__dataclass_fields__[name]
    hint, value, meta = _hints(type(obj))[name], getattr(obj, name), f.metadata
    ok = expected(hint, value) is None
    if ok and _is_number(value):
        ok = _in_bounds(value, meta)
    if ok and isinstance(value, str) and "pattern" in meta:
        ok = re.fullmatch(meta["pattern"][0], value) is not None
    if ok:
        return None
    return f"{type(obj).__name__}.{name}={value!r}: must {requirement(hint, meta)}"


def check_fields(obj: Any) -> None:
    """Check every field of dataclass ``obj`` against its type hint and its metadata.

    Raises
    ------
    ConfigError
        For the first field that fails: ``"Class.field=value: must be an integer >= 1"``.
    """
    for f in dataclasses.fields(obj):
        err = field_error(obj, f.name)
        if err is not None:
            raise ConfigError(err)
