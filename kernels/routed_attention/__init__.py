"""Routed causal attention: one public entry point, ``routed_attention``.

``backend="auto"``: ``GPU_DEFAULT_BACKEND`` on CUDA (the hand-written Triton kernel); the fast
torch path (``cpu.py``) elsewhere. ``backend="flex"`` runs torch's FlexAttention on the gathered
queries (``flex.py``). The pure-torch twin ``routed_attention_reference`` is the test oracle
(``backend="reference"``). A missing fast path falls back with a one-time notice, never an error.
Derivations: ``README.md``.
"""

from __future__ import annotations

import torch

from .._common import KernelInputError, notice_once, triton_usable
from .reference import routed_attention_reference

__all__ = ["BACKENDS", "DENSE_ABOVE", "GPU_DEFAULT_BACKEND", "dense_dispatch", "routed_attention",
           "routed_attention_reference", "select_backend"]

BACKENDS = ("auto", "triton", "flex", "torch", "reference")

# The path ``backend="auto"`` takes on CUDA: "triton" (hand-written kernel) or "flex"
# (FlexAttention on the gathered queries). From `cram bench kernels --shapes realistic` on one
# H200 (2026-11-30): Triton was faster on the one shape both were timed on (p = 1, T = 8192,
# Dh = 64); FlexAttention at low p was not reached within the check's time limit.
GPU_DEFAULT_BACKEND = "triton"

# Above this routed share (and without a window, with the full (B, H, T, Dh) queries given) the
# Triton path runs one dense causal SDPA (flash on CUDA) and reads the routed rows out of it.
# Measured on one H200 (docs/kernels.md, 2026-11-30, bf16, B·H = 64): the routed kernel took
# 1.34-1.78x flash at p = 1 and 0.70-1.03x at p = 0.5, so it stops paying between the two.
# The 0.6 crossover is read off those rows; the dispatched path itself is not yet timed on a GPU.
DENSE_ABOVE = 0.6


def _validate(q, k, v, batch_idx, pos, window, check_indices):
    for name, x in (("q", q), ("k", k), ("v", v), ("batch_idx", batch_idx), ("pos", pos)):
        if not isinstance(x, torch.Tensor):
            raise KernelInputError(f"routed_attention: {name} must be a torch tensor")
    if q.dim() not in (3, 4):
        raise KernelInputError(
            f"routed_attention: q must be (N, H, Dh) or (B, H, T, Dh), got {tuple(q.shape)}")
    if k.dim() != 4 or v.shape != k.shape:
        raise KernelInputError(
            f"routed_attention: k and v must both be (B, H, T, Dh), got {tuple(k.shape)} and "
            f"{tuple(v.shape)}"
        )
    if q.dim() == 4 and q.shape != k.shape:
        raise KernelInputError(
            f"routed_attention: full q must match k's (B, H, T, Dh) = {tuple(k.shape)}, got "
            f"{tuple(q.shape)}")
    n_rows = q.shape[0] if q.dim() == 3 else (batch_idx.shape[0] if batch_idx.dim() == 1 else -1)
    n_heads, head_dim = q.shape[1], q.shape[-1]
    n_batch, kh, seq_len, kd = k.shape
    if (kh, kd) != (n_heads, head_dim):
        raise KernelInputError(
            f"routed_attention: q has H={n_heads}, Dh={head_dim} but k has H={kh}, Dh={kd}"
        )
    if batch_idx.shape != (n_rows,) or pos.shape != (n_rows,):
        raise KernelInputError(
            f"routed_attention: batch_idx and pos must be ({n_rows},), got "
            f"{tuple(batch_idx.shape)} and {tuple(pos.shape)}"
        )
    if batch_idx.dtype != torch.int64 or pos.dtype != torch.int64:
        raise KernelInputError(
            f"routed_attention: batch_idx and pos must be int64, got {batch_idx.dtype} and "
            f"{pos.dtype}"
        )
    if not q.is_floating_point() or k.dtype != q.dtype or v.dtype != q.dtype:
        raise KernelInputError(
            f"routed_attention: q, k, v must share one floating dtype, got {q.dtype}, "
            f"{k.dtype}, {v.dtype}"
        )
    for name, x in (("k", k), ("v", v), ("batch_idx", batch_idx), ("pos", pos)):
        if x.device != q.device:
            raise KernelInputError(f"routed_attention: {name} is on {x.device}, q is on {q.device}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise KernelInputError(
            f"routed_attention: window must be None or an int >= 1, got {window!r}")
    if check_indices and n_rows > 0:  # host sync: on CPU always, on CUDA only when asked
        if int(batch_idx.min()) < 0 or int(batch_idx.max()) >= n_batch:
            bad = int(((batch_idx < 0) | (batch_idx >= n_batch)).nonzero()[0])
            raise KernelInputError(
                f"routed_attention: batch_idx[{bad}]={int(batch_idx[bad])} is outside "
                f"[0, {n_batch})"
            )
        if int(pos.min()) < 0 or int(pos.max()) >= seq_len:
            bad = int(((pos < 0) | (pos >= seq_len)).nonzero()[0])
            raise KernelInputError(
                f"routed_attention: pos[{bad}]={int(pos[bad])} is outside [0, {seq_len})")
        flat = batch_idx * seq_len + pos  # (N,)
        if n_rows > 1 and not bool((flat[1:] > flat[:-1]).all()):
            bad = int((flat[1:] <= flat[:-1]).nonzero()[0]) + 1
            raise KernelInputError(
                f"routed_attention: rows must be sorted by (batch, pos) without repeats; row {bad} "
                f"(batch {int(batch_idx[bad])}, pos {int(pos[bad])}) follows (batch "
                f"{int(batch_idx[bad - 1])}, pos {int(pos[bad - 1])})"
            )


