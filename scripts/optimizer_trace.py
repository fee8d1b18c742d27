"""Trace the optimiser step by step in a window of a training run (issue 28: the late wobble).

Trains ``cram train --model MODEL --preset PRESET --seed S [--set ...]`` from step 0 into a
temporary folder (the same run, bit for bit, as the command without this script: the hooks only
read) and records, for every optimiser step in ``--window A:B``, per parameter tensor:

- ``grad_norm``: its gradient's norm *before* the global clip (``grad_clip``), read by a
  post-accumulate hook on the tensor;
- ``update_norm``: how far the optimiser step moved it;
- ``adam_rms``: the root mean square of AdamW's second-moment estimate after the step (the
  denominator of the update; with ``adam_beta2`` 0.999 it remembers about 1,000 steps).

Tensors are grouped by name without ``.weight`` / ``.bias`` (``blocks.1.working.w1`` is the CT-ODE
recurrence of block 1). Training stops after the window. The result file has one row per group
among the ``--top`` with the largest peak update relative to its median over the first
``--baseline`` steps of the window (modules whose median is below ``--min-share`` of the largest
are left out: rarely used tensors have medians near 0): the median update, the peak ratio and
its step, and the gradient and AdamW-denominator ratios at that step. ``extra`` holds every
step of those groups (for the figure) and the logged rows (library and novel accuracy) inside
the window.

    python scripts/optimizer_trace.py --preset demo --seed 4 --window 1380:1462
        --title "..." [--results results] [--figure docs/img/trace.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = ["module", "median_update", "peak_update_ratio", "peak_step", "grad_ratio_at_peak",
           "adam_rms_ratio_at_peak"]
LOGGED = ["step", "retrieval_acc_library", "retrieval_acc_novel", "acc_library_semantic_only",
          "attention_library", "loss_total"]


class _WindowDone(Exception):
    """Raised before the step after the window: the trace needs nothing later."""


def group_name(param_name: str) -> str:
    """``blocks.1.working.drive.weight`` → ``blocks.1.working.drive``."""
    head, _, last = param_name.rpartition(".")
    return head if last in ("weight", "bias") and head else param_name


class Tracer:
    """Global optimiser hooks and per-tensor gradient hooks that record the window's steps."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop, self.step = start, stop, 0  # step: optimiser steps taken so far
        self.rows: list[dict] = []
        self.names: dict[int, str] = {}
        self.grads: dict[int, float] = {}
        self.before: dict[int, object] = {}

    def attach(self, model) -> None:
        for name, p in model.named_parameters():
            self.names[id(p)] = name
            p.register_post_accumulate_grad_hook(self._grad_hook)

    def _in_window(self) -> bool:
        return self.start <= self.step + 1 <= self.stop  # trainer steps count from 1

    def _grad_hook(self, p) -> None:
        if self._in_window() and p.grad is not None:
            self.grads[id(p)] = float(p.grad.norm())

    def pre(self, optimizer, args, kwargs) -> None:
        if self.step >= self.stop:  # the window's last step and its logged row are done
            raise _WindowDone
        if self._in_window():
            self.before = {id(p): p.detach().clone() for g in optimizer.param_groups
                           for p in g["params"]}

    def post(self, optimizer, args, kwargs) -> None:
        self.step += 1
        if self.start <= self.step <= self.stop:
            per: dict[str, list[float]] = {}
            for g in optimizer.param_groups:
                for p in g["params"]:
                    if id(p) not in self.names:
                        continue
                    sums = per.setdefault(group_name(self.names[id(p)]), [0.0, 0.0, 0.0, 0])
                    sums[0] += self.grads.get(id(p), 0.0) ** 2
                    sums[1] += float((p.detach() - self.before[id(p)]).pow(2).sum())
                    v = optimizer.state.get(p, {}).get("exp_avg_sq")
                    if v is not None:
                        sums[2] += float(v.sum())
                        sums[3] += v.numel()
            for module, (g2, u2, vsum, n) in per.items():
                self.rows.append({"step": self.step, "module": module, "grad_norm": g2 ** 0.5,
                                  "update_norm": u2 ** 0.5,
                                  "adam_rms": (vsum / n) ** 0.5 if n else float("nan")})
            self.grads.clear()


