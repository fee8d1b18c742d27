"""Timing a model's training step and SRCD generation (``cram srcd speed``, ``cram bench kernels``).

One timed-step helper, :func:`train_step_ms`, serves both: a fresh model at a preset's size and a
trained run's model. Times are medians over ``repeats`` steps after one untimed warm-up step.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import torch

from cram.kernels._common import sync_device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch CPU threads (unchanged when None), then restore."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_step_ms(model, batch: dict, train_cfg, *, temperature: float, loss_step: int,
                  lr: float, repeats: int = 3, seed: int = 0, threads: int | None = None,
                  ) -> float:
    """Median ms of one soft-routed training step: forward, loss, backward and AdamW.

    Parameters
    ----------
    model : nn.Module
        A model of :mod:`cram.models`, in training mode; its weights are updated.
    batch : dict of Tensor
        One SRCD batch (``SRCDBatch.to_torch()``).
    train_cfg : TrainConfig
        Loss weights for :func:`cram.consolidation.losses.compute_loss`.
    temperature : float
        Routing temperature of the soft forward pass.
    loss_step : int
        Training step the loss is computed at (it sets the schedules of the loss terms).
    lr : float
        AdamW learning rate.
    repeats : int
        Timed steps after one untimed warm-up step.
    seed : int
        Seed of the generator that samples routing noise.
    threads : int, optional
        Torch CPU threads for the timing (restored afterwards).

    The step runs on the device of the model's parameters (the batch must be there too); on
    CUDA each timed step ends with a synchronisation.
    """
    from cram.consolidation.losses import compute_loss
    from cram.models import Route

    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    times = []
    with torch_threads(threads):
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            out = model(batch, Route(temperature=temperature, generator=gen))
            loss = compute_loss(out, batch, train_cfg, loss_step).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync_device(device)
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times[1:])


def generation_ms(generator, batch_size: int, repeats: int = 3,
                  seed: int = 0) -> tuple[float, object]:
    """Median ms to generate one SRCD batch (after one warm-up); returns it and the last batch."""
    from cram.tasks.srcd_stream import stream_rng

    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        batch = generator.sample(batch_size, stream_rng(seed, 0, i))
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times[1:]), batch


def srcd_speed_table(presets: list[str], model_name: str, repeats: int = 3, threads: int = 1,
                     seed: int = 0) -> list[dict]:
    """Per preset: median ms to generate one training batch and to run one training step on it.

    Returns one row per preset: preset, length, batch, model, threads, gen_ms_per_batch,
    train_step_ms and gen/step (the share of a step that generation would add in one thread).
    """
    from tqdm import tqdm

    from cram.consolidation.config import resolve
    from cram.models import DataSpec, build_model
    from cram.tasks.srcd_stream import SRCD

    rows = []
    with torch_threads(threads):
        for preset in tqdm(presets, desc="srcd speed", unit="preset", leave=False):
            cfg = resolve(model_name, preset)
            data, bsz = cfg.data, cfg.train.batch_size
            g_med, batch = generation_ms(SRCD(data), bsz, repeats, seed)
            torch.manual_seed(seed)
            spec = DataSpec(data.n_keys, data.n_values, data.key_encoding, data.key_dim)
            model = build_model(model_name, cfg.model, spec)
            s_med = train_step_ms(model, batch.to_torch(), cfg.train, temperature=1.0,
                                  loss_step=cfg.train.warmup_steps + 1, lr=cfg.train.lr,
                                  repeats=repeats, seed=seed)
            rows.append({"preset": preset, "length": data.length, "batch": bsz,
                         "model": model_name, "threads": threads, "gen_ms_per_batch": g_med,
                         "train_step_ms": s_med, "gen/step": g_med / s_med})
    return rows
