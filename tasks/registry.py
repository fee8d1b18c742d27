"""Built-in tasks by name, and user tasks from ``FILE.py:FACTORY`` or ``MODULE:FACTORY``.

``load_task(spec, args)`` is what ``cram train --task SPEC --task-arg key=value`` will call. A
spec without ``:`` names a built-in task. ``key=value`` strings are coerced by the type hints of
the factory's parameters (built-ins: of their config dataclass), so ``length=128`` arrives as an
int. Every failure raises :class:`TaskLoadError` with one line naming the file, the factory or
the argument.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cram.core.errors import ConfigError, CramError
from cram.core.overrides import coerce_value

from .batch import TaskLoadError
from .mqar import MQARConfig, MQARTask
from .phrases import PhrasesConfig, PhrasesTask
from .protocol import check_task
from .recall import RecallConfig, RecallTask
from .srcd import srcd_task
from .srcd_stream import SRCDConfig


@dataclasses.dataclass(frozen=True)
class _Builtin:
    summary: str
    build: Callable[..., Any]
    config_type: type | None  # fields a --task-arg may set, with their types


def _recall(marked: bool) -> Callable[..., RecallTask]:
    return lambda **kw: RecallTask(RecallConfig(marked=marked, **kw))


BUILTIN: dict[str, _Builtin] = {
    "recall-unmarked": _Builtin("multi-query associative recall, queries not marked (library "
                                "share 0.5)", _recall(False), RecallConfig),
    "recall-marked": _Builtin("the same recall with a QUERY token before each query",
                              _recall(True), RecallConfig),
    "phrases": _Builtin("sentences with recurring library phrases and repeated novel phrases",
                        lambda **kw: PhrasesTask(PhrasesConfig(**kw)), PhrasesConfig),
    "mqar": _Builtin("Zoology's MQAR: stores first, power-law query gaps (library share 0)",
                     lambda **kw: MQARTask(MQARConfig(**kw)), MQARConfig),
    "srcd": _Builtin("SRCD in the token view (signal and dynamics loss as the task's extra)",
                     srcd_task, None),
}


def list_tasks() -> dict[str, str]:
    """Built-in task names and their one-line summaries."""
    return {name: b.summary for name, b in BUILTIN.items()}


def get_task(name: str, **kwargs) -> Any:
    """Build a built-in task; ``kwargs`` are its config fields (typed values, not strings)."""
    if name not in BUILTIN:
        raise TaskLoadError(f"--task {name!r}: unknown built-in task; known: "
                            f"{', '.join(BUILTIN)} (or FILE.py:FACTORY, MODULE:FACTORY)")
    try:
        return BUILTIN[name].build(**kwargs)
    except TypeError as err:
        raise TaskLoadError(f"--task {name}: {err}") from err


def load_task(spec: str, args: Sequence[str] | Mapping[str, str] = (), check: bool = True) -> Any:
    """Resolve ``spec``, build the task with ``args`` and (by default) ``check_task`` it.

    Parameters
    ----------
    spec : str
        A built-in name, ``path/to/file.py:FACTORY`` or ``package.module:FACTORY``.
    args : sequence of "key=value" strings, or a mapping of key to string
        Passed to the factory as keyword arguments after coercion.
    check : bool
        Run :func:`check_task` on the result (one sampled batch, one eval batch).
    """
    pairs = parse_task_args(args)
    if ":" not in spec:
        hints = _config_hints(spec)
        task = get_task(spec, **{k: _coerce_arg(hints.get(k), k, v) for k, v in pairs.items()})
    else:
        factory = _resolve(spec)
        task = _call_factory(spec, factory, pairs)
    if check:
        check_task(task)
    return task


def parse_task_args(args: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``--task-arg`` values (``["k=v", ...]`` or a mapping) as ``{k: v}``, each checked."""
    if isinstance(args, Mapping):
        return {str(k): str(v) for k, v in args.items()}
    out = {}
    for item in args:
        if "=" not in item:
            raise TaskLoadError(f"--task-arg {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = raw
    return out


def _config_hints(name: str) -> dict[str, Any]:
    if name not in BUILTIN:
        get_task(name)  # raises the unknown-task error
    config_type = BUILTIN[name].config_type
    if config_type is None and name == "srcd":
        config_type = SRCDConfig
        return {**typing.get_type_hints(config_type), "marked": bool, "signal_weight": float}
    return typing.get_type_hints(config_type) if config_type else {}


def _coerce_arg(hint: Any, key: str, raw: str) -> Any:
    if hint is None or hint is Any or hint is inspect.Parameter.empty:
        return raw
    try:
        return coerce_value(hint, raw, key)
    except ConfigError:
        name = getattr(hint, "__name__", str(hint))
        raise TaskLoadError(f"--task-arg {key}={raw!r}: expected {name}") from None


def _resolve(spec: str) -> Callable[..., Any]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TaskLoadError(f"--task {spec!r}: expected FILE.py:FACTORY or MODULE:FACTORY")
    module = _load_file(target) if target.endswith(".py") else _load_module(target)
    factory = getattr(module, attr, None)
    if factory is None:
        known = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise TaskLoadError(f"--task {spec}: {target} has no {attr!r}; callables there: "
                            f"{', '.join(known) or 'none'}")
    if not callable(factory):
        raise TaskLoadError(f"--task {spec}: {attr!r} is a {type(factory).__name__}, not a "
                            "factory (a callable that returns the task)")
    return factory


def _load_file(path: str):
    file = Path(path).expanduser()
    if not file.is_file():
        raise TaskLoadError(f"--task {path}: no such file")
    name = f"cram_user_task_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise TaskLoadError(f"--task {path}: importing it raised {type(err).__name__}: {err}") \
            from err
    return module


def _load_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise TaskLoadError(f"--task {name}: no module {err.name!r} (a file needs .py)") from err


def _call_factory(spec: str, factory: Callable[..., Any], pairs: dict[str, str]) -> Any:
    try:
        sig = inspect.signature(factory)
        hints = typing.get_type_hints(factory)
    except (TypeError, ValueError, NameError):
        sig, hints = None, {}
    if sig is not None:
        params = sig.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in pairs if k not in params and not takes_any]
        if unknown:
            raise TaskLoadError(f"--task {spec}: no parameter {unknown[0]!r}; it takes "
                                f"{', '.join(params) or 'no arguments'}")
    kwargs = {k: _coerce_arg(hints.get(k), k, v) for k, v in pairs.items()}
    try:
        return factory(**kwargs)
    except CramError:
        raise
    except Exception as err:
        raise TaskLoadError(f"--task {spec}: the factory raised {type(err).__name__}: {err}") \
            from err
