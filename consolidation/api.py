"""``cram.train(model, task=..., preset=..., out=...)``: train on SRCD or on a token task.

The one function behind ``cram train`` (with or without ``--task``) and the Python API. A task
is a built-in name, ``FILE.py:FACTORY``, ``MODULE:FACTORY`` (loaded and checked by
``cram.tasks.load_task`` with ``task_args``) or a task object (checked by ``check_task``). Every
bad-task error is raised before a run folder exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cram.core.runs import CONFIG_FILE

from .tokens import TOKEN_COST_GATE, reload_task, task_record


def train(model: str, *, out: str | os.PathLike, task: Any = None,
          task_args: Sequence[str] | Mapping[str, Any] = (), preset: str = "demo", seed: int = 0,
          overrides: Sequence[str] = (), steps: int | None = None, resume: bool = False,
          restart: bool = False, progress: bool = True, argv: list[str] | None = None) -> Path:
    """Train ``model`` at ``preset`` on SRCD (``task=None``) or on ``task``; return the run folder.

    ``overrides`` are ``--set`` strings (``train.steps=100``). On a token task the attention cost
    gate defaults to ``"familiarity-queries"`` unless the model variant sets its own
    (``cram-ungated``: none) or an override changes it. ``resume`` reloads
    the task recorded in the run's config.json when ``task`` is not given.
    """
    from .config import get_preset, resolve
    from .train import train as train_run

    record, data = None, None
    if task is None and resume:
        record = _saved_task(Path(out))
        data = reload_task(record) if record is not None else None
    elif task is not None:
        data, record = _load(task, task_args)
    overrides = list(overrides)
    if steps is not None and not resume:
        overrides.append(f"train.steps={steps}")
    base = get_preset(preset)
    if data is not None:  # the token default replaces the preset's; variants and --set still win
        base = dataclasses.replace(base, train=dataclasses.replace(base.train,
                                                                   cost_gate=TOKEN_COST_GATE))
    config = resolve(model, base, overrides)
    return train_run(model, config, out, seed=seed, preset=preset, resume=resume, argv=argv,
                     progress=progress, restart=restart, data=data, task_record=record,
                     steps=steps if resume else None)


def _load(task: Any, task_args) -> tuple[Any, dict]:
    """(task object, config.json record) from a spec string or an object."""
    from cram.tasks import check_task, load_task

    if isinstance(task, str):
        args = ([f"{k}={v}" for k, v in task_args.items()] if isinstance(task_args, Mapping)
                else list(task_args))
        obj = load_task(task, args)
        return obj, task_record(obj, task, dict(a.split("=", 1) for a in args))
    check_task(task)
    return task, task_record(task)


def _saved_task(run_dir: Path) -> dict | None:
    """The ``task`` record of a run folder's config.json (None: an SRCD run or no folder)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # the trainer reports an unreadable config.json itself
    return saved.get("task") if isinstance(saved, dict) else None
