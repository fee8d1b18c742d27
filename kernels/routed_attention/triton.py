"""Triton routed causal attention: forward saving the log-sum-exp, backward with dQ and dK/dV.

Query rows are the routed rows only, flat over the batch and sorted by (batch, position); keys and
values are the whole (B, H, T, Dh) buffer. No host sync anywhere: loop bounds are read inside the
kernels (forward, dQ) or computed on the device with ``searchsorted`` (dK/dV). Derivation and the
work count in ``README.md``.

- forward, grid (cdiv(N, BLOCK_M), H): a block of BLOCK_M routed rows walks, for each sequence its
  rows belong to (usually one), the key tiles from its first needed key to its last routed
  position, with online softmax; it stores O and LSE = m + log(l).
- dQ, same grid: recomputes P = exp(S - LSE), dS = P * (dO Vᵀ - Δ) with Δ = rowsum(dO * O).
- dK/dV, grid (B * cdiv(T, BLOCK_N), H): a key tile walks the routed rows of its sequence that can
  see it (a contiguous range of the sorted rows), accumulating dV = Pᵀ dO and dK = dSᵀ Q. Each key
  tile is owned by one program, so no atomics.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd_kernel(Q, K, V, BIDX, POS, O, LSE, N, T, H, scale, WINDOW,
                HAS_WINDOW: tl.constexpr, DH: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # Q, O: (N, H, DH); K, V: (B, H, T, DH); BIDX, POS: (N,) int64; LSE: (N, H) fp32
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1)
    rp = tl.load(POS + rows, mask=rmask, other=-1)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    q_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
    q = tl.load(Q + q_off, mask=rmask[:, None] & dmask[None, :], other=0.0)  # (BM, BD)
    b_first = tl.load(BIDX + mblk * BLOCK_M)
    b_last = tl.load(BIDX + tl.minimum(mblk * BLOCK_M + BLOCK_M, N) - 1)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for b in range(b_first, b_last + 1):
        inb = rmask & (rb == b)
        hi = tl.max(tl.where(inb, rp, -1), axis=0)  # last key any row of sequence b needs
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(inb, rp - WINDOW + 1, T), axis=0), 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        kv_base = (b * H + h).to(tl.int64) * T * DH
        for n0 in range(lo, hi + 1, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)  # (BN,)
            kv_mask = (cols < T)[:, None] & dmask[None, :]
            kv_off = kv_base + cols[:, None] * DH + d[None, :]
            k = tl.load(K + kv_off, mask=kv_mask, other=0.0)  # (BN, BD)
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN) fp32
            allowed = inb[:, None] & (cols[None, :] <= rp[:, None])
            if HAS_WINDOW:
                allowed = allowed & (cols[None, :] > rp[:, None] - WINDOW)
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
            m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(O + q_off, out.to(O.dtype.element_ty), mask=rmask[:, None] & dmask[None, :])
    tl.store(LSE + rows * H + h, m_i + tl.log(l_safe), mask=rmask)


@triton.jit
def _dq_kernel(Q, K, V, BIDX, POS, DO, LSE, DELTA, DQ, N, T, H, scale, WINDOW,
               HAS_WINDOW: tl.constexpr, DH: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # DO, DQ: (N, H, DH); LSE, DELTA: (N, H) fp32
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1)
    rp = tl.load(POS + rows, mask=rmask, other=-1)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    q_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
    qd_mask = rmask[:, None] & dmask[None, :]
    q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
    do = tl.load(DO + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
    lse = tl.load(LSE + rows * H + h, mask=rmask, other=0.0)  # (BM,)
    delta = tl.load(DELTA + rows * H + h, mask=rmask, other=0.0)  # (BM,)
    b_first = tl.load(BIDX + mblk * BLOCK_M)
    b_last = tl.load(BIDX + tl.minimum(mblk * BLOCK_M + BLOCK_M, N) - 1)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for b in range(b_first, b_last + 1):
        inb = rmask & (rb == b)
        hi = tl.max(tl.where(inb, rp, -1), axis=0)
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(inb, rp - WINDOW + 1, T), axis=0), 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        kv_base = (b * H + h).to(tl.int64) * T * DH
        for n0 in range(lo, hi + 1, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            kv_mask = (cols < T)[:, None] & dmask[None, :]
            kv_off = kv_base + cols[:, None] * DH + d[None, :]
            k = tl.load(K + kv_off, mask=kv_mask, other=0.0)  # (BN, BD)
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN)
            allowed = inb[:, None] & (cols[None, :] <= rp[:, None])
            if HAS_WINDOW:
                allowed = allowed & (cols[None, :] > rp[:, None] - WINDOW)
            p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)  # (BM, BN)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=qd_mask)


@triton.jit
def _dkv_kernel(Q, K, V, POS, DO, LSE, DELTA, ROW_LO, ROW_HI, DK, DV, T, H, scale, WINDOW,
                N_KBLOCKS, HAS_WINDOW: tl.constexpr, DH: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # ROW_LO, ROW_HI: (B * N_KBLOCKS,) first and one-past-last routed row that can see key tile
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = pid // N_KBLOCKS
    n0 = (pid % N_KBLOCKS) * BLOCK_N
    cols = n0 + tl.arange(0, BLOCK_N)  # (BN,)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    kv_mask = (cols < T)[:, None] & dmask[None, :]
    kv_off = (b * H + h).to(tl.int64) * T * DH + cols[:, None] * DH + d[None, :]
    k = tl.load(K + kv_off, mask=kv_mask, other=0.0)  # (BN, BD)
    v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    r_lo = tl.load(ROW_LO + pid)
    r_hi = tl.load(ROW_HI + pid)
    for r0 in range(r_lo, r_hi, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)  # (BM,)
        rmask = rows < r_hi
        rp = tl.load(POS + rows, mask=rmask, other=-1)
        q_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
        qd_mask = rmask[:, None] & dmask[None, :]
        q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
        do = tl.load(DO + q_off, mask=qd_mask, other=0.0)
        lse = tl.load(LSE + rows * H + h, mask=rmask, other=0.0)
        delta = tl.load(DELTA + rows * H + h, mask=rmask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN)
        allowed = rmask[:, None] & (cols[None, :] <= rp[:, None]) & (cols < T)[None, :]
        if HAS_WINDOW:
            allowed = allowed & (cols[None, :] > rp[:, None] - WINDOW)
        p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)  # (BM, BN)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)  # (BN, BD)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PREC)
    tl.store(DK + kv_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


def _precision(dtype) -> str:
    """fp32 inputs get IEEE fp32 dots (as dense SDPA does), not TF32; half types ignore it."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _blocks(head_dim: int, block_m: int | None, block_n: int | None, device) -> tuple[int, int, int]:
    interp = device.type != "cuda"
    bm = block_m or (16 if interp else 64)
    bn = block_n or (16 if interp else 64)
    return bm, bn, max(16, triton.next_power_of_2(head_dim))


