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

from cram.core.errors import ConfigError
from cram.core.runs import CONFIG_FILE


def train(model: str | None, *, out: str | os.PathLike, task: Any = None,
          task_args: Sequence[str] | Mapping[str, Any] = (), preset: str = "demo", seed: int = 0,
          overrides: Sequence[str] = (), steps: int | None = None, resume: bool = False,
          restart: bool = False, progress: bool = True, argv: list[str] | None = None,
          trust_task: bool = False) -> Path:
    """Train ``model`` at ``preset`` on SRCD (``task=None``) or on ``task``; return the run folder.

    ``overrides`` are ``--set`` strings (``train.steps=100``). The task's ``train_defaults``
    (a token task: the ``"familiarity-queries"`` cost gate) replace the preset's, and the model
    variant's changes (``cram-ungated``: none) and the overrides win over both. ``resume``
    continues the run folder's recorded model (``model=None`` reads it) and task: a built-in
    task is rebuilt by name; a user's file or module task only when ``task`` names it again
    (checked against the recorded hash) or ``trust_task`` is set (``cram.tasks.record``).
    """
    from .train import train as train_run

    record, data = None, None
    if resume:
        model = model or _saved_model(Path(out))
        data, record = _resumed_task(Path(out), task, task_args, trust_task)
    elif task is not None:
        data, record = _load(task, task_args)
    if model is None:
        raise ConfigError("--model is required (except with --resume, which reads it)")
    overrides = list(overrides)
    if steps is not None and not resume:
        overrides.append(f"train.steps={steps}")
    config = resolved_config(model, preset, overrides, task=data)
    return train_run(model, config, out, seed=seed, preset=preset, resume=resume, argv=argv,
                     progress=progress, restart=restart, data=data, task_record=record,
                     steps=steps if resume else None)


def resolved_config(model: str, preset: str, overrides: Sequence[str], task: Any = None):
    """The ExperimentConfig a run of ``model`` at ``preset`` with ``overrides`` trains with.

    ``task`` (None: SRCD) brings its ``train_defaults`` (``cram.tasks.view``) over the preset's;
    the variant's changes and ``--set`` still win.
    """
    from cram.tasks.srcd_stream import SRCD
    from cram.tasks.view import training_task

    from .config import get_preset, resolve

    base = get_preset(preset)
    defaults = training_task(task if task is not None else SRCD(base.data)).train_defaults
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, **defaults))
    return resolve(model, base, list(overrides))


def asked_record(model: str, preset: str, seed: int, overrides: Sequence[str],
                 task: str | None = None, task_args: Sequence[str] = ()) -> dict:
    """The config.json record a fresh run with these arguments would write (for reuse checks)."""
    from cram.tasks import load_task
    from cram.tasks.record import task_record

    record, obj = None, None
    if task is not None:
        args = _arg_strings(task_args)
        obj = load_task(task, args)
        record = task_record(obj, task, dict(a.split("=", 1) for a in args))
    config = resolved_config(model, preset, overrides, task=obj)
    return {"model": model, "preset": preset, "seed": seed, **config.to_dict(), "task": record}


def _arg_strings(task_args) -> list[str]:
    return ([f"{k}={v}" for k, v in task_args.items()] if isinstance(task_args, Mapping)
            else list(task_args))


def _resumed_task(out: Path, task: Any, task_args, trust: bool) -> tuple[Any, dict | None]:
    """(task object, record) of a run to resume: the recorded task, loaded with consent."""
    from cram.tasks import check_task
    from cram.tasks.record import load_recorded_task

    record = saved_task_record(out)
    if record is None:
        if task is not None and (out / CONFIG_FILE).is_file():
            raise ConfigError(f"--task: {out} was trained on SRCD; --resume continues it "
                              "(start a new run for a task)")
        return None, None
    if task is not None and not isinstance(task, str):  # a Python object, as at the start
        check_task(task)
        found = {k: getattr(task, k, None) for k in ("name", "vocab_size", "n_library")}
        if any(str(found[k]) != str(record.get(k)) for k in found):
            raise ConfigError(f"task: {found} is not the task {out} was trained on "
                              f"({record.get('name')!r})")
        return task, record
    obj = load_recorded_task(record, spec=task, args=_arg_strings(task_args), trust=trust,
                             where=str(out), resuming=True)
    return obj, record


def _saved_model(out: Path) -> str | None:
    """The model name of a run folder's config.json (None if unreadable)."""
    model = _saved_config(out).get("model")
    return model if isinstance(model, str) else None


def _load(task: Any, task_args) -> tuple[Any, dict]:
    """(task object, config.json record) from a spec string or an object."""
    from cram.tasks import check_task, load_task
    from cram.tasks.record import task_record

    if isinstance(task, str):
        args = _arg_strings(task_args)
        obj = load_task(task, args)
        return obj, task_record(obj, task, dict(a.split("=", 1) for a in args))
    check_task(task)
    return task, task_record(task)


def saved_task_record(run_dir: Path) -> dict | None:
    """The ``task`` record of a run folder's config.json (None: an SRCD run or no folder)."""
    return _saved_config(run_dir).get("task")


