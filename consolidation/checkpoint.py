"""Checkpoints that rebuild their model, written atomically and read with ``weights_only=True``.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only, so that the safe
unpickler accepts it): ``format``, ``model_name``, ``model_args`` (config + data spec),
``experiment`` (the resolved config), ``model`` (state dict), ``optimizer``, ``step``,
``generator_state``, ``exposures`` and ``torch_version``. ``last.pt`` is the newest; the one before
it is kept as ``prev.pt``, so a checkpoint truncated by a kill never leaves the run without one.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import torch

from cram.core.errors import CheckpointError

FORMAT = "cram-checkpoint-v1"


def save_checkpoint(directory: Path, state: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    last, prev = directory / "last.pt", directory / "prev.pt"
    fd, tmp = tempfile.mkstemp(prefix=".last.", suffix=".pt.tmp", dir=directory)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return last


def load_checkpoint(path: Path, expect_model: str | None = None) -> dict:
    """Load and validate a checkpoint; raise :class:`CheckpointError` naming the file and problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    except Exception as err:  # the safe unpickler refuses foreign objects
        raise CheckpointError(f"{path}: not a cram checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cram checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    for key in ("model_name", "model_args", "model", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    if expect_model is not None and state["model_name"] != expect_model:
        raise CheckpointError(f"{path}: checkpoint holds model {state['model_name']!r}, "
                              f"this run is {expect_model!r}")
    return state


def rebuild_model(state: dict):
    """The model a checkpoint describes, with its weights loaded."""
    from cram.models import DataSpec, ModelConfig, build_model

    args = state["model_args"]
    cfg = dict(args["config"])
    cfg["attention_layers"] = tuple(cfg.get("attention_layers", ()))
    model = build_model(state["model_name"], ModelConfig(**cfg), DataSpec(**args["spec"]))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint weights do not fit model {state['model_name']!r}: "
                              f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model