def trace(model_name: str, preset: str, seed: int, overrides: list[str], start: int, stop: int,
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per step × module table, logged metrics rows in the window) of the traced run."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    from cram.consolidation import train as trainer
    from cram.consolidation.config import resolve

    tracer = Tracer(start, stop)
    build = trainer.fresh_state

    def fresh_state(*args, **kwargs):  # the run's model, as the trainer builds it
        ts = build(*args, **kwargs)
        tracer.attach(ts.model)
        return ts

    hooks = [register_optimizer_step_pre_hook(tracer.pre),
             register_optimizer_step_post_hook(tracer.post)]
    trainer.fresh_state = fresh_state
    config = resolve(model_name, preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            trainer.train(model_name, config, Path(tmp) / "run", seed=seed, preset=preset)
        except _WindowDone:
            pass
        finally:
            trainer.fresh_state = build
            for h in hooks:
                h.remove()
        metrics = pd.read_csv(Path(tmp) / "run" / "metrics.csv")
    logged = metrics[(metrics["step"] >= start) & (metrics["step"] <= stop)]
    return pd.DataFrame(tracer.rows), logged[[c for c in LOGGED if c in logged]]


def summarise(steps: pd.DataFrame, baseline: int, top: int, min_share: float = 0.01
              ) -> pd.DataFrame:
    """One row per module: its median update over the baseline steps and its peak after.

    Modules whose median update is below ``min_share`` of the largest median are left out: a
    tensor trained only now and then (attention that few tokens use) has a median near 0, and
    any step that uses it reads as a peak of thousands.
    """
    first = steps["step"].min()
    base = steps[steps["step"] < first + baseline].groupby("module").median(numeric_only=True)
    floor = min_share * base["update_norm"].max()
    rows = []
    for module, g in steps.groupby("module"):
        b = base.loc[module]
        if not b["update_norm"] > floor:
            continue
        g = g.set_index("step")
        ratio = g["update_norm"] / b["update_norm"]
        peak = int(ratio.idxmax())
        rows.append({"module": module, "median_update": float(b["update_norm"]),
                     "peak_update_ratio": float(ratio.max()), "peak_step": peak,
                     "grad_ratio_at_peak": float(g.loc[peak, "grad_norm"] / b["grad_norm"]),
                     "adam_rms_ratio_at_peak": float(g.loc[peak, "adam_rms"] / b["adam_rms"])})
    table = pd.DataFrame(rows).sort_values("peak_update_ratio", ascending=False)
    return table.head(top).reset_index(drop=True)


def plot(steps: pd.DataFrame, logged: pd.DataFrame, table: pd.DataFrame, baseline: int,
         path: Path, title: str) -> None:
    """Update and gradient of the top modules relative to their baseline, and logged accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = steps["step"].min()
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for module in table["module"].head(5):
        g = steps[steps["module"] == module].set_index("step")
        base = g[g.index < first + baseline].median(numeric_only=True)
        axes[0].plot(g.index, g["update_norm"] / base["update_norm"], label=module)
        axes[1].plot(g.index, g["grad_norm"] / base["grad_norm"], label=module)
    total = steps.groupby("step")["grad_norm"].apply(lambda s: (s ** 2).sum() ** 0.5)
    axes[1].plot(total.index, total / total.iloc[:baseline].median(), "k--", label="all (pre-clip)")
    axes[0].set_ylabel("update / its median")
    axes[1].set_ylabel("gradient / its median")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    for col, label in [("retrieval_acc_library", "library"), ("retrieval_acc_novel", "novel"),
                       ("acc_library_semantic_only", "library, semantic tier alone")]:
        if col in logged:
            axes[2].plot(logged["step"], logged[col], "o-", label=label)
    axes[2].set_ylabel("logged accuracy")
    axes[2].set_xlabel("training step")
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cram")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--window", required=True, help="A:B, the trainer steps to trace")
    ap.add_argument("--baseline", type=int, default=40, help="steps at the window's start that "
                    "give each module's median")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--min-share", type=float, default=0.01, help="leave out modules whose "
                    "median update is below this share of the largest median")
    ap.add_argument("--title", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("--results", default="results")
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()
    start, _, stop = args.window.partition(":")
    start, stop = int(start), int(stop)
    if not 1 <= start < stop or stop - start < args.baseline:
        print(f"--window {args.window}: need 1 <= A < B with at least --baseline "
              f"({args.baseline}) steps", file=sys.stderr)
        return 2

    from cram.core.benchlog import git_commit, load_line, machine_line, utc_now
    from cram.core.results import ResultFile, study_id, write_result

    steps, logged = trace(args.model, args.preset, args.seed, args.overrides, start, stop)
    table = summarise(steps, args.baseline, args.top, args.min_share)
    kept = steps[steps["module"].isin(table["module"])]
    commit, _ = git_commit()
    result = ResultFile(
        study=study_id(args.title), title=args.title, command=" ".join(["python", *sys.argv]),
        machine=machine_line(), load=load_line(), commit=commit, date=utc_now(),
        columns=COLUMNS, rows=table.to_dict("records"), seeds=[args.seed],
        notes=args.notes or __doc__.split("\n\n")[1],
        extra={"steps": kept.to_dict("records"), "logged": logged.to_dict("records")})
    print(write_result(result, args.results))
    if args.figure:
        plot(steps, logged, table, args.baseline, args.figure, args.title)
    print(table.to_string(index=False))
    print(logged.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
