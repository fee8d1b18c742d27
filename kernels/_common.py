"""Helpers shared by the kernels: input errors, one-time fallback notices, device checks."""

from __future__ import annotations

import os
import sys
import warnings

from cram.core.errors import CramError

_NOTICES: set[str] = set()


class KernelInputError(CramError, ValueError):
    """A kernel got tensors of the wrong shape, dtype or device, or bad routed indices."""


class KernelFallbackWarning(RuntimeWarning):
    """A faster path was unavailable and a slower one ran instead (said once per reason)."""


def notice_once(key: str, message: str) -> None:
    """Warn once per process per ``key`` that a fallback path runs; also printed to stderr."""
    if key in _NOTICES:
        return
    _NOTICES.add(key)
    warnings.warn(message, KernelFallbackWarning, stacklevel=3)
    print(f"cram.kernels: {message}", file=sys.stderr, flush=True)


def sync_device(device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere. For wall-clock timings."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def triton_usable(device) -> bool:
    """True when a Triton kernel can launch for tensors on ``device``.

    That is a CUDA device, or any device under ``TRITON_INTERPRET=1`` (the interpreter runs on CPU
    tensors through NumPy; tests use it).
    """
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means no Triton
        return False
    if getattr(device, "type", str(device)) == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
