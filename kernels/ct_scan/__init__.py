"""CT-ODE working-memory scan: one public entry point, ``ct_scan``.

``backend="auto"`` picks the fastest available path: Triton on CUDA; on CPU the C++ extension
(float32/float64), which is compiled once and cached; numba when no compiler works; the pure-torch
loop (``ct_scan_reference``) otherwise. Each fallback is announced once. All backends share the
reference's signature and support gradients w.r.t. ``u``, ``gate``, ``w1`` and ``h0``.
"""

from __future__ import annotations

import torch

from .._common import KernelInputError, notice_once, triton_usable
from .reference import ct_scan_reference

__all__ = ["BACKENDS", "ct_scan", "ct_scan_reference", "select_backend"]

BACKENDS = ("auto", "triton", "cpp", "numba", "loop")


def _validate(u, gate, w1, h0):
    if not all(isinstance(x, torch.Tensor) for x in (u, gate, w1)) or not (
        h0 is None or isinstance(h0, torch.Tensor)
    ):
        raise KernelInputError("ct_scan: u, gate, w1 (and h0 if given) must be torch tensors")
    if u.dim() != 3:
        raise KernelInputError(f"ct_scan: u must be (B, T, D), got shape {tuple(u.shape)}")
    batch, _, dim = u.shape
    if gate.shape != u.shape:
        raise KernelInputError(
            f"ct_scan: gate shape {tuple(gate.shape)} does not match u shape {tuple(u.shape)}"
        )
    if not (w1.shape == (dim, dim) or w1.shape == (dim,)):
        raise KernelInputError(
            f"ct_scan: w1 must be ({dim}, {dim}) or ({dim},) for D={dim}, got {tuple(w1.shape)}"
        )
    if h0 is not None and h0.shape != (batch, dim):
        raise KernelInputError(f"ct_scan: h0 must be ({batch}, {dim}), got {tuple(h0.shape)}")
    tensors = {"u": u, "gate": gate, "w1": w1} | ({} if h0 is None else {"h0": h0})
    for name, x in tensors.items():
        if not x.is_floating_point():
            raise KernelInputError(f"ct_scan: {name} must be floating point, got {x.dtype}")
        if x.device != u.device:
            raise KernelInputError(f"ct_scan: {name} is on {x.device}, u is on {u.device}")


def _common_dtype(u, gate, w1, h0) -> torch.dtype:
    """The widest float dtype among the inputs (bf16 drive under autocast with fp32 W_1 -> fp32)."""
    dtype = torch.promote_types(torch.promote_types(u.dtype, gate.dtype), w1.dtype)
    return dtype if h0 is None else torch.promote_types(dtype, h0.dtype)


def select_backend(device: torch.device, dtype: torch.dtype, backend: str = "auto") -> str:
    """The backend that ``ct_scan`` will run for tensors on ``device`` with ``dtype``.

    Falls back (with a one-time notice) instead of raising when the requested path is missing.
    """
    if backend not in BACKENDS:
        raise KernelInputError(f"ct_scan: backend={backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "cpp"
    if backend == "triton":
        if triton_usable(device):
            return "triton"
        notice_once("ct_scan.triton", f"ct_scan: Triton cannot run on {device}; using the CPU path")
        backend = "cpp"
    if backend in ("cpp", "numba") and device.type != "cpu":
        notice_once(f"ct_scan.{backend}.{device.type}",
                    f"ct_scan: the {backend} path is CPU-only; using the torch loop on {device}")
        return "loop"
    if backend in ("cpp", "numba") and dtype not in (torch.float32, torch.float64):
        notice_once(f"ct_scan.{backend}.{dtype}",
                    f"ct_scan: the {backend} path takes float32/float64; using the torch loop "
                    f"for {dtype}")
        return "loop"
    if backend == "cpp":
        from .cpu import load_extension

        if load_extension() is not None:
            return "cpp"
        from . import cpu

        notice_once("ct_scan.cpp",
                    f"ct_scan: C++ extension unavailable ({cpu._ext_error}); trying numba")
        backend = "numba"
    if backend == "numba":
        from . import cpu

        if cpu.load_numba() is not None:
            return "numba"
        notice_once("ct_scan.numba",
                    f"ct_scan: numba unavailable ({cpu._numba_error}); using the torch loop")
        return "loop"
    return "loop"


@torch.compiler.assume_constant_result
def _resolved_path(device: torch.device, dtype: torch.dtype, backend: str) -> str:
    """``select_backend``, run eagerly when dynamo traces a caller: its answer is a constant."""
    return select_backend(device, dtype, backend)


def ct_scan(
    u: torch.Tensor,  # (B, T, D) input drive W_2 x_t + b
    gate: torch.Tensor,  # (B, T, D) step gate
    w1: torch.Tensor,  # (D, D) or (D,) diagonal
    h0: torch.Tensor | None = None,  # (B, D); zeros if None
    backend: str = "auto",
) -> torch.Tensor:  # (B, T, D) states h_1..h_T
    """Run ``h_t = h_{t-1} + gate_t * tanh(h_{t-1} @ w1.T + u_t)`` over t = 1..T.

    Parameters
    ----------
    u, gate : torch.Tensor
        ``(B, T, D)`` on one device. Non-contiguous inputs are copied, and mixed float dtypes are
        promoted to the widest (e.g. a bf16 drive under autocast with an fp32 ``w1`` runs in fp32
        and returns fp32); both are documented fix-ups, and gradients flow back in each input's
        own dtype.
    w1 : torch.Tensor
        ``(D, D)`` recurrent matrix, or ``(D,)`` for a diagonal W_1 (then ``h_{t-1} * w1``).
    h0 : torch.Tensor or None
        ``(B, D)`` initial state; zeros when ``None``.
    backend : {"auto", "triton", "cpp", "numba", "loop"}
        ``"auto"``: Triton on CUDA, C++ on CPU. A missing path falls back with a one-time notice.

    Returns
    -------
    torch.Tensor
        ``(B, T, D)`` states after each step.

    Raises
    ------
    KernelInputError
        Mismatched shapes or devices, non-float inputs, or an unknown backend.
    """
    _validate(u, gate, w1, h0)
    dtype = _common_dtype(u, gate, w1, h0)
    u, gate, w1 = u.to(dtype), gate.to(dtype), w1.to(dtype)  # no-ops when dtypes already agree
    h0 = None if h0 is None else h0.to(dtype)
    path = _resolved_path(u.device, u.dtype, backend)
    if path == "loop" or u.shape[1] == 0:
        return ct_scan_reference(u, gate, w1, h0)
    if h0 is None:
        h0 = u.new_zeros(u.shape[0], u.shape[2])  # (B, D)
    from .op import ct_scan_cpp, ct_scan_numba, ct_scan_triton

    if path == "triton":
        return ct_scan_triton(u, gate, w1, h0)

    if path == "cpp":
        return ct_scan_cpp(u, gate, w1, h0)
    return ct_scan_numba(u, gate, w1, h0)
