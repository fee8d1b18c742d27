"""How predictable is GPT-2's attention from the residual stream? A probe, over training, and a
causal check.

The paper's motivating analysis (CRAM, arXiv 2602.12204) fits a linear map from the pre-attention
hidden state to the attention output and calls attention "redundant" where the map predicts it.
This module:

1. **Probe.** For every layer ``l`` (and every head), fit ridge regression from ``h_l`` (residual
   stream entering block ``l``, *before* ``ln_1``) to ``a_l`` (attention sub-layer output *after*
   ``c_proj``, bias included: what is added to the residual) or, per head, to ``z_{l,k}`` (head
   ``k``'s output *before* ``c_proj``). Fit on tokens of one set of sequences, evaluate on tokens
   of other, held-out sequences. Report pooled R² and the fraction of attention operations (token,
   layer) whose prediction has cosine similarity ≥ τ with the real output, with the sensitivity
   to τ and to a relative-error criterion. Everything is computed twice: with all positions, and
   without position 0 (the "attention sink": there attention sees only the token itself, so its
   output is a fixed function of ``h`` and trivially predictable).
2. **Over training.** :func:`train_small` trains a byte-level GPT-2 on the shipped public-domain
   corpus (``consolidation/corpus``) and saves checkpoints; the probe runs on each.
3. **Causal check.** Replace the attention outputs that the probe calls redundant with the
   probe's prediction and measure the change in next-token loss, per layer and in all layers at
   once; compare with replacing the same number of randomly chosen tokens and with mean
   ablation.

Definitions are in docs/redundancy.md.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cram.core.errors import ConfigError, DataError, RunFolderError
from cram.core.jsonio import atomic_write_json

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"

# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


class ByteTokenizer:
    """Byte-level tokenizer: token id = UTF-8 byte value (vocabulary 256, no merges, no specials).

    GPT-2's BPE vocabulary cannot be downloaded here, so the small models trained in this module
    read raw bytes. The shipped corpus is pure ASCII, so one token is one character.
    """

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class GPT2BPETokenizer:
    """GPT-2's byte-level BPE, read from a local ``vocab.json`` + ``merges.txt`` (encode only).

    The pre-tokenising pattern is GPT-2's, with ``\\p{L}`` written ``[^\\W\\d_]`` and ``\\p{N}``
    written ``\\d`` because the standard ``re`` module lacks unicode classes; on ASCII and most
    Latin text the split is the same.
    """

    name = "gpt2-bpe"
    _PAT = re.compile(
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+|_+""", re.UNICODE
    )

    def __init__(self, vocab_path: str | os.PathLike, merges_path: str | os.PathLike):
        try:
            self.encoder: dict[str, int] = json.loads(Path(vocab_path).read_text("utf-8"))
            lines = Path(merges_path).read_text("utf-8").splitlines()
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read GPT-2 tokenizer files: {err}") from None
        merges = [tuple(ln.split()) for ln in lines if ln and not ln.startswith("#version")]
        bad = [i for i, m in enumerate(merges) if len(m) != 2]
        if bad:
            raise DataError(f"{merges_path}: line {bad[0] + 1} is not a 'left right' merge")
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_map = _bytes_to_unicode()
        self.vocab_size = len(self.encoder)
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((parts[i], parts[i + 1]), math.inf), i)
                     for i in range(len(parts) - 1)]
            rank, i0 = min(pairs)  # the lowest-ranked (earliest learned) merge, leftmost first
            if rank == math.inf:
                break
            left, right = parts[i0], parts[i0 + 1]
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> np.ndarray:
        ids: list[int] = []
        for piece in self._PAT.findall(text):
            if piece not in self._cache:
                word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                try:
                    self._cache[piece] = [self.encoder[t] for t in self._bpe(word)]
                except KeyError as err:
                    raise DataError(f"vocab.json has no entry for BPE token {err}") from None
            ids.extend(self._cache[piece])
        return np.asarray(ids, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def corpus_files(corpus_dir: str | os.PathLike | None = None) -> list[Path]:
    d = Path(corpus_dir) if corpus_dir is not None else CORPUS_DIR
    files = sorted(p for p in d.glob("*.txt") if p.name != "SOURCES.txt")
    if not files:
        raise DataError(f"{d}: no corpus .txt files")
    return files


def load_corpus_text(corpus_dir=None, val_fraction: float = 0.1) -> tuple[str, str]:
    """Return ``(train_text, val_text)``: the last ``val_fraction`` of each work is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = [], []
    for f in corpus_files(corpus_dir):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{f}: not UTF-8 text ({err})") from None
        cut = int(len(text) * (1 - val_fraction))
        train.append(text[:cut])
        val.append(text[cut:])
    return "\n\n".join(train), "\n\n".join(val)


def sample_windows(ids: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows of ``length`` token ids at random offsets: (n, length) int64."""
    if len(ids) <= length:
        raise DataError(f"text has {len(ids)} tokens, fewer than one window of {length + 1}")
    starts = rng.integers(0, len(ids) - length, size=n)
    return np.stack([ids[s:s + length] for s in starts]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe fits and how it is judged.

    Parameters
    ----------
    n_fit_seqs, n_eval_seqs : int
        Sequences (windows of the model's context length, capped at ``seq_len``) to fit on and to
        evaluate on; evaluation windows come from held-out text.
    seq_len : int
        Window length (``0`` = the model's ``n_positions``).
    cos_threshold : float
        An attention operation (token, layer) is "predictable" when cos(a, â) ≥ this.
    cos_grid, relerr_grid : tuple of float
        Thresholds for the sensitivity table (cosine ≥ τ; relative error ‖a − â‖/‖a‖ ≤ ε).
    ridge_alphas : tuple of float
        Ridge strengths relative to the mean eigenvalue of the centred Gram matrix; the one with
        the lowest squared error on a validation fifth of the fit tokens is used.
    batch_size : int
        Sequences per forward pass.
    seed : int
        Seed for the choice of windows and the random-replacement control.
    """

    n_fit_seqs: int = 64
    n_eval_seqs: int = 32
    seq_len: int = 0
    cos_threshold: float = 0.9
    cos_grid: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    relerr_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    ridge_alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_fit_seqs < 2 or self.n_eval_seqs < 1:
            raise ConfigError("ProbeConfig: n_fit_seqs must be >= 2 and n_eval_seqs >= 1")
        if not -1.0 <= self.cos_threshold <= 1.0:
            raise ConfigError(f"ProbeConfig.cos_threshold={self.cos_threshold} not in [-1, 1]")
        if not self.ridge_alphas or min(self.ridge_alphas) <= 0:
            raise ConfigError("ProbeConfig.ridge_alphas must be non-empty and positive")


@dataclass(frozen=True)
class TrainSmallConfig:
    """Training a small byte-level GPT-2 on the shipped corpus, with checkpoints to probe.

    ``model`` names a preset of :data:`cram.models.gpt2.PRESETS`; ``checkpoint_steps`` are the
    steps at which a checkpoint is saved and probed (0 = the initialisation).
    """

    preset: str = "cpu-tiny"
    model: str = "cpu-tiny"
    steps: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    dropout: float = 0.0
    grad_clip: float = 1.0
    checkpoint_steps: tuple[int, ...] = (0, 20, 100)
    val_fraction: float = 0.1
    val_batches: int = 4
    seed: int = 0
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(n_fit_seqs=32, n_eval_seqs=16))

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"TrainSmallConfig.steps must be >= 1, got {self.steps}")
        bad = [s for s in self.checkpoint_steps if not 0 <= s <= self.steps]
        if bad or not self.checkpoint_steps:
            raise ConfigError(
                f"TrainSmallConfig.checkpoint_steps={self.checkpoint_steps}: each must be in "
                f"[0, steps={self.steps}]"
            )


TRAIN_PRESETS: dict[str, TrainSmallConfig] = {
    # about 10-20 s on 2 CPU cores, probe and causal check included
    "cpu-tiny": TrainSmallConfig(),
    # about 5-12 min on one CPU thread of a busy 2-core machine
    "cpu": TrainSmallConfig(
        preset="cpu", model="cpu", steps=600, batch_size=16, lr=2e-3, warmup_steps=40,
        dropout=0.0, checkpoint_steps=(0, 30, 100, 300, 600), val_batches=16,
        probe=ProbeConfig(n_fit_seqs=128, n_eval_seqs=64),
    ),
}


def train_preset(name: str) -> TrainSmallConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown --preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return TRAIN_PRESETS[name]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _lr_at(step: int, cfg: TrainSmallConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def eval_loss(model, windows: np.ndarray, batch_size: int = 16, attn_override=None) -> float:
    """Mean next-token cross-entropy (nats) over all positions of ``windows`` (N, T+1)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = torch.from_numpy(windows[i:i + batch_size])
        out = model(w[:, :-1], w[:, 1:], attn_override=attn_override)
        n = w[:, 1:].numel()
        total += float(out.loss) * n
        count += n
    return total / count


def train_small(cfg: TrainSmallConfig, out_dir: str | os.PathLike, progress: bool = True):
    """Train a byte-level GPT-2 on the shipped corpus; save checkpoints at ``cfg.checkpoint_steps``.

    Writes ``out_dir/checkpoints/step_XXXXXX.pt`` (they rebuild their model) and
    ``out_dir/training.csv`` (step, lr, train_loss, val_loss at each checkpoint). Returns the list
    of ``(step, checkpoint path)``.
    """
    from cram.models.gpt2 import GPT2, save_checkpoint
    from cram.models.gpt2 import preset as model_preset
    from tqdm.auto import tqdm

    mcfg = dataclasses.replace(model_preset(cfg.model), dropout=cfg.dropout)
    tok = ByteTokenizer()
    if mcfg.vocab_size != tok.vocab_size:
        raise ConfigError(f"model preset {cfg.model!r} has vocab_size={mcfg.vocab_size}; "
                          "the byte tokenizer needs 256")
    train_text, val_text = load_corpus_text(val_fraction=cfg.val_fraction)
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
    ss = np.random.SeedSequence(cfg.seed)
    init_ss, batch_ss, val_ss = ss.spawn(3)
    gen = torch.Generator().manual_seed(int(init_ss.generate_state(1)[0]))
    batch_rng = np.random.default_rng(batch_ss)
    T = mcfg.n_positions
    val_windows = sample_windows(val_ids, cfg.val_batches * cfg.batch_size, T + 1,
                                 np.random.default_rng(val_ss))
    model = GPT2(mcfg).init_weights(seed=gen)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    out_dir = Path(out_dir)
    ck_dir = out_dir / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "training.csv"
    with open(log_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["step", "lr", "train_loss", "val_loss", "seconds"])
    saved: list[tuple[int, Path]] = []
    want = set(cfg.checkpoint_steps)
    t0, recent = time.perf_counter(), []

    def checkpoint(step: int) -> None:
        vl = eval_loss(model, val_windows, cfg.batch_size)
        tl = float(np.mean(recent)) if recent else float("nan")
        path = save_checkpoint(ck_dir / f"step_{step:06d}.pt", model, step=step,
                               tokenizer=tok.name, val_loss=vl)
        saved.append((step, path))
        with open(log_path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([step, _lr_at(max(step - 1, 0), cfg), tl, vl,
                                     round(time.perf_counter() - t0, 2)])
        model.train()

    if 0 in want:
        checkpoint(0)
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {cfg.preset}", disable=not progress,
               mininterval=1.0)
    for step in bar:
        w = torch.from_numpy(sample_windows(train_ids, cfg.batch_size, T + 1, batch_rng))
        for g in opt.param_groups:
            g["lr"] = _lr_at(step - 1, cfg)
        loss = model(w[:, :-1], w[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        recent = (recent + [float(loss.detach())])[-50:]
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(recent):.3f}")
        if step in want:
            checkpoint(step)
    return saved


# ---------------------------------------------------------------------------------------------
# Ridge probe
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Running the probe on a model
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def collect(model, windows: np.ndarray, batch_size: int = 16):
    """Run ``model`` on ``windows`` (N, T) and stack the captures per layer.

    Returns a list over layers of ``(h, z, a)`` with shapes (N, T, d), (N, T, H, dh), (N, T, d).
    """
    model.eval()
    per_layer: list[list[list[torch.Tensor]]] = [[[], [], []] for _ in model.blocks]
    for i in range(0, len(windows), batch_size):
        caps = model(torch.from_numpy(windows[i:i + batch_size]), capture=True).captures
        for l, c in enumerate(caps):
            for j, t in enumerate(c):
                per_layer[l][j].append(t)
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
    H = model.config.n_head
    jobs = [(v, f, l) for v, f in VARIANTS for l in range(len(fit_caps))]
    for variant, first, l in tqdm(jobs, desc=f"probe {checkpoint}", disable=not progress,
                                  leave=False):
        h_f, z_f, a_f = (_flat(t, first) for t in fit_caps[l])
        h_e, z_e, a_e = (_flat(t, first) for t in eval_caps[l])
        base = dict(checkpoint=checkpoint, step=step, tokens=variant, layer=l,
                    n_fit=int(h_f.shape[0]), n_eval=int(h_e.shape[0]))
        p = fit_ridge(h_f, a_f, cfg.ridge_alphas)
        probes[(variant, l)] = p
        pred = p.predict(h_e)
        cos, rel = token_cosine(a_e, pred), token_relerr(a_e, pred)
        # baseline: predicting the fit-set mean output for every token (no dependence on h)
        cos0 = token_cosine(a_e, p.y_mean.to(a_e.dtype).expand_as(a_e))
        rows.append(base | dict(head=None, r2=pooled_r2(a_e, pred),
                                predictable_fraction=float((cos >= cfg.cos_threshold).double().mean()),
                                mean_cos=float(cos.mean()), median_relerr=float(rel.median()),
                                baseline_fraction=float((cos0 >= cfg.cos_threshold).double().mean()),
                                alpha=p.alpha))
        for tau in cfg.cos_grid:
            sens.append(base | dict(criterion="cosine>=", threshold=tau,
                                    fraction=float((cos >= tau).double().mean()),
                                    baseline_fraction=float((cos0 >= tau).double().mean())))
        for eps in cfg.relerr_grid:
            sens.append(base | dict(criterion="relerr<=", threshold=eps,
                                    fraction=float((rel <= eps).double().mean())))
        # heads: one ridge to all heads' z at once (ridge is separable over output columns)
        ph = fit_ridge(h_f, z_f.reshape(len(z_f), -1), cfg.ridge_alphas)
        zhat = ph.predict(h_e).reshape(z_e.shape)  # (n, H, dh)
        for k in range(H):
            cos_k = token_cosine(z_e[:, k], zhat[:, k])
            zbar = ph.y_mean.reshape(H, -1)[k].to(z_e.dtype).expand_as(z_e[:, k])
            cos0_k = token_cosine(z_e[:, k], zbar)
            rows.append(base | dict(head=k, r2=pooled_r2(z_e[:, k], zhat[:, k]),
                                    predictable_fraction=float((cos_k >= cfg.cos_threshold)
                                                               .double().mean()),
                                    mean_cos=float(cos_k.mean()),
                                    median_relerr=float(token_relerr(z_e[:, k], zhat[:, k]).median()),
                                    baseline_fraction=float((cos0_k >= cfg.cos_threshold)
                                                            .double().mean()),
                                    alpha=ph.alpha))
    return rows, sens, probes


# ---------------------------------------------------------------------------------------------
# Causal check
# ---------------------------------------------------------------------------------------------


def _make_override(layers: set[int], probes: dict, variant: str, first: bool, mode: str,
                   tau: float, fraction_by_layer: dict[int, float] | None = None,
                   gen: torch.Generator | None = None, mean_a: dict[int, torch.Tensor] | None = None,
                   counter: dict | None = None):
    """Build ``override(layer, h, a)`` for the causal check.

    ``mode``: ``"redundant"`` replaces a by â where cos(a, â) ≥ τ; ``"random"`` replaces a by â
    at randomly chosen tokens, as many as ``fraction_by_layer`` says; ``"all"`` replaces every
    token; ``"mean"`` replaces every token by the mean attention output of the fit tokens. When
    ``first`` is False position 0 is never touched.
    """

    def override(layer: int, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if layer not in layers:
            return a
        p = probes[(variant, layer)]
        pred = p.predict(h) if mode != "mean" else mean_a[layer].to(a.dtype).expand_as(a)
        B, T, d = a.shape
        if mode == "redundant":
            mask = token_cosine(a.reshape(-1, d), pred.reshape(-1, d)).reshape(B, T) >= tau
        elif mode == "random":
            mask = torch.rand(B, T, generator=gen) < fraction_by_layer[layer]
        else:
            mask = torch.ones(B, T, dtype=torch.bool)
        if not first:
            mask[:, 0] = False
        if counter is not None:  # counter[layer] = [replaced, eligible]
            c = counter.setdefault(layer, [0, 0])
            c[0] += int(mask.sum())
            c[1] += B * T if first else B * (T - 1)
        return torch.where(mask[..., None], pred, a)  # (B, T, d)

    return override


@torch.no_grad()
def causal_check(model, probes: dict, eval_windows_plus1: np.ndarray, cfg: ProbeConfig,
                 checkpoint: str = "", step: int | None = None,
                 progress: bool = False) -> list[dict]:
    """Loss change when the attention outputs the probe calls redundant are replaced by its
    prediction, per layer and in all layers at once.

    ``eval_windows_plus1`` is (N, T+1): inputs are ``[:, :-1]``, next-token targets ``[:, 1:]``.
    Each row gives the base loss and, for that layer (``layer`` = "all" for every layer at once),
    ``delta_loss_redundant`` (replace where cos ≥ τ), ``replaced_fraction``,
    ``delta_loss_random`` (replace that many random tokens), ``delta_loss_probe_all`` (replace
    every token) and ``delta_loss_mean_ablation`` (every token set to the fit-set mean output).
    """
    from tqdm.auto import tqdm

    L = model.config.n_layer
    base = eval_loss(model, eval_windows_plus1, cfg.batch_size)
    out = []
    jobs = [(v, f, layer) for v, f in VARIANTS for layer in [*range(L), "all"]]
    for variant, first, layer in tqdm(jobs, desc=f"causal {checkpoint}", disable=not progress,
                                      leave=False):
        layers = set(range(L)) if layer == "all" else {layer}
        mean_a = {l: probes[(variant, l)].y_mean for l in layers}  # fit-token mean of a
        counter: dict = {}
        ovr = _make_override(layers, probes, variant, first, "redundant", cfg.cos_threshold,
                             counter=counter)
        loss_red = eval_loss(model, eval_windows_plus1, cfg.batch_size, ovr)
        frac = sum(c[0] for c in counter.values()) / max(1, sum(c[1] for c in counter.values()))
        # the random control replaces as many tokens per layer, chosen at random
        per_layer = {l: c[0] / max(1, c[1]) for l, c in counter.items()}
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        loss_rand = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                              _make_override(layers, probes, variant, first, "random", 0.0,
                                             per_layer, gen))
        loss_all = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                             _make_override(layers, probes, variant, first, "all", 0.0))
        loss_mean = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                              _make_override(layers, probes, variant, first, "mean", 0.0,
                                             mean_a=mean_a))
        out.append(dict(checkpoint=checkpoint, step=step, tokens=variant, layer=layer,
                        threshold=cfg.cos_threshold, base_loss=base,
                        replaced_fraction=frac, delta_loss_redundant=loss_red - base,
                        delta_loss_random=loss_rand - base, delta_loss_probe_all=loss_all - base,
                        delta_loss_mean_ablation=loss_mean - base))
    return out


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def probe_windows(tokenizer, n_positions: int, cfg: ProbeConfig, text: tuple[str, str] | None = None):
    """Fit windows (N, T) from the training split and eval windows (N, T+1) from the held-out
    split of the corpus (or of ``text = (fit_text, eval_text)``)."""
    fit_text, eval_text = text if text is not None else load_corpus_text()
    T = cfg.seq_len or n_positions
    if T > n_positions:
        raise ConfigError(f"probe seq_len={T} exceeds the model's n_positions={n_positions}")
    fit_ss, eval_ss = np.random.SeedSequence(cfg.seed + 1).spawn(2)
    fit = sample_windows(tokenizer.encode(fit_text), cfg.n_fit_seqs, T,
                         np.random.default_rng(fit_ss))
    # evaluation windows carry one extra token as the last target; T may not exceed n_positions
    ev = sample_windows(tokenizer.encode(eval_text), cfg.n_eval_seqs, T + 1,
                        np.random.default_rng(eval_ss))
    return fit, ev


def analyse_checkpoint(model, name: str, step, tokenizer, cfg: ProbeConfig, text=None,
                       progress: bool = True):
    """Probe + causal check for one model; returns ``(probe_rows, sensitivity, causal_rows)``."""
    fit, ev = probe_windows(tokenizer, model.config.n_positions, cfg, text)
    rows, sens, probes = probe_model(model, fit, ev[:, :-1], cfg, name, step, progress)
    causal = causal_check(model, probes, ev, cfg, name, step, progress)
    return rows, sens, causal


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir``; refuse one that exists and is not empty (nothing is overwritten)."""
    d = Path(out_dir)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise RunFolderError(f"{d}: exists and is not empty; choose another --out (nothing was "
                             "overwritten)")
    d.mkdir(parents=True, exist_ok=True)
    return d


def summarise(rows: list[dict], causal: list[dict]) -> dict:
    """Headline numbers per checkpoint and variant: mean R² / predictable fraction over layers,
    all-layer causal deltas, and the trend over training (Spearman ρ of step vs fraction,
    trained checkpoints only)."""
    from scipy.stats import spearmanr

    out: dict = {"checkpoints": []}
    keys = list(dict.fromkeys((r["checkpoint"], r["step"]) for r in rows))
    for ck, step in keys:
        entry = {"checkpoint": ck, "step": step}
        for v, _ in VARIANTS:
            lay = [r for r in rows if r["checkpoint"] == ck and r["tokens"] == v and r["head"] is None]
            heads = [r for r in rows if r["checkpoint"] == ck and r["tokens"] == v
                     and r["head"] is not None]
            cz = [c for c in causal if c["checkpoint"] == ck and c["tokens"] == v
                  and c["layer"] == "all"]
            entry[v] = {
                "mean_r2": float(np.mean([r["r2"] for r in lay])),
                "mean_predictable_fraction": float(np.mean([r["predictable_fraction"] for r in lay])),
                "mean_baseline_fraction": float(np.mean([r["baseline_fraction"] for r in lay])),
                "mean_head_r2": float(np.mean([r["r2"] for r in heads])) if heads else None,
                "all_layers_delta_loss_redundant": cz[0]["delta_loss_redundant"] if cz else None,
                "all_layers_delta_loss_random": cz[0]["delta_loss_random"] if cz else None,
                "all_layers_delta_loss_mean_ablation": cz[0]["delta_loss_mean_ablation"] if cz else None,
                "base_loss": cz[0]["base_loss"] if cz else None,
            }
        out["checkpoints"].append(entry)
    trained = [e for e in out["checkpoints"] if e["step"] not in (None, 0)]
    if len(trained) >= 3:
        for v, _ in VARIANTS:
            steps = [e["step"] for e in trained]
            for key in ("mean_predictable_fraction", "mean_r2"):
                rho = spearmanr(steps, [e[v][key] for e in trained]).statistic
                out.setdefault("trend", {}).setdefault(v, {})[f"spearman_step_vs_{key}"] = float(rho)
            out["trend"][v]["first_trained"] = trained[0][v]["mean_predictable_fraction"]
            out["trend"][v]["last"] = trained[-1][v]["mean_predictable_fraction"]
    return out


def plot(rows: list[dict], causal: list[dict], path: Path, title: str = "") -> Path:
    """Three panels: R² and predictable fraction by layer (last checkpoint), predictable fraction
    over training per layer, causal loss change per layer. Solid: without the first token;
    dashed: all tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = [r for r in rows if r["head"] is None]
    cks = list(dict.fromkeys((r["checkpoint"], r["step"]) for r in lay))
    last = cks[-1][0]
    L = max(r["layer"] for r in lay) + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ls = {"no_first_token": "-", "all_tokens": "--"}
    ax = axes[0]
    for v, style in ls.items():
        sel = sorted((r for r in lay if r["checkpoint"] == last and r["tokens"] == v),
                     key=lambda r: r["layer"])
        ax.plot([r["layer"] for r in sel], [r["r2"] for r in sel], style, marker="o", color="C0",
                label=f"R² ({v.replace('_', ' ')})")
        ax.plot([r["layer"] for r in sel], [r["predictable_fraction"] for r in sel], style,
                marker="s", color="C1", label=f"predictable ({v.replace('_', ' ')})")
    ax.set(xlabel="layer", ylabel="value (R² clipped at -0.5)", title=f"by layer ({last})",
           ylim=(-0.5, 1.05))
    ax.set_xticks(range(L))
    ax.legend(fontsize=7)
    ax = axes[1]
    steps_known = all(s is not None for _, s in cks)
    for l in range(L):
        for v, style in ls.items():
            sel = [r for r in lay if r["layer"] == l and r["tokens"] == v]
            xs = [max(r["step"], 1) if steps_known else i for i, r in enumerate(sel)]
            ax.plot(xs, [r["predictable_fraction"] for r in sel], style, marker="o", color=f"C{l}",
                    label=f"layer {l}" if v == "no_first_token" else None)
    if steps_known and len(cks) > 1:
        ax.set_xscale("log")
    ax.set(xlabel="training step (0 plotted at 1)" if steps_known else "checkpoint",
           ylabel="predictable fraction", title="over training", ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)
    ax = axes[2]
    cz = [c for c in causal if c["checkpoint"] == last]
    labels = [str(l) for l in range(L)] + ["all"]
    x = np.arange(len(labels))
    for j, (v, hatch) in enumerate((("no_first_token", ""), ("all_tokens", "//"))):
        by = {str(c["layer"]): c for c in cz if c["tokens"] == v}
        ax.bar(x + (j - 0.5) * 0.2 - 0.1, [by[k]["delta_loss_redundant"] for k in labels], 0.2,
               color="C2", hatch=hatch, label=f"probe on 'redundant' ({v.replace('_', ' ')})")
        ax.bar(x + (j - 0.5) * 0.2 + 0.3, [by[k]["delta_loss_random"] for k in labels], 0.2,
               color="C3", hatch=hatch, alpha=0.7, label=f"probe on random ({v.replace('_', ' ')})")
    ax.set_xticks(x + 0.1, labels)
    ax.set(xlabel="layer replaced", ylabel="Δ loss (nats/token)", title=f"causal check ({last})")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_train_small(cfg: TrainSmallConfig, out_dir, progress: bool = True) -> dict:
    """Train, probe every checkpoint, run the causal check, write tables, summary and figure."""
    from cram.models.gpt2 import load_checkpoint

    out = prepare_out_dir(out_dir)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    t0 = time.perf_counter()
    saved = train_small(cfg, out, progress)
    tok = ByteTokenizer()
    rows, sens, causal = [], [], []
    for step, path in saved:
        model, _ = load_checkpoint(path)
        r, s, c = analyse_checkpoint(model, path.stem, step, tok, cfg.probe, progress=progress)
        rows += r
        sens += s
        causal += c
    return _finish(out, rows, sens, causal, f"small GPT-2 ({cfg.model}) on Shakespeare, bytes",
                   time.perf_counter() - t0)


def run_model_dir(model_dir, cfg: ProbeConfig, out_dir, text_file=None, progress=True) -> dict:
    """Probe a Hugging Face GPT-2 directory on the shipped corpus's held-out split (or a text)."""
    from cram.models.gpt2 import load_hf_dir

    model = load_hf_dir(model_dir)
    d = Path(model_dir)
    if model.config.vocab_size == 256:
        tok = ByteTokenizer()
    elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        tok = GPT2BPETokenizer(d / "vocab.json", d / "merges.txt")
        if tok.vocab_size != model.config.vocab_size:
            raise DataError(f"{d}/vocab.json has {tok.vocab_size} entries but config.json says "
                            f"vocab_size={model.config.vocab_size}")
    else:
        raise DataError(f"{d}: needs vocab.json and merges.txt to tokenize text for a model with "
                        f"vocab_size={model.config.vocab_size}")
    text = None
    if text_file is not None:
        try:
            t = Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"--text {text_file}: {err}") from None
        cut = len(t) // 2
        text = (t[:cut], t[cut:])
    out = prepare_out_dir(out_dir)
    (out / "config.json").write_text(json.dumps({"model_dir": str(d), "text": str(text_file),
                                                 "probe": dataclasses.asdict(cfg)}, indent=2))
    t0 = time.perf_counter()
    rows, sens, causal = analyse_checkpoint(model, d.name, None, tok, cfg, text, progress)
    return _finish(out, rows, sens, causal, f"{d.name}", time.perf_counter() - t0)


def _finish(out: Path, rows, sens, causal, title: str, seconds: float) -> dict:
    write_csv(out / "probe.csv", rows)
    write_csv(out / "sensitivity.csv", sens)
    write_csv(out / "causal.csv", causal)
    summary = summarise(rows, causal) | {"seconds": round(seconds, 1), "out_dir": str(out)}
    fig = plot(rows, causal, out / "redundancy.png", title)
    summary["figure"] = str(fig)
    atomic_write_json(out / "summary.json", summary)
    return {"probe": rows, "sensitivity": sens, "causal": causal, "summary": summary}
