"""Triton routed causal attention: forward saving the log-sum-exp, backward with dQ and dK/dV.

Query rows are the routed rows only, sorted by (batch, position). ``q`` is either those rows,
``(N, H, Dh)``, or the full ``(B, H, T, Dh)`` query tensor (any strides with a unit last stride),
from which the kernels read the routed rows directly through ``batch_idx`` and ``pos`` (the gather
is fused: no ``(N, H, Dh)`` copy is made, and dQ is written straight into a ``(B, H, T, Dh)``
gradient). Keys and values are read through their strides, so the transposed views a model makes
of its ``(B, T, H·Dh)`` projections are not copied either. No host sync anywhere: loop bounds are
read inside the kernels (forward, dQ) or computed on the device with ``searchsorted`` (dK/dV).

- forward, grid (cdiv(N, BLOCK_M), H): a block of BLOCK_M routed rows walks, for each sequence its
  rows belong to (usually one), the key tiles from its first needed key to its last routed
  position, with online softmax; it stores O and LSE = m + log(l).
- dQ, same grid: recomputes P = exp(S - LSE), dS = P * (dO Vᵀ - Δ) with Δ = rowsum(dO * O).
- dK/dV, grid (B * cdiv(T, BLOCK_N), H): a key tile walks the routed rows of its sequence that can
  see it (a contiguous range of the sorted rows), accumulating dV = Pᵀ dO and dK = dSᵀ Q. Each key
  tile is owned by one program, so no atomics.

Block sizes: on CUDA each kernel is autotuned (``triton.autotune``) over a short config list,
keyed on T, Dh, the routed-row count rounded up to a power of two, the window flag and the gather
flag (so a training run tunes a handful of times, not every step); each candidate is timed
briefly (5 ms warm-up, 20 ms of repeats). ``CRAM_TRITON_AUTOTUNE=0`` (read at each call) runs the
fixed ``DEFAULT_BLOCKS`` instead: the GPU tests use it, since every config of every dtype and head
dim would otherwise be compiled. Under ``TRITON_INTERPRET=1`` one fixed 16x16 config runs, so
tests stay fast. Derivation and the work count in ``README.md``.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

FINE = 16  # granularity of the dK/dV row ranges; every BLOCK_N is a multiple of it
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
TUNE_KEY = ["T", "N_KEY", "DH", "HAS_WINDOW", "GATHER"]


def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_N, num_warps, num_stages). Query-block kernels (forward, dQ): BLOCK_M routed
# rows per program, BLOCK_N keys per step. dK/dV: BLOCK_N keys per program, BLOCK_M rows per step.
# The list follows common flash-attention choices for Hopper; which configs won on the one H200
# run (2026-11-30) was not logged.
QUERY_CONFIGS = [(64, 64, 4, 3), (64, 128, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2),
                 (32, 64, 4, 3), (64, 32, 4, 4)]
KEY_CONFIGS = [(64, 64, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (32, 128, 4, 2), (64, 32, 4, 3)]
INTERPRETER_CONFIG = (16, 16, 4, 1)
DEFAULT_BLOCKS = (64, 64)  # CUDA with CRAM_TRITON_AUTOTUNE=0


def _configs(table):
    return [_cfg(*INTERPRETER_CONFIG)] if INTERPRETED else [_cfg(*c) for c in table]


def _quick_bench(kernel_call, quantiles):
    """Autotuning timer: a short warm-up and 20 ms of repeats per candidate config."""
    from triton.testing import do_bench

    return do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


def _autotune(table):
    import inspect

    has_do_bench = "do_bench" in inspect.signature(triton.autotune).parameters
    extra = {"do_bench": _quick_bench} if has_do_bench else {}
    return triton.autotune(_configs(table), key=TUNE_KEY, **extra)


def autotune_enabled() -> bool:
    """Whether the CUDA launches autotune (default) or run ``DEFAULT_BLOCKS``."""
    return os.environ.get("CRAM_TRITON_AUTOTUNE", "1") != "0"


@triton.jit
def _row_offsets(rows, rb, rp, rmask, SR, SB, ST, GATHER: tl.constexpr):
    # element offset of each routed row's query (or dQ) vector, head 0, channel 0
    if GATHER:  # full (B, H, T, Dh) tensor: the gather is this address computation
        off = tl.where(rmask, rb, 0).to(tl.int64) * SB + tl.where(rmask, rp, 0).to(tl.int64) * ST
    else:  # (N, H, Dh) rows
        off = rows.to(tl.int64) * SR
    return off


@triton.jit
def _fwd_kernel(Q, K, V, BIDX, POS, OUT, LSE, N, T, H, N_KEY, scale, WINDOW,
                SQR, SQB, SQT, SQH, SKB, SKH, SKT, SVB, SVH, SVT,
                HAS_WINDOW: tl.constexpr, GATHER: tl.constexpr, DH: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                PREC: tl.constexpr):
    # Q: (N, H, DH) or (B, H, T, DH); OUT: (N, H, DH) contiguous; K, V: (B, H, T, DH) strided;
    # BIDX, POS: (N,) int64; LSE: (N, H) fp32
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1)
    rp = tl.load(POS + rows, mask=rmask, other=-1)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    qd_mask = rmask[:, None] & dmask[None, :]
    q_off = _row_offsets(rows, rb, rp, rmask, SQR, SQB, SQT, GATHER)[:, None] + h * SQH + d[None, :]
    q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
    o_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
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
        k_base = b * SKB + h * SKH  # b is int64 (read from BIDX)
        v_base = b * SVB + h * SVH
        for n0 in range(lo, hi + 1, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)  # (BN,)
            kv_mask = (cols < T)[:, None] & dmask[None, :]
            k = tl.load(K + k_base + cols[:, None] * SKT + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V + v_base + cols[:, None] * SVT + d[None, :], mask=kv_mask, other=0.0)
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
    tl.store(OUT + o_off, out.to(OUT.dtype.element_ty), mask=qd_mask)
    tl.store(LSE + rows * H + h, m_i + tl.log(l_safe), mask=rmask)


@triton.jit
def _dq_kernel(Q, K, V, BIDX, POS, DO, LSE, DELTA, DQ, N, T, H, N_KEY, scale, WINDOW,
               SQR, SQB, SQT, SQH, SKB, SKH, SKT, SVB, SVH, SVT, SDR, SDB, SDT, SDH,
               HAS_WINDOW: tl.constexpr, GATHER: tl.constexpr, DH: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               PREC: tl.constexpr):
    # DO: (N, H, DH) contiguous; DQ: shaped like Q (strides SD*); LSE, DELTA: (N, H) fp32
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1)
    rp = tl.load(POS + rows, mask=rmask, other=-1)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    qd_mask = rmask[:, None] & dmask[None, :]
    q_off = _row_offsets(rows, rb, rp, rmask, SQR, SQB, SQT, GATHER)[:, None] + h * SQH \
        + d[None, :]
    dq_off = _row_offsets(rows, rb, rp, rmask, SDR, SDB, SDT, GATHER)[:, None] + h * SDH \
        + d[None, :]
    do_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
    q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
    do = tl.load(DO + do_off, mask=qd_mask, other=0.0)  # (BM, BD)
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
        k_base = b * SKB + h * SKH  # b is int64 (read from BIDX)
        v_base = b * SVB + h * SVH
        for n0 in range(lo, hi + 1, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            kv_mask = (cols < T)[:, None] & dmask[None, :]
            k = tl.load(K + k_base + cols[:, None] * SKT + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V + v_base + cols[:, None] * SVT + d[None, :], mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN)
            allowed = inb[:, None] & (cols[None, :] <= rp[:, None])
            if HAS_WINDOW:
                allowed = allowed & (cols[None, :] > rp[:, None] - WINDOW)
            p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)  # (BM, BN)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    tl.store(DQ + dq_off, (dq * scale).to(DQ.dtype.element_ty), mask=qd_mask)


@triton.jit
def _dkv_kernel(Q, K, V, BIDX, POS, DO, LSE, DELTA, ROW_LO, ROW_HI, DK, DV, T, H, N_KEY, scale,
                WINDOW, N_FINE, SQR, SQB, SQT, SQH, SKB, SKH, SKT, SVB, SVH, SVT,
                HAS_WINDOW: tl.constexpr, GATHER: tl.constexpr, DH: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                PREC: tl.constexpr, FINE_N: tl.constexpr):
    # ROW_LO, ROW_HI: (B * N_FINE,) first and one-past-last routed row that can see each FINE_N
    # key tile; a BLOCK_N tile spans fine tiles j0..j1 and is seen by rows ROW_LO[j0]..ROW_HI[j1]
    # DK, DV: (B, H, T, DH) contiguous
    pid = tl.program_id(0)
    h = tl.program_id(1)
    n_kblocks = tl.cdiv(T, BLOCK_N)
    b = pid // n_kblocks
    n0 = (pid % n_kblocks) * BLOCK_N
    cols = n0 + tl.arange(0, BLOCK_N)  # (BN,)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    kv_mask = (cols < T)[:, None] & dmask[None, :]
    b64 = b.to(tl.int64)
    k = tl.load(K + b64 * SKB + h * SKH + cols[:, None] * SKT + d[None, :], mask=kv_mask,
                other=0.0)  # (BN, BD)
    v = tl.load(V + b64 * SVB + h * SVH + cols[:, None] * SVT + d[None, :], mask=kv_mask,
                other=0.0)
    dkv_off = (b64 * H + h) * T * DH + cols[:, None] * DH + d[None, :]
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    j0 = n0 // FINE_N
    j1 = tl.minimum(tl.cdiv(n0 + BLOCK_N, FINE_N), N_FINE) - 1
    r_lo = tl.load(ROW_LO + b * N_FINE + j0)
    r_hi = tl.load(ROW_HI + b * N_FINE + j1)
    for r0 in range(r_lo, r_hi, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)  # (BM,)
        rmask = rows < r_hi
        rb = tl.load(BIDX + rows, mask=rmask, other=-1)
        rp = tl.load(POS + rows, mask=rmask, other=-1)
        qd_mask = rmask[:, None] & dmask[None, :]
        q_off = _row_offsets(rows, rb, rp, rmask, SQR, SQB, SQT, GATHER)[:, None] + h * SQH \
            + d[None, :]
        do_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
        q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
        do = tl.load(DO + do_off, mask=qd_mask, other=0.0)
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
    tl.store(DK + dkv_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + dkv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


_fwd_tuned = _autotune(QUERY_CONFIGS)(_fwd_kernel)
_dq_tuned = _autotune(QUERY_CONFIGS)(_dq_kernel)
_dkv_tuned = _autotune(KEY_CONFIGS)(_dkv_kernel)


def _precision(dtype) -> str:
    """fp32 inputs get IEEE fp32 dots (as dense SDPA does), not TF32; half types ignore it."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """The kernels assume a unit stride on the head dim; anything else is copied (rare)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _q_strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(row, batch, time, head) element strides of a (N, H, Dh) or (B, H, T, Dh) tensor."""
    if x.dim() == 3:
        return x.stride(0), 0, 0, x.stride(1)
    return 0, x.stride(0), x.stride(2), x.stride(1)


def _kv_strides(k: torch.Tensor, v: torch.Tensor) -> tuple[int, ...]:
    return k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2)


def _launch(raw, tuned, grid, args, meta, blocks):
    """Launch with the autotuned config (``blocks`` None) or with fixed ``(BLOCK_M, BLOCK_N)``.

    ``grid(block_m, block_n)`` gives the launch grid for a config.
    """
    if blocks is None and not INTERPRETED and not autotune_enabled():
        blocks = DEFAULT_BLOCKS
    if blocks is None:
        tuned[lambda m: grid(m["BLOCK_M"], m["BLOCK_N"])](*args, **meta)
    else:
        bm, bn = blocks
        raw[grid(bm, bn)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, num_warps=4)


def key_tile_row_ranges(batch_idx, pos, n_batch, seq_len, block_n, window):
    """(B * cdiv(T, block_n),) first and one-past-last sorted routed row that can see each key tile.

    Rows are sorted by the flat key ``batch * T + pos``; a key tile ``[n0, n0 + block_n)`` of
    sequence b is seen by rows with ``n0 <= pos`` (and ``pos < n0 + block_n - 1 + window``).
    Computed on the device with ``searchsorted``: no host sync. The backward calls it with
    ``block_n = FINE``; a wider tile takes the low end of its first fine tile and the high end of
    its last one.
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
    def forward(ctx, q, k, v, batch_idx, pos, window, scale, blocks):
        # q: (N, H, Dh) rows or (B, H, T, Dh) full; k, v: (B, H, T, Dh)
        n_rows = batch_idx.shape[0]
        n_heads, head_dim = k.shape[1], k.shape[3]
        seq_len = k.shape[2]
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        out = q.new_empty(n_rows, n_heads, head_dim)  # (N, H, Dh)
        lse = torch.empty(n_rows, n_heads, device=q.device, dtype=torch.float32)  # (N, H)
        meta = _meta(q, head_dim, window)
        if n_rows > 0:
            _launch(_fwd_kernel, _fwd_tuned, lambda bm, bn: (triton.cdiv(n_rows, bm), n_heads),
                    (q, k, v, batch_idx, pos, out, lse, n_rows, seq_len, n_heads,
                     _n_key(n_rows), scale, window or 0, *_q_strides(q), *_kv_strides(k, v)),
                    meta, blocks)
        ctx.save_for_backward(q, k, v, batch_idx, pos, out, lse)
        ctx.cfg = (window, scale, blocks)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, batch_idx, pos, out, lse = ctx.saved_tensors
        window, scale, blocks = ctx.cfg
        n_rows = batch_idx.shape[0]
        n_batch, n_heads, seq_len, head_dim = k.shape
        d_out = d_out.contiguous()  # (N, H, Dh)
        delta = (d_out.float() * out.float()).sum(-1)  # (N, H)
        dq = _unit_last(torch.zeros_like(q))  # shaped like q: routed rows only are written
        dk = torch.zeros(k.shape, device=k.device, dtype=k.dtype)  # (B, H, T, Dh) contiguous
        dv = torch.zeros(v.shape, device=v.device, dtype=v.dtype)
        if n_rows == 0:
            return dq, dk, dv, None, None, None, None, None
        meta = _meta(q, head_dim, window)
        common = (n_heads, _n_key(n_rows), scale, window or 0)
        _launch(_dq_kernel, _dq_tuned, lambda bm, bn: (triton.cdiv(n_rows, bm), n_heads),
                (q, k, v, batch_idx, pos, d_out, lse, delta, dq, n_rows, seq_len, *common,
                 *_q_strides(q), *_kv_strides(k, v), *_q_strides(dq)), meta, blocks)
        row_lo, row_hi = key_tile_row_ranges(batch_idx, pos, n_batch, seq_len, FINE, window)
        _launch(_dkv_kernel, _dkv_tuned,
                lambda bm, bn: (n_batch * triton.cdiv(seq_len, bn), n_heads),
                (q, k, v, batch_idx, pos, d_out, lse, delta, row_lo, row_hi, dk, dv, seq_len,
                 *common, triton.cdiv(seq_len, FINE), *_q_strides(q), *_kv_strides(k, v)),
                meta | {"FINE_N": FINE}, blocks)
        return dq, dk, dv, None, None, None, None, None