def key_tile_row_ranges(batch_idx, pos, n_batch, seq_len, block_n, window):
    """(B * cdiv(T, BLOCK_N),) first and one-past-last sorted routed row that can see each key tile.

    Rows are sorted by the flat key ``batch * T + pos``; a key tile ``[n0, n0 + BLOCK_N)`` of
    sequence b is seen by rows with ``n0 <= pos`` (and ``pos < n0 + BLOCK_N - 1 + window``).
    Computed on the device with ``searchsorted``: no host sync.
    """
    device = pos.device
    flat = batch_idx * seq_len + pos  # (N,) sorted
    n_kb = triton.cdiv(seq_len, block_n)
    b = torch.arange(n_batch, device=device).repeat_interleave(n_kb)  # (B * n_kb,)
    n0 = torch.arange(n_kb, device=device).repeat(n_batch) * block_n
    lo_key = b * seq_len + n0
    if window is None:
        hi_key = (b + 1) * seq_len
    else:
        hi_key = b * seq_len + torch.clamp(n0 + block_n - 1 + window, max=seq_len)
    return torch.searchsorted(flat, lo_key), torch.searchsorted(flat, hi_key)


class _RoutedAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, batch_idx, pos, window, scale, block_m, block_n):
        n_rows, n_heads, head_dim = q.shape
        seq_len = k.shape[2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty_like(q)  # (N, H, Dh)
        lse = torch.empty(n_rows, n_heads, device=q.device, dtype=torch.float32)  # (N, H)
        bm, bn, bd = _blocks(head_dim, block_m, block_n, q.device)
        if n_rows > 0:
            _fwd_kernel[(triton.cdiv(n_rows, bm), n_heads)](
                q, k, v, batch_idx, pos, out, lse, n_rows, seq_len, n_heads, scale,
                window or 0, HAS_WINDOW=window is not None, DH=head_dim,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, PREC=_precision(q.dtype))
        ctx.save_for_backward(q, k, v, batch_idx, pos, out, lse)
        ctx.cfg = (window, scale, bm, bn, bd)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, batch_idx, pos, out, lse = ctx.saved_tensors
        window, scale, bm, bn, bd = ctx.cfg
        n_rows, n_heads, head_dim = q.shape
        n_batch, _, seq_len, _ = k.shape
        d_out = d_out.contiguous()
        delta = (d_out.float() * out.float()).sum(-1)  # (N, H)
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        if n_rows > 0:
            _dq_kernel[(triton.cdiv(n_rows, bm), n_heads)](
                q, k, v, batch_idx, pos, d_out, lse, delta, dq, n_rows, seq_len, n_heads, scale,
                window or 0, HAS_WINDOW=window is not None, DH=head_dim,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, PREC=_precision(q.dtype))
            row_lo, row_hi = key_tile_row_ranges(batch_idx, pos, n_batch, seq_len, bn, window)
            n_kb = triton.cdiv(seq_len, bn)
            _dkv_kernel[(n_batch * n_kb, n_heads)](
                q, k, v, pos, d_out, lse, delta, row_lo, row_hi, dk, dv, seq_len, n_heads, scale,
                window or 0, n_kb, HAS_WINDOW=window is not None, DH=head_dim,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, PREC=_precision(q.dtype))
        return dq, dk, dv, None, None, None, None, None, None


def routed_attention_triton(q, k, v, batch_idx, pos, window=None, scale=None, block_m=None,
                            block_n=None):
    """Triton routed attention; inputs validated. Returns (N, H, Dh)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _RoutedAttentionTriton.apply(q, k, v, batch_idx, pos, window, scale, block_m, block_n)
