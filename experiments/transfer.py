"""``cram bench transfer``: reuse frozen semantic memory and router on unseen tasks.

A trained CRAM run is the source. For each new task the whole network is frozen except the task
heads (value readout and next-signal head), which are retrained for ``finetune_steps`` with hard
routing; the frozen router keeps deciding which tokens attend. It is compared with the same model
trained from scratch on the new task for the same number of steps with the preset's schedule.

Tasks keep the library (same keys, same stored values) but change the task:

- ``dynamics``: a new dynamics family (faster, more damped oscillators, noisier observations);
- ``query-format``: queries must answer π(value) for a fixed permutation π of the value ids;
- ``new-library`` (control): a new library, on keys the source model only ever saw as novel, with
  new values; nothing familiar remains, so no reduction is expected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .bench import ensure_run, finished_same_run

TASKS: dict[str, dict] = {
    "dynamics": {"freq_min": 3.0, "freq_max": 6.0, "decay_min": 0.5, "decay_max": 1.5,
                 "obs_noise": 0.2},
    "query-format": {"answer_permutation_seed": 99},
    "new-library": {"library_keys": "shifted", "library_seed": 4321},
}


def finetune_heads(source_dir: Path, task: dict, steps: int, seed: int, lr: float = 3e-3) -> dict:
    """Retrain only the heads of a trained run's model on ``task``; return hard-routed metrics."""
    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.consolidation.evaluate import evaluate
    from cram.consolidation.losses import compute_loss
    from cram.models import HARD
    from cram.tasks.srcd_stream import SRCD, stream_rng

    model, config, _ = load_trained(source_dir)
    data = dataclasses.replace(config.data, **task)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("heads."))
    heads = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(heads, lr=lr)
    gen = SRCD(data)
    torch.set_num_threads(config.train.threads)
    model.train()
    for step in range(steps):
        batch = gen.sample(config.train.batch_size, stream_rng(seed + 7919, 0, step)).to_torch()
        out = model(batch, HARD)
        loss = compute_loss(out, batch, config.train, config.train.steps)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
    eval_set = gen.eval_set(config.train.eval_sequences, config.train.eval_seed)
    return evaluate(model, eval_set, config.train.eval_batch_size, torch.device("cpu"),
                    task=gen).metrics


def run_transfer(models: list[str], preset: str, seeds: int, root: Path, overrides: list[str],
                 finetune_steps: int | None = None, progress: bool = True) -> list[dict]:
    """Fine-tune frozen trained models on transfer tasks; compare with training from scratch."""
    from cram.consolidation.config import get_preset
    from cram.core.runs import load_run

    root = Path(root)
    steps = finetune_steps or get_preset(preset).train.steps // 2
    rows = []
    for model in models:
        for seed in range(seeds):
            shared = Path(f"runs/bench-srcd-{preset}/{model}-seed{seed}")
            source = shared if finished_same_run(shared, model, preset, seed, overrides) else \
                ensure_run(model, preset, seed, root / f"{model}-source-seed{seed}", overrides,
                           progress=progress)
            for task, changes in TASKS.items():
                frozen = finetune_heads(source, changes, steps, seed)
                scratch_dir = ensure_run(
                    model, preset, seed, root / f"{model}-scratch-{task}-{steps}steps-seed{seed}",
                    [*overrides, f"train.steps={steps}",
                     *(f"data.{k}={v}" for k, v in changes.items())], progress=progress)
                scratch = load_run(scratch_dir).metrics.iloc[-1]
                a_frozen, a_scratch = frozen["attention_query"], float(scratch["attention_query"])
                rows.append({
                    "model": model, "seed": seed, "task": task,
                    "library": "new (control)" if task == "new-library" else "kept",
                    "finetune_steps": steps,
                    "attention_library_frozen": frozen["attention_library"],
                    "attention_library_scratch": float(scratch["attention_library"]),
                    "attention_query_frozen": a_frozen, "attention_query_scratch": a_scratch,
                    "attention_reduction_pct": 100 * (1 - a_frozen / a_scratch) if a_scratch > 0
                    else float("nan"),
                    "retrieval_acc_frozen": frozen["retrieval_acc"],
                    "retrieval_acc_scratch": float(scratch["retrieval_acc"]),
                    "source": str(source)})
    return rows


__all__ = ["TASKS", "finetune_heads", "run_transfer"]
