"""The ridge probe from the pre-attention residual h to the attention output a.

Per layer (to a, after ``c_proj``) and per head (to z, before it), with the metrics that judge a
probe: pooled R², per-token cosine and relative error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cram.redundancy.config import ProbeConfig


@dataclass
class RidgeProbe:
    """``ŷ = (x − x_mean) @ W + y_mean``, fitted in float64 by closed-form ridge regression."""

    W: torch.Tensor  # (d_in, d_out)
    x_mean: torch.Tensor  # (d_in,)
    y_mean: torch.Tensor  # (d_out,)
    alpha: float  # chosen relative strength
    lam: float  # absolute ridge penalty

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predict for x (..., d_in) → (..., d_out), in x's dtype."""
        y = (x.double() - self.x_mean) @ self.W + self.y_mean
        return y.to(x.dtype)


def _ridge_solve(evals, evecs, XtY, lam):
    # W = Q diag(1 / (e + λ)) Qᵀ XᵀY      (d_in, d_out)
    return evecs @ ((evecs.T @ XtY) / (evals + lam)[:, None])


def fit_ridge(X: torch.Tensor, Y: torch.Tensor, alphas: Sequence[float],
              val_fraction: float = 0.2) -> RidgeProbe:
    """Closed-form ridge from X (n, d_in) to Y (n, d_out), λ chosen on the last rows.

    λ = α · mean eigenvalue of the centred Gram matrix XᵀX of the training rows, for each α in
    ``alphas``; the α with the lowest squared error on the held-out last ``val_fraction`` of the
    rows is kept and the probe is refitted on all rows. Rows should be ordered by sequence so the
    validation rows come from sequences not used for the sub-fit.
    """
    X, Y = X.double(), Y.double()
    n = X.shape[0]
    n_tr = max(2, int(n * (1 - val_fraction)))

    def stats(Xs, Ys):
        xm, ym = Xs.mean(0), Ys.mean(0)
        Xc = Xs - xm
        G = Xc.T @ Xc  # (d_in, d_in)
        evals, evecs = torch.linalg.eigh(G)
        return xm, ym, evals.clamp_min(0), evecs, Xc.T @ (Ys - ym)

    best = alphas[0]
    if len(alphas) > 1 and n - n_tr >= 1:
        xm, ym, ev, Q, XtY = stats(X[:n_tr], Y[:n_tr])
        scale = float(ev.mean()) or 1.0
        errs = []
        for a in alphas:
            W = _ridge_solve(ev, Q, XtY, a * scale)
            errs.append(float((((X[n_tr:] - xm) @ W + ym - Y[n_tr:]) ** 2).sum()))
        best = alphas[int(np.argmin(errs))]
    xm, ym, ev, Q, XtY = stats(X, Y)
    lam = best * (float(ev.mean()) or 1.0)
    return RidgeProbe(_ridge_solve(ev, Q, XtY, lam), xm, ym, float(best), lam)


def pooled_r2(y: torch.Tensor, yhat: torch.Tensor) -> float:
    """R² = 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖², pooled over tokens and dimensions (ȳ: mean of ``y``)."""
    y, yhat = y.double(), yhat.double()
    sst = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((y - yhat) ** 2).sum()) / sst if sst > 0 else float("nan")


def token_cosine(y: torch.Tensor, yhat: torch.Tensor) -> torch.Tensor:
    """Per-row cosine similarity (n,); rows where either vector is zero give 0."""
    y, yhat = y.double(), yhat.double()
    den = y.norm(dim=-1) * yhat.norm(dim=-1)
    return torch.where(den > 0, (y * yhat).sum(-1) / den.clamp_min(1e-300), torch.zeros_like(den))


def token_relerr(y: torch.Tensor, yhat: torch.Tensor) -> torch.Tensor:
    """Per-row relative error ‖y − ŷ‖ / ‖y‖ (n,)."""
    y, yhat = y.double(), yhat.double()
    return (y - yhat).norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-12)




@torch.no_grad()
def collect(model, windows: np.ndarray, batch_size: int = 16):
    """Run ``model`` on ``windows`` (N, T) and stack the captures per layer.

    Returns a list over layers of ``(h, z, a)`` with shapes (N, T, d), (N, T, H, dh), (N, T, d).
    """
    model.eval()
    per_layer: list[list[list[torch.Tensor]]] = [[[], [], []] for _ in model.blocks]
    for i in range(0, len(windows), batch_size):
        caps = model(torch.from_numpy(windows[i:i + batch_size]), capture=True).captures
        for li, c in enumerate(caps):
            for j, t in enumerate(c):
                per_layer[li][j].append(t)
    return [tuple(torch.cat(ts) for ts in layer) for layer in per_layer]


def _flat(t: torch.Tensor, first: bool) -> torch.Tensor:
    """(N, T, ...) → (N·T', ...) with T' = T or T − 1 (position 0 dropped when not ``first``)."""
    t = t if first else t[:, 1:]
    return t.reshape(-1, *t.shape[2:])


