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
- key split: forward and dQ take a third grid axis, S key chunks (``key_splits``): program
  (block, head, s) walks chunk s only and writes fp32 partials, merged by ``_combine_fwd_kernel``
  (partial softmaxes) or ``_combine_dq_kernel`` (a sum). At low routed share this turns a few
  long serial walks over the keys into many short ones (flash-decoding); S = 1 skips both the
  workspace and the combine.

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
QUERY_TUNE_KEY = TUNE_KEY + ["KV_CHUNK"]  # forward and dQ also depend on the key split
CHUNK_QUANTUM = 128  # a key chunk is a multiple of this, hence of every BLOCK_N
MIN_CHUNK = 512  # no chunk shorter than this many keys (8 steps of 64 keys)
PROGRAMS_PER_SM = 8  # split the keys until forward / dQ launch about this many programs per SM


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


def _autotune(table, key):
    import inspect

    has_do_bench = "do_bench" in inspect.signature(triton.autotune).parameters
    extra = {"do_bench": _quick_bench} if has_do_bench else {}
    return triton.autotune(_configs(table), key=key, **extra)


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
def _fwd_kernel(Q, K, V, BIDX, POS, OUT, LSE, WS_ACC, WS_M, WS_L, N, T, H, N_KEY, scale, WINDOW,
                KV_CHUNK, SQR, SQB, SQT, SQH, SKB, SKH, SKT, SVB, SVH, SVT,
                HAS_WINDOW: tl.constexpr, GATHER: tl.constexpr, SPLIT: tl.constexpr,
                DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # Q: (N, H, DH) or (B, H, T, DH); OUT: (N, H, DH) contiguous; K, V: (B, H, T, DH) strided;
    # BIDX, POS: (N,) int64; LSE: (N, H) fp32. Program (mblk, h, s) visits only the keys of
    # chunk s, [s * KV_CHUNK, (s + 1) * KV_CHUNK), of each sequence; with SPLIT it stores its
    # unnormalised partial (acc, m, l) in WS_ACC (S, N, H, DH) and WS_M, WS_L (S, N, H), all
    # fp32, for _combine_fwd_kernel; without, it is the only chunk and stores OUT and LSE.
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1).to(tl.int32)  # int32 keeps the 2D masks
    rp = tl.load(POS + rows, mask=rmask, other=-1).to(tl.int32)  # and key offsets small
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    qd_mask = rmask[:, None] & dmask[None, :]
    q_off = _row_offsets(rows, rb, rp, rmask, SQR, SQB, SQT, GATHER)[:, None] + h * SQH + d[None, :]
    q = tl.load(Q + q_off, mask=qd_mask, other=0.0)  # (BM, BD)
    o_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
    b_first = tl.load(BIDX + mblk * BLOCK_M).to(tl.int32)
    b_last = tl.load(BIDX + tl.minimum(mblk * BLOCK_M + BLOCK_M, N) - 1).to(tl.int32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for b in range(b_first, b_last + 1):
        inb = rmask & (rb == b)
        hi = tl.max(tl.where(inb, rp, -1), axis=0)  # last key any row of sequence b needs
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(inb, rp - WINDOW + 1, T), axis=0), 0)
        lo = tl.maximum((lo // BLOCK_N) * BLOCK_N, split * KV_CHUNK)  # KV_CHUNK % BLOCK_N == 0
        hi = tl.minimum(hi, split * KV_CHUNK + KV_CHUNK - 1)
        b64 = b + tl.zeros([], dtype=tl.int64)  # one int64 scalar offset per sequence
        k_base = b64 * SKB + h * SKH
        v_base = b64 * SVB + h * SVH
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
    if SPLIT:
        ws_rows = split * N + rows  # (BM,) row of the (S * N, H) partials
        tl.store(WS_ACC + ws_rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :], acc,
                 mask=qd_mask)
        tl.store(WS_M + ws_rows * H + h, m_i, mask=rmask)
        tl.store(WS_L + ws_rows * H + h, l_i, mask=rmask)
    else:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(OUT + o_off, out.to(OUT.dtype.element_ty), mask=qd_mask)
        tl.store(LSE + rows * H + h, m_i + tl.log(l_safe), mask=rmask)


@triton.jit
def _combine_fwd_kernel(WS_ACC, WS_M, WS_L, OUT, LSE, N, H, N_SPLITS, DH: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # merges the N_SPLITS partial softmaxes of each (row, head) into OUT (N, H, DH) and LSE (N, H)
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rmask = rows < N
    d = tl.arange(0, BLOCK_D)
    qd_mask = rmask[:, None] & (d < DH)[None, :]
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for split in range(0, N_SPLITS):
        ws_rows = split * N + rows
        m_s = tl.load(WS_M + ws_rows * H + h, mask=rmask, other=float("-inf"))
        l_s = tl.load(WS_L + ws_rows * H + h, mask=rmask, other=0.0)
        acc_s = tl.load(WS_ACC + ws_rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :],
                        mask=qd_mask, other=0.0)
        m_new = tl.maximum(m_i, m_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key in any chunk so far
        alpha = tl.exp(m_i - m_safe)
        beta = tl.exp(m_s - m_safe)
        l_i = l_i * alpha + l_s * beta
        acc = acc * alpha[:, None] + acc_s * beta[:, None]
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o_off = rows[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
    tl.store(OUT + o_off, (acc / l_safe[:, None]).to(OUT.dtype.element_ty), mask=qd_mask)
    tl.store(LSE + rows * H + h, m_i + tl.log(l_safe), mask=rmask)


@triton.jit
def _dq_kernel(Q, K, V, BIDX, POS, DO, LSE, DELTA, DQ, WS_DQ, N, T, H, N_KEY, scale, WINDOW,
               KV_CHUNK, SQR, SQB, SQT, SQH, SKB, SKH, SKT, SVB, SVH, SVT, SDR, SDB, SDT, SDH,
               HAS_WINDOW: tl.constexpr, GATHER: tl.constexpr, SPLIT: tl.constexpr,
               DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # DO: (N, H, DH) contiguous; DQ: shaped like Q (strides SD*); LSE, DELTA: (N, H) fp32.
    # Program (mblk, h, s) sums dS K over key chunk s only; with SPLIT its partial (unscaled,
    # fp32) goes to WS_DQ (S, N, H, DH) and _combine_dq_kernel adds the chunks into DQ.
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rb = tl.load(BIDX + rows, mask=rmask, other=-1).to(tl.int32)  # int32 keeps the 2D masks
    rp = tl.load(POS + rows, mask=rmask, other=-1).to(tl.int32)  # and key offsets small
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
    b_first = tl.load(BIDX + mblk * BLOCK_M).to(tl.int32)
    b_last = tl.load(BIDX + tl.minimum(mblk * BLOCK_M + BLOCK_M, N) - 1).to(tl.int32)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for b in range(b_first, b_last + 1):
        inb = rmask & (rb == b)
        hi = tl.max(tl.where(inb, rp, -1), axis=0)
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(inb, rp - WINDOW + 1, T), axis=0), 0)
        lo = tl.maximum((lo // BLOCK_N) * BLOCK_N, split * KV_CHUNK)
        hi = tl.minimum(hi, split * KV_CHUNK + KV_CHUNK - 1)
        b64 = b + tl.zeros([], dtype=tl.int64)  # one int64 scalar offset per sequence
        k_base = b64 * SKB + h * SKH
        v_base = b64 * SVB + h * SVH
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
    if SPLIT:
        ws_off = (split * N + rows)[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
        tl.store(WS_DQ + ws_off, dq, mask=qd_mask)
    else:
        tl.store(DQ + dq_off, (dq * scale).to(DQ.dtype.element_ty), mask=qd_mask)


@triton.jit
def _combine_dq_kernel(WS_DQ, BIDX, POS, DQ, N, H, N_SPLITS, scale, SDR, SDB, SDT, SDH,
                       GATHER: tl.constexpr, DH: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    # DQ (shaped like Q) = scale * sum over the N_SPLITS partials in WS_DQ (S, N, H, DH)
    mblk = tl.program_id(0)
    h = tl.program_id(1)
    rows = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    d = tl.arange(0, BLOCK_D)
    qd_mask = rmask[:, None] & (d < DH)[None, :]
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for split in range(0, N_SPLITS):
        ws_off = (split * N + rows)[:, None].to(tl.int64) * (H * DH) + h * DH + d[None, :]
        dq += tl.load(WS_DQ + ws_off, mask=qd_mask, other=0.0)
    rb = tl.load(BIDX + rows, mask=rmask, other=-1).to(tl.int32)  # int32 keeps the 2D masks
    rp = tl.load(POS + rows, mask=rmask, other=-1).to(tl.int32)  # and key offsets small
    dq_off = _row_offsets(rows, rb, rp, rmask, SDR, SDB, SDT, GATHER)[:, None] + h * SDH \
        + d[None, :]
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
    r_lo = tl.load(ROW_LO + b * N_FINE + j0).to(tl.int32)  # row indices fit int32
    r_hi = tl.load(ROW_HI + b * N_FINE + j1).to(tl.int32)
    for r0 in range(r_lo, r_hi, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)  # (BM,)
        rmask = rows < r_hi
        rb = tl.load(BIDX + rows, mask=rmask, other=-1).to(tl.int32)
        rp = tl.load(POS + rows, mask=rmask, other=-1).to(tl.int32)
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


_fwd_tuned = _autotune(QUERY_CONFIGS, QUERY_TUNE_KEY)(_fwd_kernel)
_dq_tuned = _autotune(QUERY_CONFIGS, QUERY_TUNE_KEY)(_dq_kernel)
_dkv_tuned = _autotune(KEY_CONFIGS, TUNE_KEY)(_dkv_kernel)
COMBINE_BLOCK_M = 16 if INTERPRETED else 64


def tuned_configs() -> dict[str, str | None]:
    """The config each autotuned kernel ran last (None before its first tuned launch)."""
    out = {}
    for name, tuned in (("forward", _fwd_tuned), ("dq", _dq_tuned), ("dkv", _dkv_tuned)):
        best = getattr(tuned, "best_config", None)
        out[name] = None if best is None else str(best)
    return out


def sm_count_of(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a nominal 4 in the interpreter)."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def key_splits(n_rows: int, n_heads: int, seq_len: int, sm_count: int) -> int:
    """How many key chunks the forward and dQ kernels split each query block's keys into.

    One program per (64-row block, head) walks every key its rows need, in order: at low routed
    share (p = 0.02, T = 8192, B·H = 64: 168 programs of up to 128 steps) that serial walk, not
    the arithmetic, sets the time. Splitting the keys into S chunks launches S times as many
    programs, each at most ``T / S`` keys long, and a combine pass merges their partial
    softmaxes (flash-decoding). S is the smallest split that reaches ``PROGRAMS_PER_SM``
    programs per SM, with chunks of at least ``MIN_CHUNK`` keys; 1 when the blocks alone fill
    the GPU (high p, long batches).
    """
    programs = triton.cdiv(max(n_rows, 1), 64) * n_heads
    wanted = triton.cdiv(PROGRAMS_PER_SM * sm_count, programs)
    return max(1, min(wanted, seq_len // MIN_CHUNK))


def key_chunk(seq_len: int, n_splits: int) -> tuple[int, int]:
    """(KV_CHUNK, S): chunk length, a multiple of ``CHUNK_QUANTUM``, and the split count."""
    chunk = triton.cdiv(triton.cdiv(seq_len, n_splits), CHUNK_QUANTUM) * CHUNK_QUANTUM
    return chunk, triton.cdiv(seq_len, chunk)


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
    def forward(ctx, q, k, v, batch_idx, pos, window, scale, blocks, n_splits):
        # q: (N, H, Dh) rows or (B, H, T, Dh) full; k, v: (B, H, T, Dh)
        n_rows = batch_idx.shape[0]
        n_heads, head_dim = k.shape[1], k.shape[3]
        seq_len = k.shape[2]
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        if n_splits is None:
            n_splits = key_splits(n_rows, n_heads, seq_len, sm_count_of(q.device))
        chunk, n_splits = key_chunk(seq_len, n_splits)
        out = q.new_empty(n_rows, n_heads, head_dim)  # (N, H, Dh)
        lse = torch.empty(n_rows, n_heads, device=q.device, dtype=torch.float32)  # (N, H)
        if n_rows > 0:
            # partial (acc, m, l) of each key chunk: (S, N, H, Dh), (S, N, H), (S, N, H) fp32
            ws_acc, ws_m, ws_l = _workspace(n_splits, n_rows, n_heads, head_dim, q.device, 3)
            _launch(_fwd_kernel, _fwd_tuned,
                    lambda bm, bn: (triton.cdiv(n_rows, bm), n_heads, n_splits),
                    (q, k, v, batch_idx, pos, out, lse, ws_acc, ws_m, ws_l, n_rows, seq_len,
                     n_heads, _n_key(n_rows), scale, window or 0, chunk, *_q_strides(q),
                     *_kv_strides(k, v)),
                    _meta(q, head_dim, window, n_splits), blocks)
            if n_splits > 1:
                _combine_fwd_kernel[(triton.cdiv(n_rows, COMBINE_BLOCK_M), n_heads)](
                    ws_acc, ws_m, ws_l, out, lse, n_rows, n_heads, n_splits, DH=head_dim,
                    BLOCK_M=COMBINE_BLOCK_M, BLOCK_D=_block_d(head_dim))
        ctx.save_for_backward(q, k, v, batch_idx, pos, out, lse)
        ctx.cfg = (window, scale, blocks, chunk, n_splits)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, batch_idx, pos, out, lse = ctx.saved_tensors
        window, scale, blocks, chunk, n_splits = ctx.cfg
        n_rows = batch_idx.shape[0]
        n_batch, n_heads, seq_len, head_dim = k.shape
        d_out = d_out.contiguous()  # (N, H, Dh)
        delta = (d_out.float() * out.float()).sum(-1)  # (N, H)
        # dQ is shaped like q; with the full queries only the routed rows are written, so the
        # rest must be zero. dK/dV: every key tile is written (zeros where no row sees it).
        dq = _unit_last(torch.zeros_like(q) if q.dim() == 4 else torch.empty_like(q))
        dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)  # (B, H, T, Dh) contiguous
        dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
        if n_rows == 0:
            return dq.zero_(), dk.zero_(), dv.zero_(), None, None, None, None, None, None
        meta = _meta(q, head_dim, window, n_splits)
        common = (n_heads, _n_key(n_rows), scale, window or 0)
        (ws_dq,) = _workspace(n_splits, n_rows, n_heads, head_dim, q.device, 1)
        _launch(_dq_kernel, _dq_tuned,
                lambda bm, bn: (triton.cdiv(n_rows, bm), n_heads, n_splits),
                (q, k, v, batch_idx, pos, d_out, lse, delta, dq, ws_dq, n_rows, seq_len, *common,
                 chunk, *_q_strides(q), *_kv_strides(k, v), *_q_strides(dq)), meta, blocks)
        if n_splits > 1:
            _combine_dq_kernel[(triton.cdiv(n_rows, COMBINE_BLOCK_M), n_heads)](
                ws_dq, batch_idx, pos, dq, n_rows, n_heads, n_splits, scale, *_q_strides(dq),
                GATHER=q.dim() == 4, DH=head_dim, BLOCK_M=COMBINE_BLOCK_M,
                BLOCK_D=_block_d(head_dim))
        meta.pop("SPLIT")
        row_lo, row_hi = key_tile_row_ranges(batch_idx, pos, n_batch, seq_len, FINE, window)
        _launch(_dkv_kernel, _dkv_tuned,
                lambda bm, bn: (n_batch * triton.cdiv(seq_len, bn), n_heads),
                (q, k, v, batch_idx, pos, d_out, lse, delta, row_lo, row_hi, dk, dv, seq_len,
                 *common, triton.cdiv(seq_len, FINE), *_q_strides(q), *_kv_strides(k, v)),
                meta | {"FINE_N": FINE}, blocks)
        return dq, dk, dv, None, None, None, None, None, None


def _n_key(n_rows: int) -> int:
    """Autotune key for the routed-row count: N rounded up to a power of two."""
    return triton.next_power_of_2(max(n_rows, 1))


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _meta(q, head_dim, window, n_splits) -> dict:
    return {"HAS_WINDOW": window is not None, "GATHER": q.dim() == 4, "SPLIT": n_splits > 1,
            "DH": head_dim, "BLOCK_D": _block_d(head_dim), "PREC": _precision(q.dtype)}


def _workspace(n_splits, n_rows, n_heads, head_dim, device, count):
    """fp32 partials of a split launch: (S, N, H, Dh) and, for count 3, two (S, N, H) more.

    With one chunk nothing is split and a 1-element placeholder stands in for each.
    """
    if n_splits == 1:
        return tuple(torch.empty(1, device=device, dtype=torch.float32) for _ in range(count))
    shapes = [(n_splits, n_rows, n_heads, head_dim), (n_splits, n_rows, n_heads),
              (n_splits, n_rows, n_heads)][:count]
    return tuple(torch.empty(shape, device=device, dtype=torch.float32) for shape in shapes)


def routed_attention_triton(q, k, v, batch_idx, pos, window=None, scale=None, block_m=None,
                            block_n=None, n_splits=None):
    """Triton routed attention; inputs validated. Returns (N, H, Dh).

    ``q``: ``(N, H, Dh)`` routed rows, or the full ``(B, H, T, Dh)`` queries (gathered in the
    kernel). ``block_m`` and ``block_n`` (both or neither; ``block_n`` 16, 32, 64 or 128) fix the
    tiles instead of the autotuned (CUDA) or fixed 16x16 (interpreter) config. ``n_splits``:
    how many key chunks forward and dQ split each query block's keys into (:func:`key_splits`
    when None; 1 = no split; rounded so every chunk is a multiple of 128 keys).
    """
    if n_splits is not None and (isinstance(n_splits, bool) or not isinstance(n_splits, int)
                                 or n_splits < 1):
        raise ValueError(f"n_splits must be None or an int >= 1, got {n_splits!r}")
    scale = 1.0 / math.sqrt(k.shape[-1]) if scale is None else float(scale)
    blocks = None
    if block_m is not None or block_n is not None:
        blocks = (block_m or 64, block_n or 64)
        if blocks[1] % FINE or CHUNK_QUANTUM % blocks[1]:
            raise ValueError(f"block_n must be a multiple of {FINE} dividing {CHUNK_QUANTUM}, "
                             f"got {blocks[1]}")
    return _RoutedAttentionTriton.apply(q, k, v, batch_idx, pos, window, scale, blocks, n_splits)
