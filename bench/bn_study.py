"""The default batch-normalization study on one GPU, timed (target: under 5 minutes on an H100).

    python bench/bn_study.py --data .data/cifar10-jpeg.tar.gz --out $OUT/bn_study.json \
        --study-dir $OUT/bn-study [--set epochs=2 ...]

Runs configs/studies/bn.yaml (VGG_A and VGG_A_BatchNorm x 4 lrs, Adam, 20 epochs, probes every 50
steps) and writes JSON: total and per-run seconds, the part spent in probes, images per second,
the per-run results, and a side-by-side timing of one probe of VGG_A with vmap and with the loop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarlab.analysis.bn_probe import probe_step
from cifarlab.config import load_config
from cifarlab.models import create_model
from cifarlab.run import environment
from cifarlab.studies.bn_study import BNStudyConfig, eta_grid, run_bn_study

CONFIG = Path(__file__).resolve().parents[1] / "src" / "cifarlab" / "configs" / "studies" / "bn.yaml"


def time_probe_methods(device: torch.device, batch_size: int, etas: list[float], repeats: int = 5) -> dict:
    """Seconds per probe_step of VGG_A / VGG_A_BatchNorm (train mode, one batch) for vmap and loop."""
    out = {}
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for name in ("VGG_A", "VGG_A_BatchNorm"):
        model = create_model(name).to(device).train()
        for method in ("vmap", "loop"):
            probe_step(model, F.cross_entropy, x, y, etas, method=method)  # warm-up
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                r = probe_step(model, F.cross_entropy, x, y, etas, method=method)
            torch.cuda.synchronize(device)
            out[f"{name}/{method}"] = {"seconds": (time.perf_counter() - t0) / repeats, "beta_smooth": r["beta_smooth"]}
        out[f"{name}/peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset name or path, e.g. .data/cifar10-jpeg.tar.gz")
    ap.add_argument("--out", default="bn_study.json", help="JSON file to write")
    ap.add_argument("--study-dir", default="bn-study", help="folder for the study's arrays, tables, figures")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="key=value overrides")
    ap.add_argument("--skip-probe-timing", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/bn_study.py needs CUDA")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True

    cfg = load_config(args.config, args.overrides, cls=BNStudyConfig)
    result = {"config": args.config, "overrides": args.overrides, "env": environment(device)}
    if not args.skip_probe_timing:
        result["probe_timing"] = time_probe_methods(device, cfg.batch_size, list(eta_grid(cfg, 1e-3)))

    t0 = time.perf_counter()
    summary = run_bn_study(cfg, Path(args.study_dir), data_source=args.data)
    total = time.perf_counter() - t0  # includes loading the data (from the cache after the first time)
    runs = summary["runs"]
    images = summary["n_train"] * cfg.epochs
    result.update(
        {
            "total_seconds": total,
            "study_seconds": summary["seconds"],
            "under_5_minutes": total < 300,
            "probe_seconds": sum(r["probe_seconds"] for r in runs),
            "run_seconds": {f"{r['model']} lr={r['lr']:g}": r["seconds"] for r in runs},
            "train_images_per_s": {
                f"{r['model']} lr={r['lr']:g}": images / max(r["seconds"] - r["probe_seconds"], 1e-9) for r in runs
            },
            "probe_method": summary["probe_method"],
            "runs": runs,
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("total_seconds", "probe_seconds", "under_5_minutes")}, indent=2))


if __name__ == "__main__":
    main()
