"""Checkpoints that rebuild their model, written atomically and read with ``weights_only=True``.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only, so that the safe
unpickler accepts it): ``format``, ``model_name``, ``model_args`` (config + data spec),
``experiment`` (the resolved config), ``model`` (state dict), ``optimizer``, ``step``,
``generator_states``, ``exposures``, ``train_seconds`` and ``torch_version``.

``last.pt`` is the newest; the one before it is kept as ``prev.pt``. :func:`load_latest` falls
back to ``prev.pt`` (with a warning) when ``last.pt`` is missing, truncated or empty, so a kill in
the middle of a save never leaves a run without a checkpoint. :func:`load_trained` is the one way
to get a trained run's model back: it checks the checkpoint against the run's ``config.json``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from cram.core.errors import CheckpointError, ConfigError, RunFolderError
from cram.core.identity import drop_retired
from cram.core.runs import CHECKPOINT_DIR, CONFIG_FILE, read_json

FORMAT = "cram-checkpoint-v1"
LAST, PREV = "last.pt", "prev.pt"
TMP_PREFIX, TMP_SUFFIX = ".last.", ".pt.tmp"
UNREADABLE_SUFFIX = ".unreadable"  # a last.pt that failed to load is renamed aside, not deleted


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write ``state`` as ``directory/last.pt`` atomically; the old ``last.pt`` becomes ``prev.pt``.

    The bytes go to a temp file that is fsynced and then renamed, so a kill or a full disk leaves
    the previous ``last.pt`` untouched (the temp file is removed on any error).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    last, prev = directory / LAST, directory / PREV
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        _save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return last


def _save(state: dict, tmp: str) -> None:
    """``torch.save`` with its write failures as an ``OSError`` that names the file.

    torch's zip writer reports a failed write (a full disk, an I/O error) as a ``RuntimeError``
    ("file write failed"); the trainer maps an ``OSError`` to a resource error (exit 3).
    """
    try:
        torch.save({"format": FORMAT, **state}, tmp)
    except RuntimeError as err:
        if "write" not in str(err).lower():
            raise
        try:
            usage = os.statvfs(os.path.dirname(tmp))
            full = usage.f_bavail * usage.f_frsize < (1 << 20)
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), tmp) from None


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temp checkpoints left by a killed save (call only while holding the run's lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating tensors in a (nested) state dict that hold NaN or inf."""
    bad, stack = [], [("", state)]
    while stack:
        prefix, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                bad.append(prefix)
        elif isinstance(obj, dict):
            stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items())
        elif isinstance(obj, (list, tuple)):
            stack.extend((f"{prefix}[{i}]", v) for i, v in enumerate(obj))
    return sorted(bad)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


