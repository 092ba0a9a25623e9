"""Loss-landscape grid: cifarlab's batched evaluator against the plain point-by-point loop, one run.

ResNet-18 (random weights: the cost does not depend on them), a 51 x 51 grid of filter-normalized
directions, 10,000 images. The batched evaluator (vmap over chunks of K stacked parameter sets,
bf16 autocast on CUDA by default) runs the whole grid; the plain loop (one point at a time,
fp32, same batch size) is timed on a few points and extrapolated to the grid. To show where the
speed comes from, the loop with the same autocast and the batched evaluator in fp32 are timed on
a few points/chunks too, and the losses of both paths are compared on the points the loop ran.

    python bench/landscape.py --device cuda --out $OUT/landscape.json                 # the benchmark
    python bench/landscape.py --device cpu --grid 3 --n 64 --model resnet_small      # smoke check

With --data (a dataset name or path, e.g. .data/cifar10-jpeg.tar.gz) the first n training images
are used; otherwise random normal images (the timing is the same).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cifarlab.analysis import landscape as L
from cifarlab.models import create_model
from cifarlab.run import atomic_write_json, environment


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def data(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if args.data:
        from cifarlab.analysis.plotting import to_input
        from cifarlab.data import load_dataset

        ds = load_dataset(args.data)
        return to_input(ds.train_x[: args.n], ds.mean, ds.std, device), ds.train_y[: args.n].to(device)
    g = torch.Generator().manual_seed(0)
    return torch.randn(args.n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (args.n,), generator=g).to(
        device
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--grid", type=int, default=51, help="points per axis (range -1:1)")
    ap.add_argument("--n", type=int, default=10_000, help="images")
    ap.add_argument("--data", default=None, help="dataset name or path (default: random images)")
    ap.add_argument("--chunk", type=int, default=8, help="grid points per vmapped batch (K)")
    ap.add_argument("--batch-size", type=int, default=1000, help="images per forward, both evaluators")
    ap.add_argument("--no-amp", action="store_true", help="batched evaluator in fp32 too")
    ap.add_argument("--loop-points", type=int, default=3, help="points the plain loop is timed on")
    ap.add_argument("--out", default="bench/results/landscape.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = create_model(args.model).to(device).eval()
    x, y = data(args, device)
    g = torch.Generator().manual_seed(0)
    dirs = [L.random_direction(model, generator=g), L.random_direction(model, generator=g)]
    axes = [np.linspace(-1, 1, args.grid)] * 2
    coords = torch.as_tensor(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2), dtype=torch.float32)
    base = L.weights_of(model)
    amp = not args.no_amp and device.type == "cuda"
    points = len(coords)
    idx = list(range(0, points, max(1, points // args.loop_points)))[: args.loop_points]  # spread over the grid
    few = coords[idx].to(device)
    kw = dict(batch_size=args.batch_size)

    # warm-up (cuDNN autotuning, lazy init) on a slice of the data, outside every timing
    L.evaluate_points_vmap(
        model, base, dirs, coords[: args.chunk].to(device), x[: args.batch_size], y[: args.batch_size], amp=amp, **kw
    )
    L.evaluate_points_loop(model, base, dirs, few[:1], x[: args.batch_size], y[: args.batch_size], amp=amp, **kw)
    L.evaluate_points_loop(model, base, dirs, few[:1], x[: args.batch_size], y[: args.batch_size], **kw)

    res, batched_s = timed(
        lambda: L.evaluate_grid(
            model, x, y, dirs, axes, method="vmap", chunk=args.chunk, amp=amp, progress=False, **kw
        ),
        device,
    )
    (loop_loss, loop_acc), loop_s = timed(lambda: L.evaluate_points_loop(model, base, dirs, few, x, y, **kw), device)
    _, loop_amp_s = timed(lambda: L.evaluate_points_loop(model, base, dirs, few, x, y, amp=amp, **kw), device)
    vmap_fp32_chunks = max(1, args.loop_points // args.chunk)
    c32 = coords[: vmap_fp32_chunks * args.chunk].to(device)
    _, vmap_fp32_s = timed(lambda: L.evaluate_points_vmap(model, base, dirs, c32, x, y, **kw), device)

    # the same points out of the batched grid, to check both paths computed the same thing
    grid_loss = res["loss"].reshape(-1)[idx]
    loop_per_point = loop_s / len(few)
    out = {
        "benchmark": "loss landscape grid",
        "model": args.model,
        "grid": f"{args.grid}x{args.grid}",
        "points": points,
        "images": len(y),
        "batch_size": args.batch_size,
        "chunk": args.chunk,
        "data": args.data or "random normal images",
        "batched": {
            "evaluator": "vmap over stacked parameter sets",
            "autocast_bf16": amp,
            "total_s": batched_s,
            "per_point_s": batched_s / points,
        },
        "plain_loop": {
            "evaluator": "one point at a time, fp32",
            "points_timed": len(few),
            "per_point_s": loop_per_point,
            "extrapolated_total_s": loop_per_point * points,
        },
        "speedup": loop_per_point * points / batched_s,
        "meets_3x": loop_per_point * points / batched_s >= 3,
        "where_the_speed_comes_from": {
            "loop_same_autocast_per_point_s": loop_amp_s / len(few),
            "batched_fp32_per_point_s": vmap_fp32_s / len(c32),
            "speedup_of_batching_alone_same_precision": (loop_amp_s / len(few)) / (batched_s / points),
        },
        "check": {
            "max_abs_loss_diff_batched_vs_loop": float(np.max(np.abs(grid_loss - loop_loss.numpy()))),
            "loop_loss": loop_loss.tolist(),
            "batched_loss": grid_loss.tolist(),
        },
        "env": environment(device),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("grid", "batched", "plain_loop", "speedup", "meets_3x")}, indent=1))
    print(
        json.dumps(out["where_the_speed_comes_from"], indent=1),
        json.dumps(out["check"]["max_abs_loss_diff_batched_vs_loop"]),
    )


if __name__ == "__main__":
    main()
