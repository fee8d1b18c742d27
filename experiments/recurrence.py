"""``cram bench recurrence``: attention fraction against the recurrence f (library share).

For each f, each model is trained on SRCD with ``data.library_share=f`` and evaluated with hard
routing. A static router that keeps accuracy must send every query to attention, whatever f, so its
query attention is 1 (Ω(f·n) in the paper's theorem counts the recurring part of that); CRAM can
drop attention on the recurring (library) share only, so its query attention should fall like
1 − f.
"""

from __future__ import annotations

from pathlib import Path

from .bench import ensure_run


def run_recurrence(models: list[str], preset: str, seeds: int, shares: list[float], root: Path,
                   overrides: list[str], progress: bool = True) -> list[dict]:
    """Train each model at every library share; one row per (model, share, seed)."""
    from cram.core.runs import load_run

    rows = []
    for f in shares:
        for model in models:
            for seed in range(seeds):
                run_dir = Path(root) / f"{model}-f{f:g}-seed{seed}"
                ensure_run(model, preset, seed, run_dir, [*overrides, f"data.library_share={f}"],
                           progress=progress)
                last = load_run(run_dir).metrics.iloc[-1]
                rows.append({"model": model, "seed": seed, "library_share": f,
                             "attention_query": float(last["attention_query"]),
                             "attention_fraction": float(last["attention_fraction"]),
                             "attention_library": float(last["attention_library"]),
                             "retrieval_acc": float(last["retrieval_acc"]),
                             "retrieval_acc_novel": float(last["retrieval_acc_novel"]),
                             "static_floor": 1.0, "run": str(run_dir)})
    return rows