def _n_key(n_rows: int) -> int:
    """Autotune key for the routed-row count: N rounded up to a power of two."""
    return triton.next_power_of_2(max(n_rows, 1))


def _meta(q, head_dim, window) -> dict:
    return {"HAS_WINDOW": window is not None, "GATHER": q.dim() == 4, "DH": head_dim,
            "BLOCK_D": max(16, triton.next_power_of_2(head_dim)), "PREC": _precision(q.dtype)}


def routed_attention_triton(q, k, v, batch_idx, pos, window=None, scale=None, block_m=None,
                            block_n=None):
    """Triton routed attention; inputs validated. Returns (N, H, Dh).

    ``q``: ``(N, H, Dh)`` routed rows, or the full ``(B, H, T, Dh)`` queries (gathered in the
    kernel). ``block_m`` and ``block_n`` (both or neither; ``block_n`` a multiple of 16) fix the
    tiles instead of the autotuned (CUDA) or fixed 16x16 (interpreter) config.
    """
    scale = 1.0 / math.sqrt(k.shape[-1]) if scale is None else float(scale)
    blocks = None
    if block_m is not None or block_n is not None:
        blocks = (block_m or 64, block_n or 64)
        if blocks[1] % FINE:
            raise ValueError(f"block_n must be a multiple of {FINE}, got {blocks[1]}")
    return _RoutedAttentionTriton.apply(q, k, v, batch_idx, pos, window, scale, blocks)
