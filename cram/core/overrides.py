"""``FIELD=VALUE`` overrides of frozen config dataclasses, checked against their type hints.

The parser behind ``--set``; the configs of every layer use it, so it lives in the core.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from cram.core.errors import ConfigError

#: integers must fit a signed 64-bit integer (numpy and torch store them so)
INT_LIMIT = 2**63


def coerce_value(field_type: Any, raw: str, name: str) -> Any:
    """``raw`` (command-line text) as a value of ``field_type``; ConfigError naming ``name``."""
    origin = typing.get_origin(field_type)
    if field_type is bool:
        low = raw.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"--set {name}={raw!r}: expected a boolean (true/false)")
    if field_type is int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"--set {name}={raw!r}: expected an integer (digits only, "
                              "no decimal point or exponent)") from None
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise ConfigError(f"--set {name}={raw!r}: integer out of range (|value| < 2**63)")
        return value
    if field_type is float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--set {name}={raw!r}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"--set {name}={raw!r}: expected a finite number (not inf or nan)")
        return value
    if field_type is str:
        return raw
    if origin in (tuple, list):
        args = typing.get_args(field_type)
        inner = args[0] if args else str
        items = [s for s in raw.replace(";", ",").split(",") if s.strip() != ""]
        values = [coerce_value(inner, s.strip(), name) for s in items]
        return tuple(values) if origin is tuple else values
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(field_type) if a is not type(None)]
        if raw.strip().lower() in {"none", "null"}:
            return None
        if len(args) == 1:  # Optional[X]: X's own message says what is wrong
            return coerce_value(args[0], raw, name)
        for a in args:
            try:
                return coerce_value(a, raw, name)
            except ConfigError:
                continue
        raise ConfigError(f"--set {name}={raw!r}: cannot be read as {field_type}")
    if origin is typing.Literal:
        choices = typing.get_args(field_type)
        if raw not in choices:
            raise ConfigError(f"--set {name}={raw!r}: choose one of {list(choices)}")
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return ``dataclasses.replace(config, ...)`` for ``FIELD=VALUE`` strings.

    Nested dataclass fields are addressed with dots (``data.length=512``). Unknown fields and values
    of the wrong type raise :class:`ConfigError` naming the field.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        name, raw = item.split("=", 1)
        config = _set_path(config, name.strip().split("."), raw, name.strip())
    return config


def _set_path(config: Any, path: list[str], raw: str, full: str) -> Any:
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"--set {full}: {path[0]!r} is not a config section")
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    head = path[0]
    if head not in fields:
        raise ConfigError(
            f"--set {full}: unknown field {head!r} of {type(config).__name__}; "
            f"known fields: {', '.join(sorted(fields))}"
        )
    if len(path) == 1:
        value = coerce_value(hints[head], raw, full)
    else:
        value = _set_path(getattr(config, head), path[1:], raw, full)
    return dataclasses.replace(config, **{head: value})
