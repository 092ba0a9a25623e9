"""The captured step against the eager one: the same preset, seed and data, 2 epochs each, one JSON.

A graph that replays a stale tensor or misses an update trains differently; same-seed runs should
end within 0.5 points of accuracy with their loss curves together (bf16 and cuDNN's choices keep
them from being bit-identical). On the GPU machine (see bench/gpu_suite.py):
    PYTHONPATH=src python3 bench/graph_vs_eager.py --data .data/cifar10-jpeg.tar.gz --out graph.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import cifarlab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="resnet18_standard")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-items", type=int, default=0, help="train on the first n images (0 = all)")
    ap.add_argument("--out", default="graph_vs_eager.json")
    a = ap.parse_args()
    over = {"train.epochs": a.epochs, "train.progress": False, "data.n_items": a.n_items, "seed": 0}
    res: dict = {"preset": a.preset, "epochs": a.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for graph in ("off", "on"):
            run = cifarlab.fit(a.preset, overrides={**over, "train.graph": graph}, data=a.data, out=Path(tmp) / graph)
            s = run.summary
            res[graph] = {
                "step": s.get("step"),
                "capture_seconds": s.get("capture_seconds"),
                "train_seconds": s.get("train_seconds"),
                "final_test_acc": s.get("final_test_acc"),
                "train_loss": [h["train_loss"] for h in run.history],
                "test_acc": [h.get("test_acc") for h in run.history],
            }
    on, off = res["on"], res["off"]
    res["acc_gap_points"] = round(100 * abs(on["final_test_acc"] - off["final_test_acc"]), 2)
    res["max_loss_gap"] = max(abs(x - y) for x, y in zip(on["train_loss"], off["train_loss"]))
    res["ok"] = on["step"] == "graph" and res["acc_gap_points"] <= 0.5
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
