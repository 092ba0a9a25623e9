"""Time to accuracy: a fast preset through cifarlab's engine against the airbench package, one GPU, one data.

For N seeds each: test accuracy with and without TTA (mean, std) and seconds per run (median, min,
max), timed with CUDA events. Compilation and cuDNN autotuning happen in the engine's warm-up step
and are counted apart (compile_seconds). Two clocks per side:
- train_seconds: whitening init + training (airbench: its clock after the last epoch);
- total_seconds: + the final evaluation with TTA (airbench's own total_time_seconds includes it).
The reference is the `airbench` package (0.1.8): train94 / train95 / train96. It reads
cifar10/{train,test}.pt under the working folder (dicts of uint8 NHWC images, labels, classes; it
downloads with torchvision otherwise): this script writes them, in a temporary folder, from the same
dataset our runs use (`--data`), so both sides see the same pixels.

Setup on the development machine (once; `pip download` gets only airbench's sdist, so build the wheel):
    mkdir -p .data .whl && cp ../shared/data/cifar10-jpeg.tar.gz .data/
    .venv/bin/pip wheel --no-deps airbench==0.1.8 -w .whl
On the GPU machine (the device tool's run, carry [".data", ".whl"]):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:src python3 bench/time_to_accuracy.py --preset fast94 --seeds 10 --data .data/cifar10-jpeg.tar.gz --out $OUT/fast94.json
    (fast96: --preset fast96 --seeds 3; the reference follows the preset: fast94 -> train94, fast96 -> train96;
    if max-autotune compiles too long for the call's limit: --set train.compile_mode=default)
Smoke check on a CPU:
    PYTHONPATH=src python bench/time_to_accuracy.py --device cpu --n-items 512 --epochs 1 --seeds 1 --skip-reference
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import importlib
import json
import os
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
import torch._dynamo

from cifarlab.config import load_config
from cifarlab.data import load_dataset, subset
from cifarlab.train.engine import train

REFERENCE = {"fast94": "train94", "fast95": "train95", "fast96": "train96"}


def spread(values: list) -> dict:
    """mean/std/median/min/max of the finished runs; diverged ones (None) are counted apart."""
    failed = sum(v is None for v in values)
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "diverged": failed}
    return {
        "diverged": failed,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- ours


def run_ours(args, ds, seeds: list[int], out_dir: Path) -> dict:
    base = [
        f"data.device={args.device}",
        "train.progress=false",
        "train.log_tensorboard=false",
        "train.save_checkpoints=false",
        f"out={out_dir}",
    ]
    if args.epochs:
        base += [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}"]
    if args.device == "cpu":  # inductor's CPU compile takes minutes; a CPU run is a smoke check only
        base.append("train.compile=false")
    batch = load_config(args.preset, base).data.batch_size
    if batch > len(ds.train_y) // 2:  # tiny smoke data: keep a few steps per epoch
        base.append(f"data.batch_size={max(1, len(ds.train_y) // 4)}")
    base += args.set
    runs = []
    for k, seed in enumerate([None] * args.warmup_runs + seeds):
        cfg = load_config(args.preset, base + [f"seed={seed if seed is not None else 10_000 + k}"])
        s = train(cfg, run_dir=out_dir / f"run{k}", dataset=ds)
        run = {
            "seed": cfg.seed,
            "acc_tta": s["final_test_acc"],
            "acc_no_tta": s.get("final_test_acc_no_tta", s["final_test_acc"]),
            "train_seconds": s["train_seconds"],
            "total_seconds": s["train_seconds"] + (s["eval_seconds"] or 0.0),
            "compile_seconds": s["compile_seconds"],
            "warmup": seed is None,
        }
        log(f"ours {args.preset} {'warm-up' if seed is None else f'seed {seed}'}: {json.dumps(run)}")
        runs.append(run)
    return summarize(runs, {"preset": args.preset, "overrides": base, "tta": cfg.train.tta})


# ---------------------------------------------------------------- the airbench package


def import_airbench(whl_dir: Path):
    """airbench as installed, else from a wheel (zip import) or sdist found in whl_dir."""
    try:
        return importlib.import_module("airbench")
    except ImportError:
        pass
    wheels = sorted(glob.glob(str(whl_dir / "airbench-*.whl")))
    sdists = sorted(glob.glob(str(whl_dir / "airbench-*.tar.gz")))
    if wheels:
        sys.path.insert(0, wheels[-1])
    elif sdists:
        root = Path(tempfile.mkdtemp(prefix="airbench-src-"))
        with tarfile.open(sdists[-1]) as t:
            t.extractall(root, filter="data")
        sys.path.insert(0, str(next(root.iterdir())))
    else:
        sys.exit(
            f"airbench is not installed and {whl_dir} holds no airbench wheel or sdist "
            f"(pip wheel --no-deps airbench==0.1.8 -w {whl_dir}), or pass --skip-reference"
        )
    return importlib.import_module("airbench")


def write_airbench_data(ds, folder: Path) -> None:
    """The files airbench's CifarLoader reads: cifar10/train.pt and cifar10/test.pt."""
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        torch.save(
            {"images": x.contiguous(), "labels": y.long(), "classes": list(ds.classes)},
            folder / "cifar10" / f"{split}.pt",
        )


