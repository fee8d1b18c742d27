"""The training stream: batch ``i`` of a run, drawn in the loop, in a thread or in a worker process.

Batch ``i`` of rank ``r`` is a function of (seed, r, i) only (``srcd.stream_rng``), so where it
is drawn changes no bit of it. :class:`StepBatches` is that function as a map-style dataset
indexed by step; :func:`prefetcher` hands the loop batches drawn ahead of it:

- ``train.prefetch = 0``: in the loop (no overlap);
- ``train.data_worker = "thread"``: ``prefetch`` steps ahead in a background thread. The data
  generators are per-position numpy loops that hold the GIL (SRCD at N = 2048: ~40 ms a batch),
  so the thread slows a loop whose own time is Python too, as it is when it launches CUDA work;
- ``"process"``: ``prefetch`` steps ahead in one worker process (``torch.utils.data.DataLoader``),
  which takes no GIL time from the loop at all;
- ``"auto"`` (default): a process on CUDA, a thread elsewhere (on a small CPU box the worker's
  process costs a core the training step would use; issue 16).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import signal
import sys
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from cram.tasks.srcd_stream import stream_rng

__all__ = ["StepBatches", "draw_batch", "prefetcher", "step_batches", "worker_kind"]


class StepBatches(torch.utils.data.Dataset):
    """Batch ``step`` of one rank (or of ``shards`` rank streams concatenated) and its counts.

    ``self[step]`` is ``(step, batch, counts)``: ``counts`` (n_library,) are the training queries
    per library pattern in the batch (the run's exposures).
    """

    def __init__(self, task: Any, seed: int, ranks: list[int], shard_size: int):
        self.task, self.seed, self.ranks = task, seed, list(ranks)
        self.shard_size = shard_size

    def batch(self, step: int):
        """The batch alone: the shards of ``self.ranks``, concatenated along the batch."""
        parts = [self.task.sample_at(step, self.shard_size, stream_rng(self.seed, r, step))
                 for r in self.ranks]
        return type(parts[0]).concat(parts)

    def __getitem__(self, step: int):
        batch = self.batch(step)
        return step, batch, self.task.exposure_counts(batch)


def step_batches(run) -> StepBatches:
    """The run's stream: under DDP this rank's shard, else ``train.data_shards`` rank streams."""
    t = run.config.train
    shards = run.dist.world if run.dist.enabled else t.data_shards
    ranks = [run.dist.rank] if run.dist.enabled else list(range(shards))
    return StepBatches(run.task, run.seed, ranks, t.batch_size // shards)


def draw_batch(run, step: int):
    """Batch ``step``: rank r's shard is a function of (seed, r, step) only."""
    return step_batches(run).batch(step)


def worker_kind(config_value: str, device: torch.device) -> str:
    """``train.data_worker`` resolved for ``device``: "thread" or "process"."""
    if config_value == "auto":
        return "process" if device.type == "cuda" else "thread"
    return config_value


def prefetcher(source: StepBatches, depth: int, kind: str, steps: int):
    """Batches of ``source`` for steps below ``steps``: ``get(step) -> (batch, counts)``.

    ``depth`` steps ahead in a "thread" or a "process" (``worker_kind``); ``depth=0``: drawn in
    ``get``. Call ``close()`` at the end.
    """
    if depth == 0:
        return _Inline(source)
    if kind == "process":
        return _WorkerProcess(source, depth, steps)
    return _Thread(source, depth, steps)


class _Inline:
    """Draws batch ``step`` when asked (``train.prefetch = 0``)."""

    def __init__(self, source: StepBatches):
        self.source = source

    def get(self, step: int):
        return self.source[step][1:]

    def close(self) -> None:
        pass


class _Thread:
    """Batches up to ``depth`` steps ahead, drawn in one background (daemon) thread.

    A daemon thread, not a ``ThreadPoolExecutor``'s: a draw that never returns (a task whose
    ``sample`` hangs) must not keep the process alive. The pool's workers are joined by
    ``shutdown`` and again at interpreter exit, so Ctrl-C (or SIGTERM) used to wait for it forever.
    """

    #: seconds ``close`` waits for a draw in progress before leaving the thread to itself
    CLOSE_WAIT = 0.5

    def __init__(self, source: StepBatches, depth: int, steps: int):
        self.source, self.depth, self.steps = source, depth, steps
        self.pending: dict[int, Future] = {}
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="cram-data", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        """The thread: draw each requested step in order until ``None`` is requested."""
        while (request := self.requests.get()) is not None:
            step, future = request
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.source[step])
            except BaseException as err:  # handed to the loop, which raises it
                future.set_exception(err)

    def get(self, step: int):
        """Return (batch, counts) of ``step`` and queue the next ``depth`` steps."""
        for s in range(step, min(step + self.depth, self.steps - 1) + 1):
            if s not in self.pending:
                self.pending[s] = Future()
                self.requests.put((s, self.pending[s]))
        for s in [s for s in self.pending if s < step]:  # a jump back: drop what it skipped
            self.pending.pop(s).cancel()
        return self.pending.pop(step).result()[1:]

    def close(self) -> None:
        """Cancel queued draws; wait ``CLOSE_WAIT`` s at most for one in progress."""
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()
        self.requests.put(None)
        self.thread.join(self.CLOSE_WAIT)


