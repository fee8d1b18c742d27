"""CT-ODE scan: every backend against the pure-torch loop, forward and backward."""

from __future__ import annotations

import pytest
import torch
from cram.kernels._common import KernelInputError
from cram.kernels.ct_scan import cpu as ct_cpu
from cram.kernels.ct_scan import ct_scan, ct_scan_reference, select_backend

TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 3e-2}


def _inputs(batch, steps, dim, diagonal, dtype=torch.float32, seed=0, h0=True):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, steps, dim, generator=gen, dtype=torch.float64)
    gate = torch.rand(batch, steps, dim, generator=gen, dtype=torch.float64) * 0.5
    w1 = torch.randn(dim, generator=gen, dtype=torch.float64) if diagonal else (
        torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5)
    h = torch.randn(batch, dim, generator=gen, dtype=torch.float64) if h0 else None
    return [x if x is None else x.to(dtype).requires_grad_() for x in (u, gate, w1, h)]


def _fwd_bwd(fn, inputs, seed=1):
    out = fn(*inputs)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), [x for x in inputs if x is not None])
    return out, grads


def _assert_close(got, want, tol, what):
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    scale = want.abs().max().clamp_min(1.0)
    err = (got - want).abs().max() / scale
    assert err <= tol, f"{what}: max rel error {err:.3g} > {tol}"


@pytest.fixture(scope="module")
def cpp_ext():
    ext = ct_cpu.load_extension()
    if ext is None:
        pytest.skip(f"C++ extension did not build here: {ct_cpu._ext_error}")
    return ext


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("steps", [1, 63, 100])
@pytest.mark.parametrize("dim", [5, 64, 72])
def test_cpp_matches_loop_fp32(cpp_ext, diagonal, steps, dim):
    # B = 6: one group of 4 sequences stepped together (the blocked matvec) plus 2 single ones
    inputs = _inputs(6, steps, dim, diagonal)
    out, grads = _fwd_bwd(lambda *a: ct_cpu.ct_scan_cpp(*a), inputs)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    ref, ref_grads = _fwd_bwd(ct_scan_reference, ref_inputs)
    _assert_close(out, ref, TOL[torch.float32], "h")
    for name, g, rg in zip(["du", "dgate", "dw1", "dh0"], grads, ref_grads):
        _assert_close(g, rg, 5e-5, name)


@pytest.mark.parametrize("diagonal", [False, True])
def test_cpp_gradcheck_fp64(cpp_ext, diagonal):
    inputs = _inputs(5, 9, 4, diagonal, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: ct_cpu.ct_scan_cpp(*a), inputs)


def test_cpp_fast_tanh_is_accurate(cpp_ext):
    # a zero state and unit gate make h_1 = tanh(u_1): the float tanh of the extension
    x = torch.linspace(-30, 30, 200_001).reshape(1, 1, -1)
    w1 = torch.zeros(x.shape[-1])
    h = cpp_ext.forward(x, torch.ones_like(x), w1, torch.zeros(1, x.shape[-1]))[0]
    assert (h - torch.tanh(x.double())).abs().max() < 5e-7
    assert h.abs().max() <= 1.0


