"""The fast scans as torch custom operators: one graph node each way for ``torch.compile``.

``cram::ct_scan_forward`` and ``cram::ct_scan_backward`` run the path named by ``path``
("triton", "cpp" or "numba"; chosen by ``select_backend``). Autograd joins them: the forward keeps
``(gate, w1, h0, h, a)`` and the backward walks time once in reverse. Being operators (not
``autograd.Function`` s around a pybind11 call), they carry shape functions (``register_fake``),
so dynamo traces a model through the scan without a graph break, and the same code runs eager.
"""

from __future__ import annotations

import torch

__all__ = ["ct_scan_cpp", "ct_scan_numba", "ct_scan_triton", "scan"]


def _paths(path: str):
    if path == "triton":
        from .triton import triton_backward, triton_forward

        return triton_forward, triton_backward
    if path == "cpp":
        from .cpu import cpp_backward, cpp_forward

        return cpp_forward, cpp_backward
    if path == "numba":
        from .cpu import numba_backward, numba_forward

        return numba_forward, numba_backward
    raise ValueError(f"ct_scan: no kernel path {path!r}")


@torch.library.custom_op("cram::ct_scan_forward", mutates_args=())
def ct_scan_forward(u: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor, h0: torch.Tensor,
                    path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, a)``: states (B, T, D) and ``a = tanh(z)`` (B, T, D; fp32 on the Triton path)."""
    return _paths(path)[0](u, gate, w1, h0)


@ct_scan_forward.register_fake
def _forward_shapes(u, gate, w1, h0, path):
    a_dtype = torch.float32 if path == "triton" else u.dtype
    return torch.empty_like(u), torch.empty(u.shape, dtype=a_dtype, device=u.device)


@torch.library.custom_op("cram::ct_scan_backward", mutates_args=())
def ct_scan_backward(grad_h: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor,
                     h0: torch.Tensor, h: torch.Tensor, a: torch.Tensor,
                     path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(du, dgate, dw1, dh0)`` from ``grad_h`` (B, T, D) and what the forward kept."""
    return _paths(path)[1](grad_h, gate, w1, h0, h, a)


@ct_scan_backward.register_fake
def _backward_shapes(grad_h, gate, w1, h0, h, a, path):
    return (torch.empty_like(gate), torch.empty_like(gate), torch.empty_like(w1),
            torch.empty_like(h0))


def _keep_for_backward(ctx, inputs, output):
    _, gate, w1, h0, path = inputs
    h, a = output
    ctx.save_for_backward(gate, w1, h0, h, a)
    ctx.path = path


def _backward(ctx, grad_h, grad_a):
    # a = tanh(z) is kept for the backward only: nothing downstream reads it, so grad_a is None
    gate, w1, h0, h, a = ctx.saved_tensors
    du, dgate, dw1, dh0 = ct_scan_backward(grad_h, gate, w1, h0, h, a, ctx.path)
    return du, dgate, dw1, dh0, None


ct_scan_forward.register_autograd(_backward, setup_context=_keep_for_backward)


def scan(u, gate, w1, h0, path: str) -> torch.Tensor:
    """States ``h`` (B, T, D) of the scan on ``path``; inputs validated, one dtype and device."""
    return ct_scan_forward(u, gate, w1, h0, path)[0]


def ct_scan_cpp(u, gate, w1, h0):
    """C++ scan; inputs already validated, same dtype, ``h0`` a tensor. Returns (B, T, D)."""
    from .cpu import load_extension, unavailable_reason

    if load_extension() is None:
        raise RuntimeError(f"C++ ct_scan extension unavailable: {unavailable_reason('cpp')}")
    return scan(u, gate, w1, h0, "cpp")


def ct_scan_numba(u, gate, w1, h0):
    """Numba scan; inputs validated, float32/float64, on CPU. Returns (B, T, D)."""
    from .cpu import load_numba, unavailable_reason

    if load_numba() is None:
        raise RuntimeError(f"numba ct_scan unavailable: {unavailable_reason('numba')}")
    return scan(u, gate, w1, h0, "numba")


def ct_scan_triton(u, gate, w1, h0):
    """Triton scan; inputs validated, one dtype, one device, ``h0`` a tensor. Returns (B, T, D)."""
    return scan(u, gate, w1, h0, "triton")
