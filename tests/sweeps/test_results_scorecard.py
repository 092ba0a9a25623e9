"""results.md / results.csv from hand-written run folders: the scorecard beside the accuracy, and the
rows whose difference from the best is within the seed spread."""

import csv
import json

from cifarlab.sweeps.results import tabulate


def _run(out, lr, seed, acc, **summary):
    run_id = f"lr{lr}-s{seed}"
    d = out / run_id
    d.mkdir(parents=True)
    info = {
        "run_id": run_id,
        "config_id": f"lr{lr}",
        "axes": {"optim.lr": lr},
        "seed": seed,
        "index": len(list(out.iterdir())),
    }
    (d / "run.json").write_text(json.dumps(info))
    (d / "summary.json").write_text(json.dumps({"final_test_acc": acc, "best_test_acc": acc + 0.01, **summary}))


def _sweep(tmp_path, accs: dict, **summary):
    out = tmp_path / "sweep"
    out.mkdir()
    for lr, values in accs.items():
        for seed, acc in enumerate(values):
            _run(out, lr, seed, acc, **summary)
    tabulate(out, figures=False)
    return out


def _table(md: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("|")]


def test_the_scorecard_follows_the_accuracy_and_absent_columns_are_dropped(tmp_path):
    cost = {"params": 176402, "macs_per_image": 556_000_000, "train_seconds": 12.5, "images_per_s": 2048.0}
    out = _sweep(tmp_path, {0.1: [0.91, 0.92], 0.01: [0.80, 0.81]}, **cost)
    head, _, first, _ = _table((out / "results.md").read_text())
    assert head[:3] == ["optim.lr", "n", "final test acc"]
    assert {"params", "FLOPs/image (multiply-adds)", "train time (s)", "images/s"} <= set(head)
    assert "peak memory (MB)" not in head  # no run recorded it
    cell = dict(zip(head, first))
    assert cell["params"] == "176,402" and cell["FLOPs/image (multiply-adds)"] == "0.56 G"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["params"] == "176402" and rows[0]["macs_per_image"] == "556000000"


def test_a_difference_within_the_seed_spread_is_marked(tmp_path):
    out = _sweep(tmp_path, {0.1: [0.90, 0.92], 0.05: [0.895, 0.915], 0.01: [0.50, 0.51]})
    md = (out / "results.md").read_text()
    head, _, *body = _table(md)
    vs = {r[0]: r[head.index("vs best (final test acc)")] for r in body}
    assert vs["0.1"] == "best" and vs["0.05"] == "-0.50 (≈ within seed spread)" and vs["0.01"] == "-40.50"
    assert "larger of the two sample stds" in md and "Runner-up optim.lr=0.05" in md


def test_one_seed_is_never_marked(tmp_path):
    md = (_sweep(tmp_path, {0.1: [0.90], 0.05: [0.899]}) / "results.md").read_text()
    assert "≈" not in md and "-0.10" in md
