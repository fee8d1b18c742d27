"""Routed causal attention: one public entry point, ``routed_attention``.

``backend="auto"``: the Triton kernel on CUDA; the fast torch path (``cpu.py``) elsewhere. The
pure-torch twin ``routed_attention_reference`` is the test oracle (``backend="reference"``). A
missing fast path falls back with a one-time notice, never an error. Derivations: ``README.md``.
"""

from __future__ import annotations

import torch

from .._common import KernelInputError, notice_once, triton_usable
from .reference import routed_attention_reference

__all__ = ["BACKENDS", "routed_attention", "routed_attention_reference", "select_backend"]

BACKENDS = ("auto", "triton", "torch", "reference")


def _validate(q, k, v, batch_idx, pos, window, check_indices):
    for name, x in (("q", q), ("k", k), ("v", v), ("batch_idx", batch_idx), ("pos", pos)):
        if not isinstance(x, torch.Tensor):
            raise KernelInputError(f"routed_attention: {name} must be a torch tensor")
    if q.dim() != 3:
        raise KernelInputError(f"routed_attention: q must be (N, H, Dh), got {tuple(q.shape)}")
    if k.dim() != 4 or v.shape != k.shape:
        raise KernelInputError(
            f"routed_attention: k and v must both be (B, H, T, Dh), got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    n_rows, n_heads, head_dim = q.shape
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
            f"routed_attention: batch_idx and pos must be int64, got {batch_idx.dtype} and {pos.dtype}"
        )
    if not q.is_floating_point() or k.dtype != q.dtype or v.dtype != q.dtype:
        raise KernelInputError(
            f"routed_attention: q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    for name, x in (("k", k), ("v", v), ("batch_idx", batch_idx), ("pos", pos)):
        if x.device != q.device:
            raise KernelInputError(f"routed_attention: {name} is on {x.device}, q is on {q.device}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise KernelInputError(f"routed_attention: window must be None or an int >= 1, got {window!r}")
    if check_indices and n_rows > 0:  # host sync: on CPU always, on CUDA only when asked
        if int(batch_idx.min()) < 0 or int(batch_idx.max()) >= n_batch:
            bad = int(((batch_idx < 0) | (batch_idx >= n_batch)).nonzero()[0])
            raise KernelInputError(
                f"routed_attention: batch_idx[{bad}]={int(batch_idx[bad])} is outside [0, {n_batch})"
            )
        if int(pos.min()) < 0 or int(pos.max()) >= seq_len:
            bad = int(((pos < 0) | (pos >= seq_len)).nonzero()[0])
            raise KernelInputError(f"routed_attention: pos[{bad}]={int(pos[bad])} is outside [0, {seq_len})")
        flat = batch_idx * seq_len + pos  # (N,)
        if n_rows > 1 and not bool((flat[1:] > flat[:-1]).all()):
            bad = int((flat[1:] <= flat[:-1]).nonzero()[0]) + 1
            raise KernelInputError(
                f"routed_attention: rows must be sorted by (batch, pos) without repeats; row {bad} "
                f"(batch {int(batch_idx[bad])}, pos {int(pos[bad])}) follows (batch "
                f"{int(batch_idx[bad - 1])}, pos {int(pos[bad - 1])})"
            )


def select_backend(device: torch.device, backend: str = "auto") -> str:
    """The path ``routed_attention`` runs for tensors on ``device``: "triton", "torch" or "reference"."""
    if backend not in BACKENDS:
        raise KernelInputError(f"routed_attention: backend={backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda":
            if triton_usable(device):
                return "triton"
            notice_once("routed_attention.auto", "routed_attention: Triton is not importable; "
                        "using the torch path on CUDA")
        return "torch"
    if backend == "triton" and not triton_usable(device):
        notice_once("routed_attention.triton",
                    f"routed_attention: Triton cannot run on {device}; using the torch path")
        return "torch"
    return backend


def routed_attention(
    q: torch.Tensor,  # (N, H, Dh) queries of the routed rows only, sorted by (batch, pos)
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
        ``(N, H, Dh)`` routed rows, flat over the batch, sorted by (batch, position), no repeats.
        ``N`` may be 0.
    k, v : torch.Tensor
        ``(B, H, T, Dh)``, same dtype and device as ``q``. Non-contiguous tensors are copied
        (documented fix-up).
    batch_idx, pos : torch.Tensor
        ``(N,)`` int64 sequence and position of each row.
    window : int or None
        Number of past keys each row sees, itself included; None = the whole prefix.
    scale : float or None
        Softmax scale; ``1/sqrt(Dh)`` when None.
    backend : {"auto", "triton", "torch", "reference"}
        ``"auto"``: Triton on CUDA, the fast torch path elsewhere.
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
    path = select_backend(q.device, backend)
    if path == "reference":
        return routed_attention_reference(q, k, v, batch_idx, pos, window=window, scale=scale)
    if path == "triton":
        from .triton import routed_attention_triton

        return routed_attention_triton(q, k, v, batch_idx, pos, window=window, scale=scale)
    from .cpu import routed_attention_torch

    return routed_attention_torch(q, k, v, batch_idx, pos, window=window, scale=scale)