def _saved_config(run_dir: Path) -> dict:
    """A run folder's config.json as a dict; {} when missing or unreadable.

    The trainer reports an unreadable config.json itself, naming the file.
    """
    try:
        saved = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def reload_task(record: dict, spec: str | None = None, args: list[str] | None = None,
                trust: bool = False, where: str = "the run") -> Any:
    """The task of a run's config.json ``task`` record (or ``spec``/``args`` given instead).

    Never imports a user's file or module that the caller did not name (``spec``) or trust
    (``trust``): see ``cram.tasks.record``.
    """
    from cram.tasks.record import load_recorded_task

    return load_recorded_task(record, spec=spec, args=list(args or []), trust=trust, where=where)


def run_task(run_dir: str | os.PathLike, config, spec: str | None = None,
             args: Sequence[str] = (), trust: bool = False) -> Any:
    """The task a run folder trained on, as the trainer holds it (``cram.tasks.view``).

    A run without a ``task`` record trained on SRCD with its config's ``data`` section; a
    recorded task is rebuilt with the user's consent (``reload_task``). ``spec`` names a task
    instead (``cram eval --task``); on an SRCD run it is refused.
    """
    from cram.core.errors import RunFolderError
    from cram.tasks.srcd_stream import SRCD
    from cram.tasks.view import training_task

    record = saved_task_record(Path(run_dir))
    if record is None and spec is not None:
        raise RunFolderError(f"{run_dir}: trained on SRCD; --task needs a run trained on a task")
    if record is None:
        return training_task(SRCD(config.data))
    return training_task(reload_task(record, spec, list(args), trust=trust, where=str(run_dir)))


def evaluate_run(run_dir: str | os.PathLike, overrides: Sequence[str] = (), *,
                 checkpoint: str = "last.pt", spec: str | None = None,
                 args: Sequence[str] = (), trust: bool = False,
                 attention_budget: float | None = None,
                 routes_of: str | os.PathLike | None = None) -> dict:
    """A run's checkpoint evaluated with hard routing on a fresh evaluation set (``cram eval``).

    ``overrides`` (``section.field=value``) change the evaluation set: its size and seed
    (``train.eval_sequences``, ``train.eval_seed``), length, recurrence. ``attention_budget``
    (CRAM only): at most that share of each evaluation batch's tokens read attention in
    each layer, the ones the router ranks highest (``Route.cap_attention``). ``routes_of``
    (CRAM only): another CRAM run folder; on every evaluation batch that run's last checkpoint
    chooses each layer's tiers and this run is routed by them (``Route.choices``), so the same
    tokens attend and only the weights differ. Returns ``{"run", "step", "task", "data",
    "attention_budget", "routes_of", **metrics}``; refuses evaluation data whose vocabulary
    differs from the model's. Never writes to either run folder.
    """
    import torch

    from cram.core.errors import ConfigError, RunFolderError
    from cram.core.overrides import apply_overrides
    from cram.models.routing import Route

    from .checkpoint import load_trained
    from .config import alias_override
    from .evaluate import evaluate

    route = Route("hard", attention_budget=attention_budget)  # checks the share first
    model, config, state = load_trained(Path(run_dir), checkpoint)
    if attention_budget is not None and not getattr(model, "consolidates", False):
        raise ConfigError(f"{run_dir}: --attention-budget caps a CRAM router's choice; this run's "
                          f"model ({model.family}) has none")
    config = apply_overrides(config, [alias_override(o) for o in overrides])
    task = run_task(run_dir, config, spec, args, trust=trust)
    reference = None if routes_of is None else routing_reference(Path(routes_of), model,
                                                                 attention_budget)
    changed = {k: (v, getattr(model.spec, k)) for k, v in task.data_spec.items()
               if v != getattr(model.spec, k)}
    if changed:
        what = ", ".join(f"{k} {v} (the model's: {m})" for k, (v, m) in changed.items())
        raise RunFolderError(f"{spec or run_dir}: the evaluation data's vocabulary differs "
                             f"from the model's: {what}")
    torch.set_num_threads(config.train.threads)
    eval_set = task.eval_set(config.train.eval_sequences, config.train.eval_seed)
    ev = evaluate(model, eval_set, config.train.eval_batch_size, torch.device("cpu"), task=task,
                  route=route, routes_from=reference)
    return {"run": str(run_dir), "step": int(state["step"]), "task": task.name,
            "data": dataclasses.asdict(config.data), "attention_budget": attention_budget,
            "routes_of": None if routes_of is None else str(routes_of), **ev.metrics}


def routing_reference(run_dir: Path, model, attention_budget: float | None):
    """The last checkpoint of CRAM run ``run_dir``, checked to route ``model`` (``--routes-of``).

    Both must be CRAM models with as many layers and the same data spec (vocabulary, lengths);
    a budget and given routes do not combine.
    """
    from cram.core.errors import ConfigError

    from .checkpoint import load_trained

    if attention_budget is not None:
        raise ConfigError("--routes-of and --attention-budget: choose one (given routes replace "
                          "the router's choice that a budget caps)")
    reference, _, _ = load_trained(run_dir, "last.pt")
    for who, m in (("the evaluated run", model), (str(run_dir), reference)):
        if not getattr(m, "consolidates", False):
            raise ConfigError(f"--routes-of: {who} is a {m.family} model; given routes need two "
                              "CRAM runs")
    if len(reference.blocks) != len(model.blocks) or reference.spec != model.spec:
        raise ConfigError(f"--routes-of {run_dir}: {len(reference.blocks)} layers and data "
                          f"{reference.spec}, the evaluated run {len(model.blocks)} and "
                          f"{model.spec}; they must match")
    return reference.eval()
