"""Routed attention: torch path, Triton kernel (interpreter on CPU) and twin against dense SDPA."""

from __future__ import annotations

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
from hypothesis import given, settings
from hypothesis import strategies as st

TOL = {torch.float32: 2e-5, torch.float16: 2e-2}


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
    """Dense SDPA over every position, read at the routed rows: the oracle. (N, H, Dh)"""
    seq_len = k.shape[2]
    if window is None:
        out = F.scaled_dot_product_attention(q_full.float(), k.float(), v.float(), is_causal=True)
    else:
        t = torch.arange(seq_len, device=k.device)
        band = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)
        out = F.scaled_dot_product_attention(q_full.float(), k.float(), v.float(), attn_mask=band)
    return out.transpose(1, 2)[batch_idx, pos]


def _check_against_dense(fn, q_full, k, v, batch_idx, pos, window, tol):
    """Forward and backward of ``fn`` on the routed rows against dense SDPA read at those rows."""
    q_rows = q_full.detach().transpose(1, 2)[batch_idx, pos].requires_grad_()  # (N, H, Dh)
    out = fn(q_rows, k, v, batch_idx, pos, window)
    assert out.shape == q_rows.shape and out.dtype == q_rows.dtype
    assert torch.isfinite(out).all()
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(out.shape, generator=gen).to(out.device)
    dq, dk, dv = torch.autograd.grad((out.float() * weight).sum(), [q_rows, k, v], allow_unused=True)
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
        assert err <= tol * max(1.0, want.abs().max().item() if want.numel() else 1.0), f"{name}: {err:.3g}"


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("seq_len", [1, 37, 100])
@pytest.mark.parametrize("p", [1.0, 0.1, 0.0])
def test_triton_against_dense(dtype, seq_len, p):
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, b, pos = _case(2, 2, seq_len, 16, p, dtype, seed=seq_len, device=device)
    _check_against_dense(_triton, q, k, v, b, pos, None, 4 * TOL[dtype])


@pytest.mark.parametrize("window", [1, 9])
def test_triton_window_and_odd_head_dim(window):
    pytest.importorskip("triton")
    q, k, v, b, pos = _case(3, 2, 45, 12, 0.4, seed=window)
    _check_against_dense(_triton, q, k, v, b, pos, window, 4 * TOL[torch.float32])


def test_triton_blocks_spanning_many_sequences():
    # p small and many short sequences: one block of 16 rows covers several sequences
    pytest.importorskip("triton")
    q, k, v, b, pos = _case(9, 1, 20, 16, 0.15, seed=3)
    assert b.unique().numel() > 3
    _check_against_dense(_triton, q, k, v, b, pos, None, 4 * TOL[torch.float32])


# the oracle twin runs fp16 einsums on CPU very slowly, so it is checked in fp32 only
@pytest.mark.parametrize("fn,dtype", [(_torch, torch.float32), (_torch, torch.float16),
                                      (_torch_chunked, torch.float32), (_torch_chunked, torch.float16),
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
    # duplicates are rejected too: they would be attended twice by nobody's intention
    dup_b, dup_p = torch.cat([b[:1], b]), torch.cat([pos[:1], pos])
    with pytest.raises(KernelInputError, match="without repeats"):
        routed_attention(torch.cat([rows[:1], rows]), k, v, dup_b, dup_p)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [1.0, 0.02])
def test_cuda_entry_point_against_dense(dtype, p):
    q, k, v, b, pos = _case(2, 4, 1000, 64, p, dtype, device="cuda")
    assert select_backend(q.device) == "triton"
    fn = lambda *a: routed_attention(*a[:5], window=a[5])
    _check_against_dense(fn, q, k, v, b, pos, None, 4 * TOL.get(dtype, 3e-2))


@settings(max_examples=25, deadline=None)
@given(
    n_batch=st.integers(1, 3),
    seq_len=st.integers(1, 70),
    p=st.floats(0.0, 1.0),
    window=st.one_of(st.none(), st.integers(1, 80)),
    seed=st.integers(0, 2**16),
)
def test_torch_path_matches_twin_on_random_selections(n_batch, seq_len, p, window, seed):
    q, k, v, b, pos = _case(n_batch, 2, seq_len, 4, p, seed=seed)
    rows = q.detach().transpose(1, 2)[b, pos]
    want = routed_attention_reference(rows, k.detach(), v.detach(), b, pos, window=window)
    for fn in (_torch, _torch_chunked, _torch_scatter):
        got = fn(rows, k.detach(), v.detach(), b, pos, window)
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