VARIANTS = (("all_tokens", True), ("no_first_token", False))


def probe_model(model, fit_windows: np.ndarray, eval_windows: np.ndarray, cfg: ProbeConfig,
                checkpoint: str = "", step: int | None = None, progress: bool = False):
    """Fit and evaluate ridge probes at every layer and head of ``model``.

    Parameters
    ----------
    fit_windows, eval_windows : ndarray (N, T)
        Token ids; the probe is fitted on ``fit_windows`` and scored on ``eval_windows``.

    Returns
    -------
    rows : list of dict
        One row per (variant, layer, head) with ``head`` = None for the whole layer's ``a``:
        checkpoint, step, tokens (with/without the first), layer, head, r2, predictable_fraction,
        mean_cos, median_relerr, alpha, n_fit, n_eval.
    sensitivity : list of dict
        Fraction predictable at each threshold of ``cos_grid`` and ``relerr_grid`` (layer level).
    probes : dict
        ``probes[(variant, layer)]`` → :class:`RidgeProbe` for the layer's ``a`` (for the causal
        check).
    """
    from tqdm.auto import tqdm

    fit_caps = collect(model, fit_windows, cfg.batch_size)
    eval_caps = collect(model, eval_windows, cfg.batch_size)
    rows, sens, probes = [], [], {}
    jobs = [(v, f, li) for v, f in VARIANTS for li in range(len(fit_caps))]
    for variant, first, li in tqdm(jobs, desc=f"probe {checkpoint}", disable=not progress,
                                   leave=False):
        h_f, z_f, a_f = (_flat(t, first) for t in fit_caps[li])
        h_e, z_e, a_e = (_flat(t, first) for t in eval_caps[li])
        base = dict(checkpoint=checkpoint, step=step, tokens=variant, layer=li,
                    n_fit=int(h_f.shape[0]), n_eval=int(h_e.shape[0]))
        probes[(variant, li)], layer_row, layer_sens = _probe_layer(h_f, a_f, h_e, a_e, cfg)
        rows.append(base | layer_row)
        sens += [base | r for r in layer_sens]
        rows += [base | r for r in _probe_heads(h_f, z_f, h_e, z_e, cfg)]
    return rows, sens, probes


def _fraction(mask: torch.Tensor) -> float:
    """Share of True in ``mask``, computed in float64."""
    return float(mask.double().mean())


def _probe_layer(h_f, a_f, h_e, a_e, cfg: ProbeConfig):
    """Ridge from h (n, d) to the layer's a (n, d): ``(probe, row, sensitivity rows)``."""
    p = fit_ridge(h_f, a_f, cfg.ridge_alphas)
    pred = p.predict(h_e)
    cos, rel = token_cosine(a_e, pred), token_relerr(a_e, pred)
    # baseline: predicting the fit-set mean output for every token (no dependence on h)
    cos0 = token_cosine(a_e, p.y_mean.to(a_e.dtype).expand_as(a_e))
    row = dict(head=None, r2=pooled_r2(a_e, pred),
               predictable_fraction=_fraction(cos >= cfg.cos_threshold),
               mean_cos=float(cos.mean()), median_relerr=float(rel.median()),
               baseline_fraction=_fraction(cos0 >= cfg.cos_threshold), alpha=p.alpha)
    sens = [dict(criterion="cosine>=", threshold=tau, fraction=_fraction(cos >= tau),
                 baseline_fraction=_fraction(cos0 >= tau)) for tau in cfg.cos_grid]
    sens += [dict(criterion="relerr<=", threshold=eps, fraction=_fraction(rel <= eps))
             for eps in cfg.relerr_grid]
    return p, row, sens


def _probe_heads(h_f, z_f, h_e, z_e, cfg: ProbeConfig) -> list[dict]:
    """One row per head: ridge from h (n, d) to the head outputs z (n, H, dh) before c_proj."""
    # one ridge to all heads' z at once (ridge is separable over output columns)
    ph = fit_ridge(h_f, z_f.reshape(len(z_f), -1), cfg.ridge_alphas)
    zhat = ph.predict(h_e).reshape(z_e.shape)  # (n, H, dh)
    n_heads = z_e.shape[1]
    rows = []
    for k in range(n_heads):
        z, zk = z_e[:, k], zhat[:, k]  # (n, dh)
        cos_k = token_cosine(z, zk)
        zbar = ph.y_mean.reshape(n_heads, -1)[k].to(z_e.dtype).expand_as(z)
        rows.append(dict(head=k, r2=pooled_r2(z, zk),
                         predictable_fraction=_fraction(cos_k >= cfg.cos_threshold),
                         mean_cos=float(cos_k.mean()),
                         median_relerr=float(token_relerr(z, zk).median()),
                         baseline_fraction=_fraction(token_cosine(z, zbar) >= cfg.cos_threshold),
                         alpha=ph.alpha))
    return rows