def select_backend(device: torch.device, backend: str = "auto", needs_grad: bool = False) -> str:
    """The path ``routed_attention`` runs on ``device``: "triton", "flex", "torch" or "reference".

    ``needs_grad``: the call must support a backward (FlexAttention on CPU does not).
    """
    if backend not in BACKENDS:
        raise KernelInputError(
            f"routed_attention: backend={backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        if device.type != "cuda":
            return "torch"
        backend = GPU_DEFAULT_BACKEND
        if backend == "triton" and not triton_usable(device):
            notice_once("routed_attention.auto", "routed_attention: Triton is not importable; "
                        "using the torch path on CUDA")
            return "torch"
    if backend == "flex":
        if not _flex_available():
            notice_once("routed_attention.flex", "routed_attention: FlexAttention is not available "
                        f"in torch {torch.__version__}; using the torch path")
            return "torch"
        if needs_grad and device.type != "cuda":
            notice_once("routed_attention.flex.cpu", "routed_attention: FlexAttention has no "
                        f"backward on {device.type}; using the torch path when gradients are "
                        "needed")
            return "torch"
        return "flex"
    if backend == "triton" and not triton_usable(device):
        notice_once("routed_attention.triton",
                    f"routed_attention: Triton cannot run on {device}; using the torch path")
        return "torch"
    return backend


def dense_dispatch(q: torch.Tensor, k: torch.Tensor, n_rows: int, window: int | None) -> bool:
    """Whether the Triton path hands this call to one dense causal SDPA (``DENSE_ABOVE``).

    Only with the full ``(B, H, T, Dh)`` queries and no window; decided from shapes alone (no
    host sync).
    """
    n_batch, _, seq_len, _ = k.shape
    return q.dim() == 4 and window is None and n_rows >= DENSE_ABOVE * n_batch * seq_len


def _dense_then_rows(q, k, v, batch_idx, pos, scale):
    """One causal SDPA over the full queries, then the routed rows: (N, H, Dh)."""
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)  # (B, H, T, Dh)
    return out[batch_idx, :, pos]


def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def routed_attention(
    q: torch.Tensor,  # (N, H, Dh) routed rows sorted by (batch, pos), or (B, H, T, Dh) full
    k: torch.Tensor,  # (B, H, T, Dh)
    v: torch.Tensor,  # (B, H, T, Dh)
    batch_idx: torch.Tensor,  # (N,) int64
    pos: torch.Tensor,  # (N,) int64
    window: int | None = None,
    scale: float | None = None,
    backend: str = "auto",
    check: bool | None = None,
) -> torch.Tensor:  # (N, H, Dh)
    """Causal attention for routed query rows over the keys of their own sequence.

    Row i attends keys ``j`` of sequence ``batch_idx[i]`` with ``pos[i] - window < j <= pos[i]``
    (no lower bound when ``window`` is None).

    Parameters
    ----------
    q : torch.Tensor
        ``(N, H, Dh)`` queries of the routed rows, or the full ``(B, H, T, Dh)`` queries of which
        the rows ``(batch_idx[i], :, pos[i])`` are used (the Triton kernel reads them in place;
        the other paths gather them first). Rows are flat over the batch, sorted by (batch,
        position), no repeats; ``N`` may be 0.
    k, v : torch.Tensor
        ``(B, H, T, Dh)``, same dtype and device as ``q``. Non-contiguous tensors are copied
        (documented fix-up).
    batch_idx, pos : torch.Tensor
        ``(N,)`` int64 sequence and position of each row.
    window : int or None
        Number of past keys each row sees, itself included; None = the whole prefix.
    scale : float or None
        Softmax scale; ``1/sqrt(Dh)`` when None.
    backend : {"auto", "triton", "flex", "torch", "reference"}
        ``"auto"``: ``GPU_DEFAULT_BACKEND`` on CUDA, the fast torch path elsewhere. ``"flex"``:
        FlexAttention (on CPU forward-only: with gradients it falls back to the torch path).
        ``"triton"`` with full queries, no window and a routed share of at least
        ``DENSE_ABOVE`` runs one dense causal SDPA instead (:func:`dense_dispatch`).
    check : bool or None
        Check index range and order (needs a host sync). None: on CPU yes, on CUDA no.

    Returns
    -------
    torch.Tensor
        ``(N, H, Dh)`` attention output of each routed row.

    Raises
    ------
    KernelInputError
        Mismatched shapes, dtypes or devices; with checks on, out-of-range or unsorted indices.
    """
    if check is None:
        check = q.device.type == "cpu" if isinstance(q, torch.Tensor) else True
    _validate(q, k, v, batch_idx, pos, window, check)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    path = select_backend(q.device, backend, needs_grad)
    if path == "triton" and dense_dispatch(q, k, batch_idx.shape[0], window):
        return _dense_then_rows(q, k, v, batch_idx, pos, scale)
    if path == "triton":
        from .triton import routed_attention_triton

        return routed_attention_triton(q, k, v, batch_idx, pos, window=window, scale=scale)
    if q.dim() == 4:
        q = q[batch_idx, :, pos]  # (N, H, Dh): the other paths take the gathered rows
    if path == "flex" and q.shape[0] > 0:
        from .flex import routed_attention_flex

        return routed_attention_flex(q, k, v, batch_idx, pos, window=window, scale=scale)
    if path == "reference":
        return routed_attention_reference(q, k, v, batch_idx, pos, window=window, scale=scale)
    from .cpu import routed_attention_torch

    return routed_attention_torch(q, k, v, batch_idx, pos, window=window, scale=scale)
