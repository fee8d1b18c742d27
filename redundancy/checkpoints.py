"""GPT-2 checkpoints in the trainer's format (:mod:`cram.consolidation.checkpoint`).

A checkpoint is the trainer's dict: ``format``, ``model_name`` (``"gpt2"``), ``model_args`` (the
:class:`~cram.redundancy.gpt2.GPT2Config` fields), ``model`` (state dict) and ``step``, plus plain
extras (``tokenizer``, ``val_loss``). It is written by the trainer's atomic writer and read by its
validating loader (``weights_only=True``); only the rebuild of the model is GPT-2's own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from cram.consolidation.checkpoint import load_checkpoint, save_checkpoint
from cram.core.errors import CheckpointError
from cram.redundancy.gpt2 import GPT2, GPT2Config

MODEL_NAME = "gpt2"


def save_gpt2_checkpoint(path: str | os.PathLike, model: GPT2, step: int, **extra) -> Path:
    """Write ``model`` at ``step`` to ``path`` in the trainer's checkpoint format.

    Parameters
    ----------
    path : path-like
        The file to write (for example ``checkpoints/step_000020.pt``); its folder is created.
    model : GPT2
        The model; its config becomes ``model_args``.
    step : int
        Training step of the weights.
    **extra
        Plain data (numbers, strings, lists, dicts, tensors) stored beside the weights.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        state = {"model_name": MODEL_NAME, "model_args": dataclasses.asdict(model.config),
                 "model": model.state_dict(), "step": int(step), **extra}
        written = save_checkpoint(staging, state)  # the trainer's atomic writer: staging/last.pt
        os.replace(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_gpt2_checkpoint(path: str | os.PathLike) -> tuple[GPT2, dict]:
    """Rebuild the GPT-2 a checkpoint describes.

    Returns
    -------
    model : GPT2
        In eval mode, with the saved weights.
    extra : dict
        Everything else in the checkpoint (``step``, ``tokenizer``, ``val_loss``, ...).

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable, not a GPT-2 checkpoint, or its weights do not fit.
    """
    path = Path(path)
    state = load_checkpoint(path, expect_model=MODEL_NAME)
    try:
        model = GPT2(GPT2Config(**state["model_args"]))
    except TypeError as err:
        raise CheckpointError(f"{path}: model_args do not fit GPT2Config ({err})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match model_args: {err}") from None
    extra = {k: v for k, v in state.items() if k not in ("format", "model_args", "model")}
    return model.eval(), extra
