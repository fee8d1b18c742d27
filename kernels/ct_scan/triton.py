"""Triton CT-ODE scan: sequential over time, parallel over batch.

Also parallel over channels when W_1 is diagonal. Forward and a hand-written backprop through
time (derivation in ``README.md``), joined for autograd and ``torch.compile`` by ``op.py``.

Full W_1: one program per sequence holds W_1 (BLOCK_D x BLOCK_D) in registers, so this path is
meant for D <= 128. Diagonal W_1: one program per (sequence, block of channels). State and math are
fp32 whatever the input dtype; ``h`` is stored in the input dtype, ``a = tanh(z)`` in fp32 for the
backward. ``dW_1`` is one GEMM over all steps, done by torch after the kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    # tanh(x) = 1 - 2 / (exp(2x) + 1): exp overflow gives +1, underflow gives -1, no NaN
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _fwd_kernel(u_ptr, g_ptr, w_ptr, h0_ptr, h_ptr, a_ptr, T, D,
                DIAGONAL: tl.constexpr, BLOCK_D: tl.constexpr):
    # u, g, h: (B, T, D) contiguous; a: (B, T, D) fp32; w: (D, D) row-major W or (D,); h0: (B, D)
    b = tl.program_id(0).to(tl.int64)
    cb = tl.program_id(1)
    d = cb * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    dmask = d < D
    h = tl.load(h0_ptr + b * D + d, mask=dmask, other=0.0).to(tl.float32)  # (BLOCK_D,)
    if DIAGONAL:
        w = tl.load(w_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        wmask = dmask[:, None] & dmask[None, :]
        w = tl.load(w_ptr + d[:, None] * D + d[None, :], mask=wmask, other=0.0).to(tl.float32)
    base = b * T * D
    for t in range(T):
        off = base + t * D + d
        u = tl.load(u_ptr + off, mask=dmask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + off, mask=dmask, other=0.0).to(tl.float32)
        if DIAGONAL:
            z = h * w + u
        else:
            z = tl.sum(w * h[None, :], axis=1) + u  # z_i = sum_j W_ij h_j + u_i
        a = _tanh(z)
        h = h + g * a
        tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=dmask)
        tl.store(a_ptr + off, a, mask=dmask)


@triton.jit
def _bwd_kernel(go_ptr, g_ptr, w_ptr, a_ptr, dz_ptr, dg_ptr, dh0_ptr, T, D,
                DIAGONAL: tl.constexpr, BLOCK_D: tl.constexpr):
    # go, g: (B, T, D); a, dz, dg: (B, T, D) fp32; dh0: (B, D) fp32
    b = tl.program_id(0).to(tl.int64)
    cb = tl.program_id(1)
    d = cb * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    if DIAGONAL:
        w = tl.load(w_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        wmask = dmask[:, None] & dmask[None, :]
        w = tl.load(w_ptr + d[:, None] * D + d[None, :], mask=wmask, other=0.0).to(tl.float32)
    e = tl.zeros([BLOCK_D], dtype=tl.float32)  # dL/dh_t carried from later steps
    base = b * T * D
    for i in range(T):
        t = T - 1 - i
        off = base + t * D + d
        go = tl.load(go_ptr + off, mask=dmask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + off, mask=dmask, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + off, mask=dmask, other=0.0)
        e = e + go
        dz = e * g * (1.0 - a * a)
        tl.store(dg_ptr + off, e * a, mask=dmask)
        tl.store(dz_ptr + off, dz, mask=dmask)
        if DIAGONAL:
            e = e + dz * w
        else:
            e = e + tl.sum(dz[:, None] * w, axis=0)  # e_j += sum_i dz_i W_ij
    tl.store(dh0_ptr + b * D + d, e, mask=dmask)


def _grid_block(dim: int, diagonal: bool) -> tuple[int, int]:
    if diagonal:
        block = min(triton.next_power_of_2(dim), 128)
        return block, triton.cdiv(dim, block)
    return triton.next_power_of_2(dim), 1


def triton_forward(u, gate, w1, h0):
    """Forward: ``(h, a)``, ``h`` (B, T, D) in the input dtype, ``a = tanh(z)`` (B, T, D) fp32."""
    batch, steps, dim = u.shape
    diagonal = w1.dim() == 1
    u, gate, w1, h0 = (x.contiguous() for x in (u, gate, w1, h0))
    h = torch.empty_like(u)  # (B, T, D)
    a = torch.empty(u.shape, device=u.device, dtype=torch.float32)  # (B, T, D)
    block, n_blocks = _grid_block(dim, diagonal)
    if steps > 0:
        _fwd_kernel[(batch, n_blocks)](u, gate, w1, h0, h, a, steps, dim,
                                       DIAGONAL=diagonal, BLOCK_D=block)
    return h, a


def triton_backward(grad_h, gate, w1, h0, h, a):
    """Backprop through time: ``(du, dgate, dw1, dh0)`` in the inputs' dtypes."""
    batch, steps, dim = gate.shape
    diagonal = w1.dim() == 1
    grad_h, gate, w1 = grad_h.contiguous(), gate.contiguous(), w1.contiguous()
    dz = torch.empty_like(a)  # (B, T, D) fp32
    dg = torch.empty_like(a)
    dh0 = torch.zeros(batch, dim, device=a.device, dtype=torch.float32)
    block, n_blocks = _grid_block(dim, diagonal)
    if steps > 0:
        _bwd_kernel[(batch, n_blocks)](grad_h, gate, w1, a, dz, dg, dh0, steps, dim,
                                       DIAGONAL=diagonal, BLOCK_D=block)
    h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1).float()  # (B, T, D)
    if diagonal:
        dw = (dz * h_prev).sum((0, 1))  # (D,)
    else:
        dw = dz.reshape(-1, dim).t() @ h_prev.reshape(-1, dim)  # (D, D)
    return dz.to(gate.dtype), dg.to(gate.dtype), dw.to(w1.dtype), dh0.to(h0.dtype)
