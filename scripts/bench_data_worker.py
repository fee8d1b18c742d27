"""What drawing the data costs a training loop whose own time is Python (issue 16, item 3).

On a GPU the training loop's thread spends its time in Python, launching kernels; the data
generators are per-position numpy loops that hold the GIL too (SRCD at N = 2048: ~40 ms a
batch). A prefetch *thread* therefore still takes its generation time from the loop; a worker
*process* takes none. This benchmark measures that on any machine, with a stand-in for the
launching loop: ``--loop-ms`` of tiny torch operations per step (each a few microseconds of
Python and dispatch, as a kernel launch is), calibrated alone first. Per preset and round, each
way of drawing the batches runs ``--steps`` steps (after 3 untimed ones: the worker's start):

- ``none``: the loop alone (no data), the floor;
- ``inline``: batch ``i`` drawn in the loop (``train.prefetch=0``);
- ``thread``: ``--depth`` steps ahead in a thread (``train.data_worker=thread``);
- ``process``: ``--depth`` steps ahead in a worker process (``train.data_worker=process``).

The ways alternate within each round, so a shared machine's load falls on all of them alike.
Prints ms per step (median over rounds) and the excess over ``none``, with the machine, load,
date and command, and writes them as a result file (``cram.core.results``) into ``--results
DIR`` (default ``$CRAM_RESULTS_DIR``, else ``./results``; the project's is the repository's
``results/``) unless ``--no-results``. It measures the mechanism, not a GPU: the GPU numbers
come from ``scripts/gpu_check.sh`` (its throughput step).

Usage::

    python scripts/bench_data_worker.py --presets demo,paper --steps 40 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time

import torch

from cram.consolidation.batches import StepBatches, prefetcher
from cram.consolidation.config import get_preset
from cram.core.benchlog import load_line, machine_description, markdown_table, record_benchmark
from cram.core.errors import CramError
from cram.core.results import check_results_dir, default_results_dir, study_id
from cram.tasks.srcd_stream import SRCD

WAYS = ("none", "inline", "thread", "process")
TITLE = "Where the data are drawn: thread or worker process"
COLUMNS = ["preset", "generation_ms_per_batch", "way", "ms_per_step", "over_loop_alone_ms"]


def python_bound_step(n_ops: int) -> None:
    """``n_ops`` tiny torch operations: a stand-in for a loop that launches GPU kernels."""
    x = torch.zeros(16)
    for _ in range(n_ops):
        x = x.mul(1.0001).add_(1e-4)


def calibrate(loop_ms: float) -> int:
    """How many tiny operations take ``loop_ms`` on this machine, with nothing else running."""
    n = 2000
    t0 = time.perf_counter()
    python_bound_step(n)
    per_op_ms = (time.perf_counter() - t0) * 1e3 / n
    return max(1, round(loop_ms / per_op_ms))


def source_for(preset: str, seed: int = 0) -> StepBatches:
    """SRCD batches of ``preset`` (its length and batch size), one rank stream."""
    config = get_preset(preset)
    return StepBatches(SRCD(config.data), seed, [0], config.train.batch_size)


def ms_per_step(source: StepBatches, way: str, steps: int, n_ops: int, depth: int) -> float:
    """Median milliseconds of one (batch, loop) step, drawing the batches ``way``."""
    total = steps + 3
    batches = None if way == "none" else prefetcher(
        source, 0 if way == "inline" else depth, way, total)
    times = []
    try:
        for step in range(total):
            t0 = time.perf_counter()
            if batches is not None:
                batches.get(step)
            python_bound_step(n_ops)
            if step >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        if batches is not None:
            batches.close()
    return statistics.median(times)


def generation_ms(source: StepBatches, repeats: int = 5) -> float:
    """Milliseconds to draw one batch, alone."""
    t0 = time.perf_counter()
    for step in range(repeats):
        source[step]
    return (time.perf_counter() - t0) * 1e3 / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="demo,paper")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop-ms", type=float, default=100.0,
                        help="Python time of one stand-in training step (H200 paper CRAM: ~124 ms)")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="results folder (default $CRAM_RESULTS_DIR, else ./results)")
    parser.add_argument("--no-results", action="store_true", help="write no result file")
    args = parser.parse_args(argv)
    if not args.no_results:
        try:
            check_results_dir(args.results or default_results_dir())
        except CramError as err:
            parser.error(str(err))
    torch.set_num_threads(1)
    load_before = load_line()
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- machine: {machine_description()}")
    print(f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{args.loop_ms:g} ms stand-in loop, prefetch depth {args.depth}")
    n_ops = calibrate(args.loop_ms)
    rows, data = [], []
    for preset in args.presets.split(","):
        source = source_for(preset)
        gen = generation_ms(source)
        runs = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in WAYS:
                runs[way].append(ms_per_step(source, way, args.steps, n_ops, args.depth))
                print(f"  {preset} round {r} {way}: {runs[way][-1]:.1f} ms/step", flush=True)
        floor = statistics.median(runs["none"])
        for way in WAYS:
            ms = statistics.median(runs[way])
            rows.append({"preset": preset, "generation ms/batch": f"{gen:.1f}", "way": way,
                         "ms/step": f"{ms:.1f}", "over the loop alone": f"{ms - floor:+.1f}"})
            data.append(dict(zip(COLUMNS, (preset, gen, way, ms, ms - floor))))
    print(f"- load after: {machine_description().rsplit('; ', 1)[-1]}\n")
    print(markdown_table(rows))
    if not args.no_results:
        notes = (f"A stand-in training loop of {args.loop_ms:g} ms of tiny torch operations per "
                 f"step, prefetch depth {args.depth}, {args.steps} timed steps per way and round, "
                 f"{args.rounds} round(s), medians over rounds; one torch thread. Load before the "
                 f"run: {load_before}. over_loop_alone_ms: ms per step minus the loop alone "
                 "(`none`).")
        path = record_benchmark(study_id(TITLE), TITLE, data, COLUMNS, notes,
                                argv=["python", "scripts/bench_data_worker.py",
                                      *(sys.argv[1:] if argv is None else argv)],
                                results=args.results, seeds=[0])
        print(f"result file: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