def load_checkpoint(path: Path, expect_model: str | None = None) -> dict:
    """Load and validate a checkpoint; raise :class:`CheckpointError` naming file and problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty (zero-byte) checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError) as err:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint "
                              f"({_first_line(err)})") from None
    except Exception as err:  # the safe unpickler refuses foreign objects
        raise CheckpointError(f"{path}: not a cram checkpoint ({_first_line(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a cram checkpoint (format {found!r})")
    for key in ("model_name", "model_args", "model", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    if expect_model is not None and state["model_name"] != expect_model:
        raise CheckpointError(f"{path}: checkpoint holds model {state['model_name']!r}, "
                              f"this run is {expect_model!r}")
    return state


def load_latest(directory: Path, expect_model: str,
                warn: Callable[[str], None] = lambda msg: None) -> dict | None:
    """Load the newest loadable checkpoint in ``directory``: ``last.pt``, else ``prev.pt``.

    Returns None when the folder holds no checkpoint at all (a run killed before its first save
    restarts from step 0). A ``last.pt`` that fails to load is renamed to
    ``last.pt.unreadable`` once ``prev.pt`` has loaded, so the next save cannot rotate it into
    ``prev.pt``. Raises :class:`CheckpointError` naming both files when neither loads.
    """
    directory = Path(directory)
    last, prev = directory / LAST, directory / PREV
    if not last.exists() and not prev.exists():
        return None
    try:
        return load_checkpoint(last, expect_model)
    except CheckpointError as err:
        first = err
    try:
        state = load_checkpoint(prev, expect_model)
    except CheckpointError as err:
        raise CheckpointError(f"no usable checkpoint: {first}; and {err}") from None
    try:
        os.replace(last, last.with_name(LAST + UNREADABLE_SUFFIX))
    except FileNotFoundError:  # missing, or another rank moved it first
        pass
    warn(f"{first}; resuming from {prev} (step {int(state['step'])})")
    return state


def rebuild_model(state: dict):
    """Build the model a checkpoint describes and load its weights."""
    from cram.models import DataSpec, ModelConfig, build_model

    args = state["model_args"]
    cfg = drop_retired("model_config", args["config"], "checkpoint model arguments")
    cfg["attention_layers"] = tuple(cfg.get("attention_layers", ()))
    model = build_model(state["model_name"], ModelConfig(**cfg), DataSpec(**args["spec"]))
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise CheckpointError(f"checkpoint weights do not fit model {state['model_name']!r} "
                              f"({_first_line(err)})") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint weights do not fit model {state['model_name']!r}: "
                              f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model


class Trained(NamedTuple):
    """A trained run read back: its model (weights loaded), its config and the raw checkpoint."""

    model: torch.nn.Module
    config: object  # ExperimentConfig
    state: dict


def expected_model_args(config, vocab_size: int = 0) -> dict:
    """Return the ``model_args`` a model built from ``config`` (an ExperimentConfig) saves.

    ``vocab_size > 0``: a run on a token task of that vocabulary (config.json's ``task``).
    """
    import dataclasses

    from cram.models import DataSpec, token_spec

    d = config.data
    spec = token_spec(vocab_size) if vocab_size else DataSpec(d.n_keys, d.n_values,
                                                              d.key_encoding, d.key_dim)
    return {"config": dataclasses.asdict(config.model), "spec": dataclasses.asdict(spec)}


def with_default_fields(model_args: dict) -> dict:
    """``model_args`` with the model fields a checkpoint predates filled in at their defaults.

    A checkpoint saved before a ``ModelConfig`` field existed built its model as the default
    does (a new field is added off), so it is the same model; a record that does not build a
    ``ModelConfig`` is returned unchanged (and then differs, as it should).
    """
    import dataclasses

    from cram.models import ModelConfig

    config = model_args.get("config") if isinstance(model_args, dict) else None
    if not isinstance(config, dict):
        return model_args
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        config = drop_retired("model_config", config, "checkpoint")
    except ConfigError:  # a retired field at another value: compared as it is (and differs)
        return model_args
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    if set(fields) - known:
        return model_args
    try:
        full = dataclasses.asdict(ModelConfig(**fields))
    except Exception:  # noqa: BLE001 - an odd record is compared as it is
        return model_args
    return {**model_args, "config": full}


def load_trained(run_dir: Path, checkpoint: str = LAST) -> Trained:
    """Rebuild a run's model from ``run_dir/checkpoints/<checkpoint>`` and its config.json.

    Refuses (:class:`CheckpointError`) a checkpoint whose model name or model arguments differ
    from the run's ``config.json``, and (:class:`RunFolderError`) one whose recorded experiment
    (seed, every config field but ``train.steps``, the task) differs: a checkpoint dropped in
    from another run, even of the same size, is never reported as this run's. A folder written
    by a newer cram (schema) is refused too.
    """
    from cram.core.identity import check_same_experiment, refuse_newer_schema

    from .config import ExperimentConfig

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunFolderError(f"{run_dir}: no config.json; is this a cram run folder?")
    refuse_newer_schema(run_dir)
    saved = read_json(config_path)
    config = ExperimentConfig.from_dict(saved, source=str(config_path))
    path = run_dir / CHECKPOINT_DIR / checkpoint
    state = load_checkpoint(path, expect_model=saved.get("model"))
    task = saved.get("task") if isinstance(saved.get("task"), dict) else {}
    if _canon(with_default_fields(state["model_args"])) != _canon(
            expected_model_args(config, task.get("vocab_size", 0))):
        raise CheckpointError(f"{path}: model arguments differ from {config_path} "
                              "(a checkpoint of another size or data spec)")
    if "experiment" in state:
        check_same_experiment(saved, {**state["experiment"], "task": state.get("task")},
                              expected_name="config.json", found_name=f"checkpoint {checkpoint}",
                              where=str(run_dir), steps=False, task="task" in state,
                              hint="a checkpoint copied from another run is not this run's")
    return Trained(rebuild_model(state), config, state)


def _canon(obj) -> str:
    """Return key-order- and tuple/list-insensitive text of a JSON-like object."""
    return json.dumps(obj, sort_keys=True, default=list)
