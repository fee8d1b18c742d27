"""Training a small byte-level GPT-2 on the shipped corpus, with checkpoints to probe."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from cram.core.errors import ConfigError
from cram.redundancy.checkpoints import save_gpt2_checkpoint
from cram.redundancy.config import TrainSmallConfig
from cram.redundancy.gpt2 import GPT2
from cram.redundancy.gpt2 import preset as model_preset
from cram.redundancy.text import ByteTokenizer, load_corpus_text, sample_windows


def _lr_at(step: int, cfg: TrainSmallConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine decay to ``min_lr_fraction``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    decayed = (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.lr * (cfg.min_lr_fraction + decayed)


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


class _TrainingLog:
    """``training.csv``: one row (step, lr, train_loss, val_loss, seconds) per checkpoint."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.perf_counter()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(["step", "lr", "train_loss", "val_loss", "seconds"])

    def row(self, step: int, lr: float, train_loss: float, val_loss: float) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([step, lr, train_loss, val_loss,
                                     round(time.perf_counter() - self.t0, 2)])


def _optimizer(model: GPT2, cfg: TrainSmallConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (GPT-2's recipe)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95))


def _data(cfg: TrainSmallConfig, n_positions: int):
    """Token ids of the training split, validation windows (N, T+1) and the seeded streams.

    Returns ``(train_ids, val_windows, init_generator, batch_rng)``; the three streams are spawned
    from ``cfg.seed`` (weights, batches, validation windows).
    """
    tok = ByteTokenizer()
    train_text, val_text = load_corpus_text(val_fraction=cfg.val_fraction)
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
    init_ss, batch_ss, val_ss = np.random.SeedSequence(cfg.seed).spawn(3)
    gen = torch.Generator().manual_seed(int(init_ss.generate_state(1)[0]))
    batch_rng = np.random.default_rng(batch_ss)
    val_windows = sample_windows(val_ids, cfg.val_batches * cfg.batch_size, n_positions + 1,
                                 np.random.default_rng(val_ss))
    return train_ids, val_windows, gen, batch_rng


def _train_step(model: GPT2, opt, windows: np.ndarray, lr: float, grad_clip: float) -> float:
    """One AdamW step on ``windows`` (B, T+1); returns the loss before the step."""
    w = torch.from_numpy(windows)
    for g in opt.param_groups:
        g["lr"] = lr
    loss = model(w[:, :-1], w[:, 1:]).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def train_small(cfg: TrainSmallConfig, out_dir: str | os.PathLike,
                progress: bool = True) -> list[tuple[int, Path]]:
    """Train a byte-level GPT-2 on the shipped corpus; save checkpoints at ``cfg.checkpoint_steps``.

    Writes ``out_dir/checkpoints/step_XXXXXX.pt`` (the trainer's checkpoint format, see
    :mod:`cram.redundancy.checkpoints`) and ``out_dir/training.csv`` (step, lr, train_loss,
    val_loss at each checkpoint). Returns the list of ``(step, checkpoint path)``.
    """
    from tqdm.auto import tqdm

    mcfg = dataclasses.replace(model_preset(cfg.model), dropout=cfg.dropout)
    tok = ByteTokenizer()
    if mcfg.vocab_size != tok.vocab_size:
        raise ConfigError(f"model preset {cfg.model!r} has vocab_size={mcfg.vocab_size}; "
                          "the byte tokenizer needs 256")
    T = mcfg.n_positions
    train_ids, val_windows, gen, batch_rng = _data(cfg, T)
    model = GPT2(mcfg).init_weights(seed=gen)
    opt = _optimizer(model, cfg)
    ck_dir = Path(out_dir) / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    log = _TrainingLog(Path(out_dir) / "training.csv")
    saved: list[tuple[int, Path]] = []
    recent: list[float] = []  # the last 50 training losses

    def checkpoint(step: int) -> None:
        vl = eval_loss(model, val_windows, cfg.batch_size)
        path = save_gpt2_checkpoint(ck_dir / f"step_{step:06d}.pt", model, step,
                                    tokenizer=tok.name, val_loss=vl)
        saved.append((step, path))
        log.row(step, _lr_at(max(step - 1, 0), cfg),
                float(np.mean(recent)) if recent else float("nan"), vl)
        model.train()

    if 0 in cfg.checkpoint_steps:
        checkpoint(0)
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {cfg.preset}", disable=not progress,
               mininterval=1.0)
    for step in bar:
        windows = sample_windows(train_ids, cfg.batch_size, T + 1, batch_rng)
        recent = (recent + [_train_step(model, opt, windows, _lr_at(step - 1, cfg),
                                        cfg.grad_clip)])[-50:]
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(recent):.3f}")
        if step in cfg.checkpoint_steps:
            checkpoint(step)
    return saved