class _WorkerProcess:
    """Batches up to ``depth`` steps ahead, drawn in one worker process (a DataLoader).

    The loader walks steps in order from the first one asked for; asking for any other step than
    the next (a resume inside one process never does) starts a fresh loader there. The worker
    dies with this process (``kill -9`` included; Linux) and a SIGTERM ends it at once
    (:func:`_worker_init`); a loader closed before its last step stops its worker at once, so a
    worker stuck in a task's ``sample`` costs no wait.
    """

    def __init__(self, source: StepBatches, depth: int, steps: int):
        self.source, self.depth, self.steps = source, depth, steps
        self.iterator, self.next_step = None, None

    def _start(self, step: int) -> None:
        self.close()
        loader = torch.utils.data.DataLoader(
            _InSharedMemory(self.source), batch_size=None, sampler=range(step, self.steps),
            num_workers=1, prefetch_factor=self.depth, collate_fn=_as_is,
            worker_init_fn=functools.partial(_worker_init, os.getpid()))
        with _sigint_deferred():  # a half-built iterator's __del__ prints a traceback
            self.iterator, self.next_step = iter(loader), step

    def get(self, step: int):
        """Return (batch, counts) of ``step``."""
        if self.iterator is None or step != self.next_step:
            self._start(step)
        got, batch, counts = next(self.iterator)
        if got != step:  # the sampler walks consecutive steps; anything else is a bug here
            raise RuntimeError(f"data worker sent step {got} for step {step}")
        self.next_step = step + 1
        return _unpack(batch), counts

    def close(self) -> None:
        """Stop the worker: at once if steps were left (an error, Ctrl-C, SIGTERM), then join it."""
        iterator, self.iterator = self.iterator, None
        if iterator is None:
            return
        workers = list(iterator._workers)
        if self.next_step != self.steps:  # its draws are not wanted, and one may never return
            for worker in workers:
                with contextlib.suppress(OSError, ValueError):
                    worker.terminate()  # the worker's SIGTERM handler exits (code 0) at once
        # joined here, not in the iterator's __del__, which would swallow a Ctrl-C (or a
        # time limit's SIGINT) arriving while it waits: the run would end with status 0
        iterator._shutdown_workers()
        for worker in workers:  # stuck where SIGTERM cannot reach it: no exit-time join on it
            if worker.is_alive():
                worker.kill()
                worker.join(1.0)


def _worker_init(parent: int, worker_id: int) -> None:
    """In the data worker process: die with ``parent``, and exit at once on SIGTERM.

    SIGTERM (from the training process closing the loader, or sent to the whole process group by
    ``kill``, ``timeout`` or a scheduler) ends the worker with exit code 0, which the training
    process's worker watch does not report as a crash: the training process itself handles the
    signal (``cram`` raises ``Terminated`` in it), as it does Ctrl-C, which the worker ignores.
    """
    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, _exit_at_once)


def _exit_at_once(signum, frame) -> None:
    os._exit(0)


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux ``PR_SET_PDEATHSIG``).

    No-op where ``prctl`` is unavailable. ``parent`` is the PID that started this process: if it
    is already gone, this process exits now.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1
    if prctl(pr_set_pdeathsig, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
             ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0 and os.getppid() != parent:
        os._exit(0)


@contextlib.contextmanager
def _sigint_deferred():
    """Hold a SIGINT or SIGTERM that arrives inside the block until it ends.

    In the main thread the handlers are swapped for one that notes the signal; on leaving, the
    handlers are put back and a noted signal is raised again, now that the block's work is
    whole. Elsewhere (signal handlers belong to the main thread) the block runs as it is. A
    worker forked inside inherits the noting handler for SIGINT: Ctrl-C on the terminal's
    process group leaves it to the main process, which shuts it down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
                for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    for signum in dict.fromkeys(noted):
        signal.raise_signal(signum)


class _InSharedMemory(torch.utils.data.Dataset):
    """``source``'s items with the batch's arrays packed into one tensor, sent in shared memory.

    A worker sends a tensor as one file descriptor of its shared memory; numpy arrays would go
    through the pipe (a paper batch: 2 MB, about 5 ms of the loop's time to receive), and a
    tensor per array costs a descriptor each. :func:`_unpack` rebuilds the batch as views.
    """

    def __init__(self, source: StepBatches):
        self.source = source

    def __getitem__(self, step: int):
        step, batch, counts = self.source[step]
        return step, _pack(batch), counts


def _pack(batch):
    """(batch, its array fields None; one uint8 tensor; [(name, dtype, shape, start)])."""
    if not dataclasses.is_dataclass(batch):
        return batch, None, []
    arrays = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
              if f.init and isinstance(getattr(batch, f.name), np.ndarray)}
    layout, start = [], 0
    for name, arr in arrays.items():
        start = -(-start // 16) * 16  # aligned for any dtype
        layout.append((name, arr.dtype.str, arr.shape, start))
        start += arr.nbytes
    buffer = np.empty(start, np.uint8)
    for (name, dtype, shape, offset), arr in zip(layout, arrays.values()):
        buffer[offset:offset + arr.nbytes] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    shell = dataclasses.replace(batch, **{name: None for name in arrays})
    return shell, torch.from_numpy(buffer), layout


def _unpack(packed):
    """The batch of :func:`_pack`, its arrays numpy views on the received buffer."""
    shell, buffer, layout = packed
    if buffer is None:
        return shell
    raw = buffer.numpy()
    return dataclasses.replace(shell, **{
        name: raw[start:start + int(np.prod(shape)) * np.dtype(dtype).itemsize]
        .view(dtype).reshape(shape) for name, dtype, shape, start in layout})


def _as_is(item):
    """DataLoader collate: hand the dataset's item over unchanged (numpy arrays stay numpy)."""
    return item
