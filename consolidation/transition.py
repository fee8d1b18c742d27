"""Phase-transition step: a two-segment change-point fit with a residual bootstrap interval.

The series (by default library-query attention after warm-up) is modelled as one level up to the
change point and another after it; the change point minimises the summed squared error. A residual
bootstrap (resample residuals around the fitted step function, refit) gives the interval. numpy
only.
"""

from __future__ import annotations

import numpy as np


def _best_split(y: np.ndarray) -> tuple[int, float]:
    n = len(y)
    csum, csq = np.cumsum(y), np.cumsum(y * y)
    best_k, best_sse = 1, np.inf
    for k in range(1, n):  # first segment y[:k], second y[k:]
        left = csq[k - 1] - csum[k - 1] ** 2 / k
        right = (csq[-1] - csq[k - 1]) - (csum[-1] - csum[k - 1]) ** 2 / (n - k)
        if left + right < best_sse:
            best_k, best_sse = k, left + right
    return best_k, best_sse


def change_point(steps, values, n_boot: int = 500, level: float = 0.9, min_drop: float = 0.1,
                 seed: int | np.random.Generator | None = 0) -> dict:
    """Change point of a falling series; ``step`` is the first step of the lower segment.

    Returns ``{"step", "low", "high", "level_before", "level_after", "n_boot", "method"}``; ``step``
    is ``None`` when the series has fewer than 4 points or drops by less than ``min_drop``.
    """
    steps = np.asarray(steps, float)
    y = np.asarray(values, float)
    keep = np.isfinite(y)
    steps, y = steps[keep], y[keep]
    result = {"method": "two-segment least squares, residual bootstrap", "n_boot": int(n_boot),
              "level": level, "step": None, "low": None, "high": None,
              "level_before": None, "level_after": None}
    if len(y) < 4:
        return result
    k, _ = _best_split(y)
    before, after = float(y[:k].mean()), float(y[k:].mean())
    result.update(level_before=before, level_after=after)
    if before - after < min_drop:
        return result
    fitted = np.where(np.arange(len(y)) < k, before, after)
    resid = y - fitted
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        kb, _ = _best_split(fitted + rng.choice(resid, len(y), replace=True))
        boot[i] = steps[kb]
    alpha = (1 - level) / 2
    result.update(step=float(steps[k]), low=float(np.quantile(boot, alpha)),
                  high=float(np.quantile(boot, 1 - alpha)))
    return result


def familiarity_rise(steps, qhat_library, qhat_novel, n_boot: int = 500, level: float = 0.9,
                     min_rise: float = 0.1, seed: int | np.random.Generator | None = 0) -> dict:
    """Change point of the rise of familiarity: q̂ on library queries minus q̂ on novel ones.

    The same two-segment fit as :func:`change_point`, on the negated separation series, over the
    whole run (warm-up included: q̂ is trained from step 0). ``step`` is the first step of the
    higher segment; ``None`` when the separation rises by less than ``min_rise``.
    """
    separation = np.asarray(qhat_library, float) - np.asarray(qhat_novel, float)
    out = change_point(steps, -separation, n_boot=n_boot, level=level, min_drop=min_rise, seed=seed)
    for key in ("level_before", "level_after"):
        if out[key] is not None:
            out[key] = -out[key]
    out["series"] = "qhat_library - qhat_novel"
    return out


def transition_summary(metrics, warmup_steps: int, seed: int = 0) -> dict:
    """``transition.json``'s content from a run's metrics table (a pandas DataFrame).

    The attention transition (change point of library-query attention after warm-up), the rise of
    familiarity (change point of q̂ separation) and ``lag_after_familiarity`` = their difference:
    a transition that follows q̂ keeps this lag when the schedule moves, a scheduled one does not.
    """
    after = metrics[metrics["step"] >= warmup_steps]
    attention = change_point(after["step"], after["attention_library"], seed=seed)
    rise = familiarity_rise(metrics["step"], metrics["qhat_library"], metrics["qhat_novel"],
                            seed=seed)
    lag = None
    if attention["step"] is not None and rise["step"] is not None:
        lag = attention["step"] - rise["step"]
    return {"series": "attention_library", "onset": int(warmup_steps), **attention,
            "familiarity_rise": rise, "lag_after_familiarity": lag}
