"""CT-ODE working-memory scan: one public entry point, ``ct_scan``.

``backend="auto"`` picks the fastest available path (Triton on CUDA, the C++ extension on CPU when
it builds, otherwise the pure-torch reference). All backends share the reference's signature.
"""

from __future__ import annotations

import torch

from .reference import ct_scan_reference

__all__ = ["ct_scan", "ct_scan_reference"]


def ct_scan(
    u: torch.Tensor,  # (B, T, D)
    gate: torch.Tensor,  # (B, T, D)
    w1: torch.Tensor,  # (D, D) or (D,)
    h0: torch.Tensor | None = None,  # (B, D)
    backend: str = "auto",
) -> torch.Tensor:  # (B, T, D)
    return ct_scan_reference(u, gate, w1, h0)
