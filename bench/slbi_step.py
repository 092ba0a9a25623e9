"""One SLBI step against one SGD-momentum step on VGG_A_BatchNorm, side by side in one run.

Two timings per optimizer, each the median over --steps (CUDA events on the GPU, perf_counter on
the CPU), after --warmup untimed steps:
  optimizer_ms  opt.step() alone, on fixed gradients (what the optimizer itself costs);
  train_ms      forward + backward + opt.step() on a fixed batch (what a training step costs).
SLBI tracks all 8 conv kernels and 3 FC weights (the default), lr 0.1, kappa 1, mu 100,
momentum 0.9; SGD is torch.optim.SGD(lr 0.1, momentum 0.9) with its default (foreach) kernels.

    python bench/slbi_step.py --out $OUT/slbi_step.json            # on the GPU machine
    python bench/slbi_step.py --device cpu --steps 3 --warmup 1    # smoke check

Acceptance: SLBI <= 1.5x SGD per step (train_ratio); optimizer_ratio is reported beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cifarlab.models import create_model
from cifarlab.run import environment
from cifarlab.train.slbi import SLBI


def timed(fn: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of fn over steps calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def measure(name: str, model: torch.nn.Module, make_opt, x, y, steps: int, warmup: int, device) -> dict:
    model = copy.deepcopy(model)
    opt = make_opt(model)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_ms = timed(train_step, steps, warmup, device)
    optimizer_ms = timed(opt.step, steps, warmup, device)  # gradients of the last train step stay
    out = {"optimizer": name, "optimizer_ms": optimizer_ms, "train_ms": train_ms}
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default="-", help="JSON file (default: stdout)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; use --device cpu for a smoke check")

    torch.manual_seed(0)
    model = create_model("VGG_A_BatchNorm").to(device)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    sgd = measure(
        "sgd_momentum",
        model,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
        x,
        y,
        args.steps,
        args.warmup,
        device,
    )
    slbi = measure(
        "slbi",
        model,
        lambda m: SLBI(list(m.named_parameters()), lr=0.1, kappa=1.0, mu=100.0, momentum=0.9),
        x,
        y,
        args.steps,
        args.warmup,
        device,
    )
    result = {
        "benchmark": "slbi_step",
        "model": "VGG_A_BatchNorm",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": [sgd, slbi],
        "optimizer_ratio": slbi["optimizer_ms"] / sgd["optimizer_ms"],
        "train_ratio": slbi["train_ms"] / sgd["train_ms"],
        "environment": environment(device),
    }
    result["accept_train_ratio_le_1_5"] = result["train_ratio"] <= 1.5
    text = json.dumps(result, indent=2)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