@pytest.mark.parametrize("diagonal", [False, True])
def test_numba_matches_loop(diagonal):
    if ct_cpu.load_numba() is None:
        pytest.skip(f"numba unavailable: {ct_cpu._numba_error}")
    inputs = _inputs(2, 33, 7, diagonal, dtype=torch.float64)
    out, grads = _fwd_bwd(lambda *a: ct_cpu.ct_scan_numba(*a), inputs)
    ref, ref_grads = _fwd_bwd(ct_scan_reference, inputs)
    _assert_close(out, ref, 1e-10, "h")
    for g, rg in zip(grads, ref_grads):
        _assert_close(g, rg, 1e-10, "grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("steps,dim", [(1, 16), (13, 5), (20, 32)])
def test_triton_matches_loop(dtype, diagonal, steps, dim):
    pytest.importorskip("triton")
    from cram.kernels.ct_scan.triton import ct_scan_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs = [x.detach().to(device).requires_grad_() for x in _inputs(2, steps, dim, diagonal, dtype)]
    out, grads = _fwd_bwd(ct_scan_triton, inputs)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    ref, ref_grads = _fwd_bwd(ct_scan_reference, ref_inputs)
    assert out.dtype == dtype and out.shape == ref.shape
    _assert_close(out, ref, TOL[dtype], "h")
    for name, g, rg in zip(["du", "dgate", "dw1", "dh0"], grads, ref_grads):
        assert g.dtype == dtype
        _assert_close(g, rg, 4 * TOL[dtype], name)


def test_public_entry_point_dispatch_and_defaults():
    u, gate, w1, _ = _inputs(2, 11, 6, False, h0=False)
    out = ct_scan(u, gate, w1)  # h0=None means zeros
    ref = ct_scan_reference(u, gate, w1, torch.zeros(2, 6))
    _assert_close(out, ref, TOL[torch.float32], "h")
    assert select_backend(torch.device("cpu"), torch.bfloat16) == "loop"
    assert ct_scan(u[:, :0], gate[:, :0], w1).shape == (2, 0, 6)
    # non-contiguous input is copied, not misread
    u_nc = u.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not u_nc.is_contiguous()
    _assert_close(ct_scan(u_nc, gate, w1), ref, TOL[torch.float32], "non-contiguous u")


def test_bad_input_is_rejected():
    u, gate, w1, h0 = _inputs(2, 5, 4, False)
    with pytest.raises(KernelInputError, match="gate shape"):
        ct_scan(u, gate[:, :4], w1, h0)
    with pytest.raises(KernelInputError, match="w1 must be"):
        ct_scan(u, gate, w1[:3], h0)
    with pytest.raises(KernelInputError, match="h0 must be"):
        ct_scan(u, gate, w1, h0[:1])
    with pytest.raises(KernelInputError, match="floating point"):
        ct_scan(u, gate, w1.long(), h0)


def test_mixed_dtypes_are_promoted():
    # autocast gives a bf16 drive while W_1 stays fp32: the scan runs in fp32
    u, gate, w1, h0 = _inputs(2, 7, 4, False)
    out = ct_scan(u.bfloat16(), gate, w1, h0)
    assert out.dtype == torch.float32
    ref = ct_scan_reference(u.detach().bfloat16().float(), gate.detach(), w1.detach(), h0.detach())
    _assert_close(out, ref, TOL[torch.float32], "h")
    out.sum().backward()
    assert u.grad is not None and u.grad.dtype == torch.float32
    with pytest.raises(KernelInputError, match="backend"):
        ct_scan(u, gate, w1, h0, backend="fortran")


@pytest.mark.gpu
@pytest.mark.parametrize("diagonal", [False, True])
def test_cuda_entry_point_runs_triton(diagonal):
    inputs = [x.detach().cuda().requires_grad_() for x in _inputs(4, 257, 64, diagonal)]
    assert select_backend(inputs[0].device, inputs[0].dtype) == "triton"
    out, grads = _fwd_bwd(ct_scan, inputs)
    ref, ref_grads = _fwd_bwd(ct_scan_reference, [x.detach().double().requires_grad_() for x in inputs])
    _assert_close(out, ref, 1e-4, "h")
    for g, rg in zip(grads, ref_grads):
        _assert_close(g, rg, 1e-3, "grad")


def test_no_compiler_falls_back_once_with_a_notice():
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from cram.kernels.ct_scan import ct_scan, ct_scan_reference, select_backend\n"
        "u = torch.randn(2, 9, 4); g = torch.rand(2, 9, 4); w = torch.randn(4, 4)\n"
        "for _ in range(3): out = ct_scan(u, g, w)\n"
        "assert torch.allclose(out, ct_scan_reference(u, g, w), atol=1e-5)\n"
        "print(select_backend(u.device, u.dtype))\n"
    )
    env = {**__import__("os").environ, "CRAM_DISABLE_CPP": "1"}
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in {"numba", "loop"}
    assert res.stderr.count("C++ extension unavailable") == 1


def test_stale_build_lock_is_cleared_fresh_one_kept(tmp_path):
    """A lock left by a build killed long ago must not hang later runs; a young one is respected."""
    import os
    import time

    from cram.kernels.ct_scan.cpu import STALE_LOCK_SECONDS, _clear_stale_lock

    lock = tmp_path / "lock"
    lock.touch()
    _clear_stale_lock(lock)
    assert lock.exists()
    old = time.time() - STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale C\\+\\+ build lock"):
        _clear_stale_lock(lock)
    assert not lock.exists()