def run_reference(args, ds, seeds: list[int], work: Path) -> dict:
    name = args.reference or REFERENCE.get(args.preset)
    if name is None:
        sys.exit(f"no airbench reference for preset {args.preset}; pass --reference train94|train95|train96")
    write_airbench_data(ds, work)
    os.chdir(work)  # airbench opens 'cifar10/...' relative to the working folder
    airbench = import_airbench(args.whl_dir)
    utils = importlib.import_module("airbench.utils")
    entries: list[dict] = []
    # airbench reports through print_training_details(locals(), ...): keep those numbers
    utils.print_training_details = lambda v, is_final_entry: entries.append(
        {k: v.get(k) for k in ("epoch", "val_acc", "tta_val_acc", "total_time_seconds")}
    )
    fn = getattr(airbench, name)
    kw = {"epochs": args.epochs} if args.epochs else {}
    with contextlib.redirect_stdout(sys.stderr):
        getattr(airbench, name.replace("train", "warmup"))(**kw)  # airbench's own warm-up (one step)
        runs = []
        for k, seed in enumerate([None] * args.warmup_runs + seeds):
            torch.manual_seed(seed if seed is not None else 10_000 + k)
            entries.clear()
            fn(run=k, verbose=True, **kw)
            last_epoch, final = entries[-2], entries[-1]
            run = {
                "seed": seed,
                "acc_tta": final["tta_val_acc"],
                "acc_no_tta": last_epoch["val_acc"],
                "train_seconds": last_epoch["total_time_seconds"],
                "total_seconds": final["total_time_seconds"],
                "compile_seconds": 0.0,
                "warmup": seed is None,
            }
            log(f"airbench {name} {'warm-up' if seed is None else f'seed {seed}'}: {json.dumps(run)}")
            runs.append(run)
    return summarize(runs, {"function": f"airbench.{name}", "version": getattr(airbench, "__version__", "0.1.8")})


def summarize(runs: list[dict], info: dict) -> dict:
    timed = [r for r in runs if not r["warmup"]]
    return {
        **info,
        "runs": runs,
        "acc_tta": spread([r["acc_tta"] for r in timed]),
        "acc_no_tta": spread([r["acc_no_tta"] for r in timed]),
        "train_seconds": spread([r["train_seconds"] for r in timed]),
        "total_seconds": spread([r["total_seconds"] for r in timed]),
        "compile_seconds": spread([r["compile_seconds"] for r in runs]),
    }


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast94")
    p.add_argument("--seeds", type=int, default=10, help="timed runs per side")
    p.add_argument("--reference-seeds", type=int, default=0, help="timed airbench runs (default: --seeds)")
    p.add_argument("--data", default=".data/cifar10-jpeg.tar.gz", help="dataset name or path (the JPEG tarball)")
    p.add_argument("--cache-dir", default="", help="cifarlab's decode cache (default: its usual place)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n-items", type=int, default=0, help="smoke checks: the first n training and test images")
    p.add_argument("--epochs", type=int, default=0, help="override the epochs on both sides (smoke checks)")
    p.add_argument("--set", action="append", default=[], help="extra config override for our runs, key=value")
    p.add_argument(
        "--warmup-runs",
        type=int,
        default=-1,
        help="untimed runs per side before the timed ones (default: 1 on CUDA, 0 on a CPU)",
    )
    p.add_argument("--reference", default="", help="airbench function (default: train94/95/96 by preset)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--whl-dir", type=Path, default=Path(".whl").resolve())
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args()
    args.whl_dir, args.out = args.whl_dir.resolve(), args.out.resolve() if args.out else None
    if args.warmup_runs < 0:
        args.warmup_runs = 1 if args.device.startswith("cuda") else 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: use --device cpu (smoke check) with --skip-reference")
    if not args.skip_reference and not args.device.startswith("cuda"):
        sys.exit("the airbench reference runs on CUDA only; pass --skip-reference on a CPU")

    # Every run builds a new model: compiled code is reused or recompiled in each run's warm-up, but
    # dynamo's default limit of 8 recompilations would drop later runs to eager mode.
    key = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, key, max(64, getattr(torch._dynamo.config, key)))
    ds = load_dataset(args.data, args.cache_dir or None)
    if args.n_items:  # the reference gets the same images
        n_test = min(args.n_items, len(ds.test_y))
        ds = dataclasses.replace(subset(ds, args.n_items), test_x=ds.test_x[:n_test], test_y=ds.test_y[:n_test])
    seeds = list(range(args.seeds))
    work = Path(tempfile.mkdtemp(prefix="time-to-accuracy-"))
    result = {
        "data": args.data,
        "dataset": ds.name,
        "train_images": len(ds.train_y),
        "test_images": len(ds.test_y),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
    }
    result["ours"] = run_ours(args, ds, seeds, work / "runs")
    if not args.skip_reference:
        ref_seeds = list(range(args.reference_seeds or args.seeds))
        result["reference"] = run_reference(args, ds, ref_seeds, work / "airbench")
        ours, ref = result["ours"], result["reference"]
        result["comparison"] = {
            "total_seconds_ratio": ours["total_seconds"]["median"] / ref["total_seconds"]["median"],
            "train_seconds_ratio": ours["train_seconds"]["median"] / ref["train_seconds"]["median"],
            "acc_tta_diff": ours["acc_tta"]["mean"] - ref["acc_tta"]["mean"],
            "acc_no_tta_diff": ours["acc_no_tta"]["mean"] - ref["acc_no_tta"]["mean"],
            "note": "ratios of median seconds per run (ours / airbench), compile time excluded on both sides; "
            "diffs are mean test accuracy, ours minus airbench",
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
