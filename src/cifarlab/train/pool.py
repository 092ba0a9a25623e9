"""Independent runs side by side on one machine (`--parallel N`): sweeps, the BN study's runs, the
DessiLBI seeds.

A ResNet-18 or VGG-A step at batch 128 leaves an H100 mostly idle (the host launches kernels slower
than the GPU runs them), so two to four runs at once finish a grid in little more than the time of
one. Each run gets its own spawned process (a CUDA context cannot be forked) and a share of the CPU
threads; the data is sent to each process once. Ray with fractional GPUs does the same across
machines (`sweep --engine ray --gpus-per-trial 0.25`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch

from ..errors import UserError

GIB_PER_RUN = 6  # what a ResNet-18 run at batch 128 holds on a GPU (data on the device, bf16), with room
MAX_AUTO = 4  # beyond this a GPU is busy and more runs only queue for it

_shared: Any = None  # what every job of a worker process reads (the datasets), set once per process
_chosen: int | None = None  # the command line's --parallel, for every study and sweep the command runs


def set_parallel(parallel: int | None) -> None:
    """The command's --parallel N (None: the machine decides): one setting for every part of a command
    (pj2 runs sweeps, the BN study and the DessiLBI study), as torch.set_num_threads is for threads."""
    global _chosen
    if parallel is not None and parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {parallel}")
    _chosen = parallel


def default_parallel(device: str = "auto") -> int:
    """How many runs at once: --parallel where given; else on a GPU as many as its memory holds
    (GIB_PER_RUN each), at most MAX_AUTO and one per two CPU cores; on a CPU one (a run already uses
    every core)."""
    if _chosen is not None:
        return _chosen
    if device == "cpu" or not torch.cuda.is_available():
        return 1
    free, _ = torch.cuda.mem_get_info()
    by_memory = int(free / 2**30 // GIB_PER_RUN)
    return max(1, min(MAX_AUTO, by_memory, (os.cpu_count() or 2) // 2))


def quiet(cfg):
    """A run that shares the terminal with others: no progress bar, no epoch lines."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False, log_epochs=False))


def run_all(fn: Callable, jobs: list[tuple], parallel: int, shared: Any = None) -> Iterator[tuple[int, Any]]:
    """(index, fn(shared, *job)) for every job, in the order they finish: here, one after another, when
    parallel <= 1 or there is one job; else in `parallel` processes. fn must be a module-level function."""
    if parallel <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            yield i, fn(shared, *job)
        return
    workers = min(parallel, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = torch.multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(shared, threads))
    try:
        pending = {ex.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
    finally:  # on Ctrl-C or an error: drop what has not started (the runs resume from last.pt)
        ex.shutdown(wait=True, cancel_futures=True)


def _start_worker(shared: Any, threads: int) -> None:
    global _shared
    _shared = shared
    torch.set_num_threads(threads)


def _call(fn: Callable, job: tuple) -> Any:
    return fn(_shared, *job)
