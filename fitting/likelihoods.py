"""Log-likelihoods of a curve's points given the curve's mean R(t) (NumPy; checked vs scipy).

Which one a fit uses (``choose_likelihood``):

- ``binomial``: ``k = round(value · n)`` correct out of ``n`` independent trials. ``auto`` picks
  it only when the rows say what ``n`` counts and it counts trials or queries (``n_kind`` in
  trials/queries); asked for by name (``--likelihood binomial``) it also takes rows whose
  ``n_kind`` is not given, reading ``n`` as trials (the user's assertion), but never rows whose
  ``n`` counts participants.
- ``beta``: a proportion with mean R and precision φ, ``value ~ Beta(R·φ, (1 − R)·φ)``; the
  Bayesian default for proportions whose trial counts are unknown (savings, recall averaged over
  participants, attention shares). Values of exactly 0 or 1 are squeezed as
  ``(v·(N − 1) + 0.5) / N`` with N the number of points (Smithson & Verkuilen 2006).
- ``normal``: ``value ~ Normal(R, σ)``, i.e. least squares; the classic point-fit baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import betaln, gammaln

from cram.core.errors import ConfigError
from cram.psych_data.tidy import COUNT_KINDS

LIKELIHOODS = ("normal", "beta", "binomial")
EPS = 1e-6


def loglik_normal(y, mu, sigma) -> np.ndarray:
    """Log N(y | mu, sigma), elementwise."""
    y, mu = np.asarray(y, float), np.asarray(mu, float)
    z = (y - mu) / sigma
    return -0.5 * z * z - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def loglik_beta(y, mu, phi) -> np.ndarray:
    """Log Beta(y | mu·phi, (1 − mu)·phi), elementwise (mu clipped to [EPS, 1 − EPS])."""
    y = np.asarray(y, float)
    mu = np.clip(np.asarray(mu, float), EPS, 1 - EPS)
    a, b = mu * phi, (1 - mu) * phi
    return (a - 1) * np.log(y) + (b - 1) * np.log1p(-y) - betaln(a, b)


def loglik_binomial(k, n, mu) -> np.ndarray:
    """Log Binomial(k | n, mu), elementwise (mu clipped to [EPS, 1 − EPS])."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    mu = np.clip(np.asarray(mu, float), EPS, 1 - EPS)
    return (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
            + k * np.log(mu) + (n - k) * np.log1p(-mu))


def squeeze01(y) -> np.ndarray:
    """Move exact 0/1 proportions inside (0, 1): (y·(N − 1) + 0.5) / N (Smithson & Verkuilen)."""
    y = np.asarray(y, float)
    if ((y > 0) & (y < 1)).all():
        return y
    n = max(len(y), 2)
    return (y * (n - 1) + 0.5) / n


def _n_kinds(df: pd.DataFrame) -> set[str]:
    """What ``n`` counts per row; rows (or tables) without ``n_kind`` give ``""``."""
    if "n_kind" not in df.columns:
        return {""}
    kinds = df["n_kind"].where(df["n_kind"].notna(), "").astype(str).str.strip()
    return set(kinds.replace({"nan": "", "None": ""}))


def _counts_known(df: pd.DataFrame) -> bool:
    n = df["n"].to_numpy(dtype=float)
    return bool(len(n)) and bool(np.isfinite(n).all()) and bool((n >= 1).all())


def has_counts(df: pd.DataFrame, *, unlabelled_ok: bool = False) -> bool:
    """True when every row's ``n`` is known and counts trials/queries (binomial is justified).

    ``unlabelled_ok`` also accepts rows without an ``n_kind`` (an explicit binomial request).
    """
    allowed = COUNT_KINDS | ({""} if unlabelled_ok else set())
    return _n_kinds(df) <= allowed and _counts_known(df)


def choose_likelihood(df: pd.DataFrame, requested: str = "auto", bayes: bool = False) -> str:
    """Resolve ``auto``: binomial with trial counts, else beta (Bayesian) or normal (point fits).

    ``binomial`` by name needs ``n`` on every row; an absent ``n_kind`` is read as trials.

    Raises
    ------
    ConfigError
        For an unknown name, or ``binomial`` on a curve without trial counts (naming the fix).
    """
    if requested == "auto":
        if has_counts(df):
            return "binomial"
        return "beta" if bayes else "normal"
    if requested not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {requested!r}; choose auto or one of "
                          f"{list(LIKELIHOODS)}")
    if requested == "binomial" and not has_counts(df, unlabelled_ok=True):
        curve = df["curve"].iloc[0] if len(df) else "?"
        other = sorted(_n_kinds(df) - COUNT_KINDS - {""})
        if other:
            raise ConfigError(f"curve {curve!r}: n counts {', '.join(other)} (column n_kind), not "
                              "trials; a binomial likelihood needs trial counts: give n as "
                              "trials with n_kind=trials, or use --likelihood beta or normal")
        raise ConfigError(f"curve {curve!r}: a binomial likelihood needs the number of trials "
                          "behind every value: add a column 'n' (an integer >= 1 on every row), "
                          "or use --likelihood beta or normal")
    return requested
