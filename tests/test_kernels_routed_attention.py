"""Routed attention: torch path, Triton kernel, FlexAttention and twin against dense SDPA.

Triton tests run on the kernel's device: CUDA when present (compiled for real, autotuned block
sizes), else the CPU under ``TRITON_INTERPRET=1`` (set by the root conftest; one fixed 16x16
config). The same test bodies run on both; inputs are built on that device.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from cram.kernels._common import KernelInputError
from cram.kernels.routed_attention import (
    routed_attention,
    routed_attention_reference,
    select_backend,
)
from cram.kernels.routed_attention.cpu import routed_attention_torch

try:  # optional on a --no-deps GPU install: only the property test needs it
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = settings = st = None

TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 3e-2}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the Triton kernels run
INTERPRETED = DEVICE == "cpu"
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    INTERPRETED,
    reason="the Triton interpreter's bf16 tl.dot is wrong (upstream bug): bf16 on CUDA only"))


@pytest.fixture(autouse=True)
def _fixed_blocks_on_cuda(monkeypatch):
    """Fixed 64x64 tiles on CUDA.

    Autotuning would compile every config for every dtype and head dim of these tests (minutes).
    ``test_triton_autotuned_launch`` turns autotuning back on.
    """
    monkeypatch.setenv("CRAM_TRITON_AUTOTUNE", "0")


def _need_triton():
    pytest.importorskip("triton")
    if INTERPRETED and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")


def _case(batch, heads, seq_len, head_dim, p, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq_len, head_dim, generator=gen)
    k = torch.randn(batch, heads, seq_len, head_dim, generator=gen)
    v = torch.randn(batch, heads, seq_len, head_dim, generator=gen)
    sel = torch.rand(batch, seq_len, generator=gen) < p
    if p >= 1:
        sel[:] = True
    batch_idx, pos = sel.nonzero(as_tuple=True)  # sorted by (batch, pos)
    q, k, v = (x.to(device=device, dtype=dtype).requires_grad_() for x in (q, k, v))
    return q, k, v, batch_idx.to(device), pos.to(device)


def _dense_rows(q_full, k, v, batch_idx, pos, window=None):
    """Dense SDPA over every position, read at the routed rows: the oracle, (N, H, Dh)."""
    seq_len = k.shape[2]
    if window is None:
        out = F.scaled_dot_product_attention(q_full.float(), k.float(), v.float(), is_causal=True)
    else:
        t = torch.arange(seq_len, device=k.device)
        band = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)
        out = F.scaled_dot_product_attention(q_full.float(), k.float(), v.float(), attn_mask=band)
    return out.transpose(1, 2)[batch_idx, pos]


def _check_against_dense(fn, q_full, k, v, batch_idx, pos, window, tol, gather=False):
    """Forward and backward of ``fn`` on the routed rows against dense SDPA read at those rows.

    ``gather``: hand ``fn`` the full (B, H, T, Dh) queries instead of the (N, H, Dh) rows.
    """
    q_rows = q_full.detach().transpose(1, 2)[batch_idx, pos].requires_grad_()  # (N, H, Dh)
    q_in = q_full.detach().clone().requires_grad_() if gather else q_rows
    out = fn(q_in, k, v, batch_idx, pos, window)
    assert out.shape == q_rows.shape and out.dtype == q_rows.dtype
    assert out.device == q_rows.device
    assert torch.isfinite(out).all()
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(out.shape, generator=gen).to(out.device)
    dq, dk, dv = torch.autograd.grad((out.float() * weight).sum(), [q_in, k, v], allow_unused=True)
    if gather:  # the gradient of the full queries is zero off the routed rows
        assert dq.shape == q_full.shape
        routed = torch.zeros(q_full.shape[0], q_full.shape[2], dtype=torch.bool, device=dq.device)
        routed[batch_idx, pos] = True
        assert (dq.transpose(1, 2)[~routed] == 0).all()
        dq = dq.transpose(1, 2)[batch_idx, pos]
    # oracle in fp32 from the same (possibly fp16) inputs
    qf = q_full.detach().float().requires_grad_()
    kf, vf = k.detach().float().requires_grad_(), v.detach().float().requires_grad_()
    ref = _dense_rows(qf, kf, vf, batch_idx, pos, window)
    rdq_full, rdk, rdv = torch.autograd.grad((ref * weight).sum(), [qf, kf, vf])
    rdq = rdq_full.transpose(1, 2)[batch_idx, pos]
    for name, got, want in (("out", out, ref), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        got = torch.zeros_like(want) if got is None else got.float()
        assert torch.isfinite(got).all(), f"{name}: non-finite"
        err = (got - want).abs().max().item() if want.numel() else 0.0
        peak = want.abs().max().item() if want.numel() else 1.0
        assert err <= tol * max(1.0, peak), f"{name}: {err:.3g}"


def _triton(q, k, v, b, p, window):
    from cram.kernels.routed_attention.triton import routed_attention_triton

    return routed_attention_triton(q, k, v, b, p, window=window)


def _torch(q, k, v, b, p, window):
    return routed_attention(q, k, v, b, p, window=window, backend="torch")


def _torch_chunked(q, k, v, b, p, window):  # the chunked branch whatever the cost model says
    return routed_attention_torch(q, k, v, b, p, window=window, chunk_cost=0.0, dense_above=1.01)


def _torch_scatter(q, k, v, b, p, window):  # the scatter-into-dense branch
    return routed_attention_torch(q, k, v, b, p, window=window, chunk_cost=float("inf"))


def _reference(q, k, v, b, p, window):
    return routed_attention_reference(q, k, v, b, p, window=window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16])
@pytest.mark.parametrize("seq_len", [1, 37, 100])
@pytest.mark.parametrize("p", [1.0, 0.1, 0.0])
def test_triton_against_dense(dtype, seq_len, p):
    _need_triton()
    q, k, v, b, pos = _case(2, 2, seq_len, 16, p, dtype, seed=seq_len, device=DEVICE)
    _check_against_dense(_triton, q, k, v, b, pos, None, 4 * TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("window", [1, 9])
def test_triton_window_and_odd_head_dim(window, dtype):
    _need_triton()
    q, k, v, b, pos = _case(3, 2, 45, 12, 0.4, dtype, seed=window, device=DEVICE)
    _check_against_dense(_triton, q, k, v, b, pos, window, 4 * TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("blocks", [None, (16, 32)], ids=["tuned", "fixed16x32"])
def test_triton_blocks_spanning_many_sequences(blocks, dtype):
    # p small and many short sequences: one block of rows covers several sequences; a key tile of
    # 32 spans two of the dK/dV row ranges' 16-key granules
    _need_triton()
    q, k, v, b, pos = _case(9, 1, 20, 16, 0.15, dtype, seed=3, device=DEVICE)
    assert b.unique().numel() > 3

    def fn(q, k, v, b, p, window):
        from cram.kernels.routed_attention.triton import routed_attention_triton

        bm, bn = blocks or (None, None)
        return routed_attention_triton(q, k, v, b, p, window=window, block_m=bm, block_n=bn)

    _check_against_dense(fn, q, k, v, b, pos, None, 4 * TOL[dtype])


@pytest.mark.parametrize("window", [None, 7])
def test_triton_fused_gather_of_full_queries(window):
    """Q given as the full (B, H, T, Dh) tensor: rows read in place, dQ zero off the routed rows."""
    _need_triton()
    q, k, v, b, pos = _case(2, 2, 40, 16, 0.3, seed=11, device=DEVICE)
    _check_against_dense(_triton, q, k, v, b, pos, window, 4 * TOL[torch.float32], gather=True)
    # the public entry point takes the full queries on every path
    rows = q.detach().transpose(1, 2)[b, pos]
    want = routed_attention_reference(rows, k.detach(), v.detach(), b, pos, window=window)
    for backend in ("triton", "torch", "reference"):
        got = routed_attention(q.detach(), k.detach(), v.detach(), b, pos, window=window,
                               backend=backend)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.7, 1.0])
def test_triton_entry_point_dense_dispatch_at_high_share(p, monkeypatch):
    """Routed share >= DENSE_ABOVE, full queries, no window: one dense SDPA, rows read out.

    Forward and backward match dense, and the Triton kernel is not run.
    """
    _need_triton()
    from cram.kernels import routed_attention as ra
    from cram.kernels.routed_attention import triton as rt

    q, k, v, b, pos = _case(2, 2, 48, 16, p, seed=3, device=DEVICE)
    assert b.shape[0] >= ra.DENSE_ABOVE * 2 * 48
    assert ra.dense_dispatch(q, k, b.shape[0], None)
    assert not ra.dense_dispatch(q, k, b.shape[0], 7)  # a window keeps the kernel
    assert not ra.dense_dispatch(q.detach().transpose(1, 2)[b, pos], k, b.shape[0], None)

    def no_kernel(*args, **kwargs):
        raise AssertionError("the Triton kernel ran despite the dense dispatch")

    monkeypatch.setattr(rt, "routed_attention_triton", no_kernel)

    def entry(q_in, k_, v_, b_, p_, window):
        return routed_attention(q_in, k_, v_, b_, p_, window=window, backend="triton")

    _check_against_dense(entry, q, k, v, b, pos, None, 4 * TOL[torch.float32], gather=True)


#: the fast tier's pairwise cover of (gather, window, n_splits); the rest of the grid is slow
#: under the Triton interpreter (about 6 s a case on the CPU machines)
_KEY_SPLIT_FAST = {(False, None, 2), (False, 150, 3), (True, 150, 2), (True, None, 5)}
_KEY_SPLIT_GRID = [
    pytest.param(n, w, g, id=f"{'full-q' if g else 'rows'}-{w}-{n}",
                 marks=() if (g, w, n) in _KEY_SPLIT_FAST else pytest.mark.slow)
    for g in (False, True) for w in (None, 150) for n in (2, 3, 5)]


@pytest.mark.parametrize("n_splits, window, gather", _KEY_SPLIT_GRID)
def test_triton_key_split_matches_dense(n_splits, window, gather):
    """Keys split into chunks (flash-decoding), partial softmaxes and dQ merged by combine kernels.

    T = 300 with 128-key chunks: rows early in a sequence have empty later chunks, and with a
    window of 150 rows late in one have empty earlier chunks; both must merge to dense.
    """
    _need_triton()
    from cram.kernels.routed_attention.triton import key_chunk, routed_attention_triton

    assert key_chunk(300, n_splits)[1] == min(n_splits, 3)  # chunks of >= 128 keys: at most 3

    def fn(q, k, v, b, p, w):
        return routed_attention_triton(q, k, v, b, p, window=w, n_splits=n_splits)

    q, k, v, b, pos = _case(3, 2, 300, 16, 0.2, seed=13, device=DEVICE)
    _check_against_dense(fn, q, k, v, b, pos, window, 4 * TOL[torch.float32], gather=gather)


@pytest.mark.parametrize("dtype", [torch.float16, BF16])
def test_triton_key_split_half_precision(dtype):
    """fp16 / bf16 inputs through the fp32 partials, against the fp32 oracle."""
    _need_triton()
    from cram.kernels.routed_attention.triton import routed_attention_triton

    def fn(q, k, v, b, p, w):
        return routed_attention_triton(q, k, v, b, p, window=w, n_splits=4)

    q, k, v, b, pos = _case(2, 2, 520, 16, 0.1, dtype, seed=17, device=DEVICE)
    _check_against_dense(fn, q, k, v, b, pos, None, 4 * TOL[dtype])


def test_triton_key_split_count_follows_parallelism():
    """Split only while the query blocks alone leave the GPU short of programs."""
    from cram.kernels.routed_attention.triton import MIN_CHUNK, key_chunk, key_splits

    # issue 16's miss: p = 0.02, T = 8192, B = 8, H = 8 on 132 SMs: 168 programs -> 7 chunks
    n_rows = round(0.02 * 8192) * 8
    assert key_splits(n_rows, 8, 8192, 132) == 7
    assert key_chunk(8192, 7) == (1280, 7)
    assert key_splits(8192 * 8, 8, 8192, 132) == 1  # p = 1: 8192 programs already
    assert key_splits(10, 8, 256, 132) == 1  # short sequences: chunks would be < MIN_CHUNK
    assert key_splits(10, 8, 1 << 20, 132) == 132 * 8 // 8  # capped by programs, not length
    assert 8192 // key_splits(1, 1, 8192, 10**6) >= MIN_CHUNK
    with pytest.raises(ValueError, match="n_splits"):
        from cram.kernels.routed_attention.triton import routed_attention_triton

        q, k, v, b, pos = _case(1, 1, 8, 16, 1.0)
        routed_attention_triton(q, k, v, b, pos, n_splits=0)


def test_triton_strided_keys_values_are_read_in_place():
    """k, v as the (B, H, T, Dh) views a model makes of one (B, T, 2·H·Dh) projection."""
    _need_triton()
    gen = torch.Generator().manual_seed(5)
    n_batch, seq_len, heads, head_dim = 2, 33, 2, 16
    kv = torch.randn(n_batch, seq_len, 2 * heads * head_dim, generator=gen).to(DEVICE)
    k, v = (x.view(n_batch, seq_len, heads, head_dim).transpose(1, 2) for x in kv.chunk(2, -1))
    assert not k.is_contiguous()
    q, _, _, b, pos = _case(n_batch, heads, seq_len, head_dim, 0.5, seed=5, device=DEVICE)
    _check_against_dense(_triton, q, k.requires_grad_(), v.requires_grad_(), b, pos, None,
                         4 * TOL[torch.float32])


def test_autotune_configs_per_device():
    """CUDA: the config list, keyed on T, Dh and the row count; interpreter: one fixed config."""
    _need_triton()
    from cram.kernels.routed_attention import triton as rt

    for tuned, table in ((rt._fwd_tuned, rt.QUERY_CONFIGS), (rt._dq_tuned, rt.QUERY_CONFIGS),
                         (rt._dkv_tuned, rt.KEY_CONFIGS)):
        assert {"T", "N_KEY", "DH"} <= set(tuned.keys)
        want = [rt.INTERPRETER_CONFIG] if INTERPRETED else table
        got = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in tuned.configs]
        assert got == [w[:2] for w in want]
        assert all(c.kwargs["BLOCK_N"] % rt.FINE == 0 for c in tuned.configs)
    assert rt._n_key(1) == 1 and rt._n_key(100) == 128 and rt._n_key(128) == 128


@pytest.mark.parametrize("window", [None, 5])
def test_triton_autotuned_launch(monkeypatch, window):
    """The autotuned launch (every config timed once on CUDA; the interpreter's one config)."""
    _need_triton()
    monkeypatch.setenv("CRAM_TRITON_AUTOTUNE", "1")
    from cram.kernels.routed_attention import triton as rt

    q, k, v, b, pos = _case(2, 2, 70, 32, 0.5, seed=9, device=DEVICE)
    _check_against_dense(_triton, q, k, v, b, pos, window, 4 * TOL[torch.float32], gather=True)
    for tuned in (rt._fwd_tuned, rt._dq_tuned, rt._dkv_tuned):
        assert tuned.best_config in tuned.configs


def test_fine_row_ranges_compose_to_wide_tiles():
    """The backward's 16-key row ranges give, for any wider tile, the ranges computed directly."""
    from cram.kernels.routed_attention.triton import FINE, key_tile_row_ranges

    gen = torch.Generator().manual_seed(2)
    n_batch, seq_len = 3, 200
    sel = torch.rand(n_batch, seq_len, generator=gen) < 0.2
    b, pos = sel.nonzero(as_tuple=True)
    for window in (None, 5, 40):
        fine_lo, fine_hi = key_tile_row_ranges(b, pos, n_batch, seq_len, FINE, window)
        n_fine = -(-seq_len // FINE)
        for block_n in (16, 32, 64, 128):
            lo, hi = key_tile_row_ranges(b, pos, n_batch, seq_len, block_n, window)
            n_kb = -(-seq_len // block_n)
            for i in range(n_batch * n_kb):
                bb, n0 = divmod(i, n_kb)
                j0 = n0 * block_n // FINE
                j1 = min(-(-(n0 * block_n + block_n) // FINE), n_fine) - 1
                assert fine_lo[bb * n_fine + j0] == lo[i]
                assert fine_hi[bb * n_fine + j1] == hi[i], (window, block_n, i)


@pytest.mark.parametrize("window", [None, 6])
@pytest.mark.parametrize("seq_len", [1, 50])
def test_flex_forward_against_dense(window, seq_len):
    """FlexAttention on the gathered queries (forward; on CPU FlexAttention has no backward)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    q, k, v, b, pos = _case(2, 2, seq_len, 16, 0.3 if seq_len > 1 else 1.0, seed=4, device=DEVICE)
    rows = q.detach().transpose(1, 2)[b, pos]
    with torch.no_grad():
        assert select_backend(q.device, "flex") == "flex"
        got = routed_attention(rows, k, v, b, pos, window=window, backend="flex")
    want = _dense_rows(q.detach(), k.detach(), v.detach(), b, pos, window)
    tol = 1e-5 if INTERPRETED else 1e-4  # compiled kernels on CUDA: other summation orders
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_flex_with_gradients_on_cpu_falls_back_with_a_notice():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from cram.kernels._common import _NOTICES, KernelFallbackWarning

    _NOTICES.discard("routed_attention.flex.cpu")  # said once per process: forget earlier ones
    q, k, v, b, pos = _case(2, 2, 30, 8, 0.3, seed=6)
    rows = q.detach().transpose(1, 2)[b, pos].requires_grad_()
    with pytest.warns(KernelFallbackWarning, match="FlexAttention has no backward"):
        out = routed_attention(rows, k, v, b, pos, backend="flex")
    out.sum().backward()
    assert rows.grad is not None
    assert select_backend(torch.device("cpu"), "flex", needs_grad=True) == "torch"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 64])
def test_flex_fwd_bwd_against_dense_on_cuda(dtype, window):
    q, k, v, b, pos = _case(2, 4, 600, 64, 0.1, dtype, device="cuda")
    def fn(*a):
        return routed_attention(*a[:5], window=a[5], backend="flex")

    _check_against_dense(fn, q, k, v, b, pos, window, 4 * TOL[dtype])


# the oracle twin runs fp16 einsums on CPU very slowly, so it is checked in fp32 only
@pytest.mark.parametrize("fn,dtype", [(_torch, torch.float32), (_torch, torch.float16),
                                      (_torch_chunked, torch.float32),
                                      (_torch_chunked, torch.float16),
                                      (_torch_scatter, torch.float32), (_reference, torch.float32)],
                         ids=["torch-fp32", "torch-fp16", "chunked-fp32", "chunked-fp16",
                              "scatter-fp32", "reference-fp32"])
@pytest.mark.parametrize("seq_len", [1, 63, 100, 300])
@pytest.mark.parametrize("p", [1.0, 0.6, 0.1, 0.02, 0.0])
@pytest.mark.parametrize("window", [None, 17])
def test_torch_paths_against_dense(fn, dtype, seq_len, p, window):
    q, k, v, b, pos = _case(2, 3, seq_len, 8, p, dtype, seed=seq_len)
    _check_against_dense(fn, q, k, v, b, pos, window, 2 * TOL[dtype])


def test_entry_point_dispatch():
    assert select_backend(torch.device("cpu")) == "torch"
    q, k, v, b, pos = _case(2, 2, 50, 8, 0.2)
    rows = q.detach().transpose(1, 2)[b, pos]
    out = routed_attention(rows, k, v, b, pos)
    torch.testing.assert_close(out, _dense_rows(q.detach(), k.detach(), v.detach(), b, pos))
    # non-contiguous k/v give the same answer (copied or read through strides)
    k_nc = k.detach().transpose(2, 3).contiguous().transpose(2, 3)
    assert not k_nc.is_contiguous()
    torch.testing.assert_close(routed_attention(rows, k_nc, v, b, pos, backend="reference"),
                               routed_attention(rows, k, v, b, pos))


def test_bad_input_is_rejected():
    q, k, v, b, pos = _case(2, 2, 20, 8, 0.5)
    rows = q.detach().transpose(1, 2)[b, pos]
    n = rows.shape[0]
    with pytest.raises(KernelInputError, match="sorted"):
        routed_attention(rows, k, v, b.flip(0), pos.flip(0))
    with pytest.raises(KernelInputError, match="outside"):
        routed_attention(rows, k, v, b, pos + 20)
    with pytest.raises(KernelInputError, match="outside"):
        routed_attention(rows, k, v, b + 2, pos)
    with pytest.raises(KernelInputError, match="int64"):
        routed_attention(rows, k, v, b.int(), pos)
    with pytest.raises(KernelInputError, match="H=2, Dh=8"):
        routed_attention(rows[:, :1], k, v, b, pos)
    with pytest.raises(KernelInputError, match=f"\\({n},\\)"):
        routed_attention(rows, k, v, b[:-1], pos[:-1])
    with pytest.raises(KernelInputError, match="dtype"):
        routed_attention(rows.double(), k, v, b, pos)
    with pytest.raises(KernelInputError, match="window"):
        routed_attention(rows, k, v, b, pos, window=0)
    with pytest.raises(KernelInputError, match="backend"):
        routed_attention(rows, k, v, b, pos, backend="cuda")
    with pytest.raises(KernelInputError, match="full q must match"):
        routed_attention(q.detach()[:, :, :-1], k, v, b, pos)
    with pytest.raises(KernelInputError, match=f"\\({n},\\)"):  # full q: indices still checked
        routed_attention(q.detach(), k, v, b[:-1], pos)
    # duplicates are rejected too: they would be attended twice by nobody's intention
    dup_b, dup_p = torch.cat([b[:1], b]), torch.cat([pos[:1], pos])
    with pytest.raises(KernelInputError, match="without repeats"):
        routed_attention(torch.cat([rows[:1], rows]), k, v, dup_b, dup_p)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [1.0, 0.02])
def test_cuda_entry_point_against_dense(dtype, p):
    from cram.kernels.routed_attention import GPU_DEFAULT_BACKEND

    q, k, v, b, pos = _case(2, 4, 1000, 64, p, dtype, device="cuda")
    assert select_backend(q.device) == GPU_DEFAULT_BACKEND
    def fn(*a):
        return routed_attention(*a[:5], window=a[5])

    _check_against_dense(fn, q, k, v, b, pos, None, 4 * TOL[dtype])
    _check_against_dense(fn, q, k, v, b, pos, None, 4 * TOL[dtype], gather=True)


def _property(test):
    """The hypothesis-driven test, or a skipped stub when hypothesis is not installed."""
    if given is None:
        return pytest.mark.skip(reason="hypothesis is not installed")(
            lambda: None)  # pragma: no cover
    return settings(max_examples=25, deadline=None)(given(
        n_batch=st.integers(1, 3),
        seq_len=st.integers(1, 70),
        p=st.floats(0.0, 1.0),
        window=st.one_of(st.none(), st.integers(1, 80)),
        seed=st.integers(0, 2**16),
    )(test))


@_property
def test_torch_path_matches_twin_on_random_selections(n_batch, seq_len, p, window, seed):
    q, k, v, b, pos = _case(n_batch, 2, seq_len, 4, p, seed=seed)
    rows = q.detach().transpose(1, 2)[b, pos]
    want = routed_attention_reference(rows, k.detach(), v.detach(), b, pos, window=window)
    for fn in (_torch, _torch_chunked, _torch_scatter):
        got = fn(rows, k.detach(), v.detach(), b, pos, window)
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
