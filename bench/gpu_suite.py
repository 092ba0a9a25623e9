"""Every GPU figure of the README in one call: each benchmark against its reference, one JSON.

Parts (each a subprocess with its own time limit, so one slow part cannot eat the others'):
- graph_tests: the CUDA-only tests of the captured step (tests/train/test_graph.py -k cuda: replays
  equal the eager step for sgd, nesterov, adam, adamw, muon, slbi, slbi_adam); needs pytest (carry its
  wheels in .whl: `pip download pytest -d .whl`);
- graph_vs_eager: resnet18_standard 2 epochs with train.graph on and off, same seed (bench/graph_vs_eager.py);
- throughput_resnet18, throughput_vgg_a: the preset at batch 128 through the engine (captured step)
  against a plain DataLoader loop, the same epochs, in one process (bench/throughput.py);
- fast94: the preset against the `airbench` package's train94, 3 seeds each (bench/time_to_accuracy.py);
- landscape: the 51x51 ResNet-18 grid, batched against a point-by-point loop (bench/landscape.py);
- bn_study: the default BN study (`cifarlab bn-study`, runs side by side), wall time;
- slbi_step: one SLBI step against one SGD-momentum step (bench/slbi_step.py);
- pj2: `cifarlab pj2 --scale standard`, wall time and the time of each part (its results.csv).

On the GPU machine (the device tool's run; carry [".data", ".whl"], see bench/time_to_accuracy.py):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python3 bench/gpu_suite.py --data .data/cifar10-jpeg.tar.gz \\
        --mnist .data/mnist --out $OUT/gpu_suite.json
At tiny scale on a CPU (every part runs, small; the reference of fast94 only where airbench is found):
    PYTHONPATH=src python3 bench/gpu_suite.py --tiny --data ../shared/data/cifar10-jpeg.tar.gz \\
        --mnist ../shared/data/mnist --out /tmp/suite.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def parts(a, work: Path) -> list[dict]:
    """name, command, the JSON (or folder) it writes, and its time limit in seconds."""
    tiny = a.tiny
    dev = ["--device", "cpu"] if tiny else []
    small = ["--n-items", "256", "--n-test", "256", "--epochs", "1", "--workers", "0"] if tiny else []
    out = [
        dict(
            name="graph_tests",
            cmd=[
                PY,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                HERE.parent / "tests/train/test_graph.py",
                "-k",
                "cuda",
            ],
            limit=60,
        )
    ]
    n = ["--n-items", "256", "--epochs", "1"] if tiny else []
    cmd = [PY, HERE / "graph_vs_eager.py", "--data", a.data, *n, "--out", work / "graph_vs_eager.json"]
    out.append(dict(name="graph_vs_eager", cmd=cmd, json=work / "graph_vs_eager.json", limit=120))
    for preset in ("resnet18_standard", "vgg_a"):
        name = "throughput_" + preset.split("_")[0] + ("_a" if preset == "vgg_a" else "")
        cmd = [PY, HERE / "throughput.py", "--preset", preset, "--data", a.data, "--epochs", a.epochs, *dev, *small]
        out.append(dict(name=name, cmd=[*cmd, "--out", work / f"{name}.json"], json=work / f"{name}.json", limit=75))
    seeds = ["--seeds", "1", "--n-items", "512", "--epochs", "1", "--skip-reference"] if tiny else ["--seeds", "3"]
    cmd = [PY, HERE / "time_to_accuracy.py", "--preset", "fast94", "--data", a.data, *dev, *seeds]
    out.append(dict(name="fast94", cmd=[*cmd, "--out", work / "fast94.json"], json=work / "fast94.json", limit=75))
    grid = ["--grid", "5", "--n", "64", "--batch-size", "64", "--loop-points", "2"] if tiny else ["--n", "2000"]
    cmd = [PY, HERE / "landscape.py", *dev, *grid, "--data", a.data, "--out", work / "landscape.json"]
    out.append(dict(name="landscape", cmd=cmd, json=work / "landscape.json", limit=60))
    bn = ["--set", "n_items=128 n_test=100 epochs=1 probe_every=1 n_etas=2 lrs=[1e-3]"] if tiny else []
    cli = [PY, "-m", "cifarlab"]
    out.append(
        dict(
            name="bn_study",
            cmd=[*cli, "bn-study", "--data", a.data, "--out", work / "bn", *bn],
            json=work / "bn" / "summary.json",
            limit=90,
        )
    )
    steps = ["--steps", "5", "--warmup", "1", "--batch-size", "16"] if tiny else []
    cmd = [PY, HERE / "slbi_step.py", *dev, *steps, "--out", work / "slbi_step.json"]
    out.append(dict(name="slbi_step", cmd=cmd, json=work / "slbi_step.json", limit=30))
    scale = "smoke" if tiny else "standard"
    pj2 = [*cli, "pj2", "--scale", scale, "--data", a.data, "--out", work / "pj2"]
    if a.mnist:
        pj2 += ["--set", f"mnist={a.mnist}"]
    out.append(dict(name="pj2", cmd=pj2, folder=work / "pj2", limit=480))
    for p in out:  # the limits are the GPU's; a CPU at tiny scale is slower still
        p["limit"] *= 10 if tiny else 1
    return out


def run_part(p: dict, env: dict, left: float) -> dict:
    """Run one part within its limit and what is left of the suite's budget; what it measured, or why not."""
    t0, limit = time.perf_counter(), max(1.0, min(p["limit"], left))
    try:
        proc = subprocess.run([str(c) for c in p["cmd"]], capture_output=True, text=True, timeout=limit, env=env)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", str(e.stdout or "")[-2000:]
    res = {"wall_seconds": round(time.perf_counter() - t0, 1), "rc": rc, "limit_s": round(limit)}
    if rc != 0:
        res["output_tail"] = tail
    if "json" in p and Path(p["json"]).is_file():
        res["result"] = json.loads(Path(p["json"]).read_text())
    if "folder" in p and (Path(p["folder"]) / "results.csv").is_file():
        with open(Path(p["folder"]) / "results.csv") as f:
            res["parts"] = {
                r["part"]: {"status": r["status"], "seconds": float(r["seconds"])} for r in csv.DictReader(f)
            }
        summary = Path(p["folder"]) / "summary.json"
        if summary.is_file():
            res["summary"] = json.loads(summary.read_text())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 source, e.g. .data/cifar10-jpeg.tar.gz")
    ap.add_argument("--mnist", default=None, help="MNIST source for pj2's Task 3 (default: pj2's own)")
    ap.add_argument("--out", default="gpu_suite.json")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each throughput run")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default 540; tiny: 3600)")
    ap.add_argument("--only", default="", help="comma-separated part names (default: all)")
    ap.add_argument("--tiny", action="store_true", help="every part at a size a CPU runs in minutes")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    a = ap.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")])),
    }
    a.budget = a.budget or (3600 if a.tiny else 540)
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        todo = [p for p in parts(a, Path(tmp)) if not a.only or p["name"] in a.only.split(",")]
        if a.dry_run:
            for p in todo:
                print(p["name"], " ".join(str(c) for c in p["cmd"]))
            return
        suite, t0 = {"tiny": a.tiny, "data": a.data, "parts": {}}, time.perf_counter()
        for p in todo:
            print(f"[suite] {p['name']} ...", flush=True)
            left = a.budget - (time.perf_counter() - t0)
            suite["parts"][p["name"]] = res = run_part(p, env, left)
            print(f"[suite] {p['name']}: rc {res['rc']} in {res['wall_seconds']} s", flush=True)
            Path(a.out).write_text(json.dumps(suite, indent=1, default=str) + "\n")  # what is done survives a kill
        suite["total_seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(suite, indent=1, default=str) + "\n")
    print(json.dumps({k: {"rc": v["rc"], "s": v["wall_seconds"]} for k, v in suite["parts"].items()}, indent=1))


if __name__ == "__main__":
    main()
