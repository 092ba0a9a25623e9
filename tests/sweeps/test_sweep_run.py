"""Running sweeps end to end on tiny synthetic data: local and Ray engines agree, a killed sweep
resumes only what is missing, a failing run is recorded while the others complete."""

import csv
import json
import re

import pytest
import torch
import yaml

from cifarlab.data import Dataset
from cifarlab.sweeps import expand, load_sweep, run_sweep, tabulate


def tiny_dataset() -> Dataset:
    """256 train / 128 test 16x16 images whose brightness tells the class (learnable in one epoch)."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.randint(0, 4, (n,), generator=g)
        x = 30 + 50 * y.view(-1, 1, 1, 1) + torch.randint(0, 60, (n, 16, 16, 3), generator=g)
        return x.to(torch.uint8), y

    (tx, ty), (vx, vy) = split(256), split(128)
    mean = tuple((tx.float() / 255).mean(dim=(0, 1, 2)).tolist())
    std = tuple((tx.float() / 255).std(dim=(0, 1, 2)).tolist())
    return Dataset(tx, ty, vx, vy, ["a", "b", "c", "d"], "synthetic", "synthetic-0", mean, std)


RUN_SET = {
    "model.name": "plainnet",
    "model.args": {"stages": [8, 16]},
    "data.batch_size": 32,
    "data.device": "cpu",
    "train.epochs": 1,
    "train.progress": False,
    "train.log_tensorboard": False,
}


def write_sweep(path, **fields):
    doc = {"name": "tiny", "set": RUN_SET, "seeds": [0, 1], **fields}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


GRID = {"axes": {"optim.lr": [0.1, 0.02], "model.activation": ["relu", "gelu"]}}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    sweep = load_sweep(write_sweep(root / "tiny.yaml", **GRID))
    out = root / "out"
    rows = run_sweep(sweep, out, engine="local", data=tiny_dataset())
    return sweep, out, rows


def test_local_sweep_runs_every_configuration_and_seed(local_sweep):
    sweep, out, rows = local_sweep
    assert [r["run_id"] for r in rows] == [s.run_id for s in expand(sweep)]
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
    for r in rows:
        summary = json.loads((out / r["run_id"] / "summary.json").read_text())
        assert summary["seed"] == r["seed"]
        assert r["best_test_acc"] == summary["best_test_acc"]
        cfg = yaml.safe_load((out / r["run_id"] / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == float(r["optim.lr"]) and cfg["model"]["activation"] == r["model.activation"]
    # the synthetic classes are learnable: at least one run beats chance (25%) clearly
    assert max(r["best_test_acc"] for r in rows) > 0.4
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [c["run_id"] for c in csv_rows] == [r["run_id"] for r in rows]
    assert set(csv_rows[0]) >= {
        "optim.lr",
        "model.activation",
        "seed",
        "status",
        "best_test_acc",
        "final_test_acc",
        "train_seconds",
    }
    for name in ("metric_by_axis.png", "curves.png", "run_time.png"):
        assert (out / "figures" / name).stat().st_size > 1000


def test_results_md_has_mean_std_per_configuration_and_best_in_bold(local_sweep):
    _, out, rows = local_sweep
    md = (out / "results.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert table[0].split("|")[1:4] == [" optim.lr ", " model.activation ", " n "]
    assert len(table) == 1 + 4  # header + one row per configuration
    by_config = {}
    for r in rows:
        by_config.setdefault((r["optim.lr"], r["model.activation"]), []).append(r["best_test_acc"] * 100)
    means = {}
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        vals = by_config[(cells[0], cells[1])]
        assert cells[2] == "2"
        m = re.fullmatch(r"(\*\*)?([\d.]+) ± ([\d.]+)(\*\*)?", cells[3])
        assert m, cells[3]
        t = torch.tensor(vals, dtype=torch.float64)
        assert float(m.group(2)) == pytest.approx(t.mean().item(), abs=0.006)
        assert float(m.group(3)) == pytest.approx(t.std().item(), abs=0.006)  # sample std over the 2 seeds
        means[(cells[0], cells[1])] = (t.mean().item(), bool(m.group(1)))
    best = max(v[0] for v in means.values())
    assert all(bold == (mean == best) for mean, bold in means.values())
    assert "Best by final_test_acc" in md


@pytest.mark.slow  # a Ray instance and 8 runs
def test_ray_engine_gives_the_same_runs(local_sweep, tmp_path):
    ray = pytest.importorskip("ray")
    sweep, local_out, local_rows = local_sweep
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_sweep(sweep, tmp_path / "ray", engine="ray", gpus_per_trial=0, cpus_per_trial=1, data=tiny_dataset())
    finally:
        ray.shutdown()
    assert [r["status"] for r in rows] == ["done"] * 8
    for a, b in zip(local_rows, rows):
        assert a["run_id"] == b["run_id"]
        assert a["best_test_acc"] == b["best_test_acc"]  # same seed -> the same run, bit for bit
        la = json.loads((local_out / a["run_id"] / "summary.json").read_text())
        lb = json.loads((tmp_path / "ray" / b["run_id"] / "summary.json").read_text())
        assert la["final_train_loss"] == lb["final_train_loss"]


@pytest.mark.slow  # spawned processes
def test_parallel_local_sweep_gives_the_same_runs(local_sweep, tmp_path, capsys):
    # two spawned processes, the dataset sent to each once; the threads per process follow the
    # machine's cores, so the runs agree to float rounding rather than bit for bit
    sweep, local_out, local_rows = local_sweep
    rows = run_sweep(sweep, tmp_path / "par", engine="local", data=tiny_dataset(), parallel=2)
    assert "2 runs at a time" in capsys.readouterr().out
    assert [r["status"] for r in rows] == ["done"] * 8
    for a, b in zip(local_rows, rows):
        assert a["run_id"] == b["run_id"]
        la = json.loads((local_out / a["run_id"] / "summary.json").read_text())
        lb = json.loads((tmp_path / "par" / b["run_id"] / "summary.json").read_text())
        assert lb["final_train_loss"] == pytest.approx(la["final_train_loss"], rel=1e-4)
        assert lb["final_test_acc"] == pytest.approx(la["final_test_acc"], abs=1.5 / 128)  # one image at most


def test_killed_sweep_resumes_only_missing_runs(tmp_path, monkeypatch):
    import cifarlab.train.engine as engine

    path = write_sweep(tmp_path / "tiny.yaml", axes={"model.activation": ["relu", "gelu"]})
    sweep = load_sweep(path, ["train.epochs=2"])
    out = tmp_path / "out"
    real_epoch, calls = engine.Trainer.train_epoch, []

    def interrupted_epoch(*args, **kw):
        calls.append(1)
        if len(calls) == 6:  # runs 1-2 finish (4 epochs), run 3 is killed in its second epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kw)

    monkeypatch.setattr(engine.Trainer, "train_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, data=tiny_dataset())
    monkeypatch.setattr(engine.Trainer, "train_epoch", real_epoch)
    ids = [s.run_id for s in expand(sweep)]
    assert [(out / i / "summary.json").exists() for i in ids] == [True, True, False, False]
    assert (out / ids[2] / "last.pt").exists()  # killed after its first epoch's checkpoint
    mtimes = {i: (out / i / "summary.json").stat().st_mtime_ns for i in ids[:2]}

    real_train, started = engine.train, []

    def recording_train(cfg, run_dir=None, resume="auto", dataset=None):
        started.append((run_dir.name, (run_dir / "last.pt").is_file()))  # "auto" resumes exactly when last.pt is there
        return real_train(cfg, run_dir=run_dir, resume=resume, dataset=dataset)

    monkeypatch.setattr(engine, "train", recording_train)
    rows = run_sweep(sweep, out, data=tiny_dataset())
    assert started == [(ids[2], True), (ids[3], False)]  # only the missing runs; the killed one resumes
    assert {i: (out / i / "summary.json").stat().st_mtime_ns for i in ids[:2]} == mtimes
    assert [r["status"] for r in rows] == ["done"] * 4
    epochs = [json.loads(ln)["epoch"] for ln in (out / ids[2] / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]

    started.clear()
    run_sweep(sweep, out, data=tiny_dataset())  # nothing left to do
    assert started == []
    with pytest.raises(Exception, match="holds a run with other settings"):  # a changed sweep never mixes runs
        run_sweep(load_sweep(path, ["train.epochs=3"]), out, data=tiny_dataset())


def test_failing_run_is_recorded_and_the_rest_complete(tmp_path):
    variants = {"good": {}, "bad": {"model.args": {"stages": [8, 16], "no_such_option": 1}}}
    sweep = load_sweep(write_sweep(tmp_path / "tiny.yaml", variants=variants, seeds=[0]), ["axes.optim.lr=[0.1,0.02]"])
    out = tmp_path / "out"
    rows = run_sweep(sweep, out, data=tiny_dataset())
    status = {r["run_id"]: r["status"] for r in rows}
    assert status == {
        "lr0.1-good-s0": "done",
        "lr0.1-bad-s0": "failed",
        "lr0.02-good-s0": "done",
        "lr0.02-bad-s0": "failed",
    }
    err = (out / "lr0.1-bad-s0" / "error.txt").read_text()
    assert "no_such_option" in err
    md = (out / "results.md").read_text()
    assert "failed" in md and "`lr0.1-bad-s0`" in md and "no_such_option" in md
    bad_row = next(ln for ln in md.splitlines() if ln.startswith("| 0.1 | bad"))
    assert bad_row.split("|")[3].strip() == "0"  # n = 0 finished seeds
    # tabulate rebuilds the same tables from the folders alone
    before = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    tabulate(out)
    assert (out / "results.csv").read_text() == before


def test_ablation_lr_leads_with_the_final_test_accuracy_over_seeds(tmp_path):
    # the shipped preset as a user runs it (`cifarlab sweep ablation_lr --set train.epochs=1
    # --set seeds=[0,1]`), on a small net and tiny data so that it takes seconds
    small = [f"{k}={json.dumps(v)}" for k, v in RUN_SET.items()]
    sweep = load_sweep("ablation_lr", ["train.epochs=1", "seeds=[0,1]", "axes={optim.lr: [0.1, 0.01]}", *small])
    run_sweep(sweep, tmp_path / "out", engine="local", data=tiny_dataset())
    md = (tmp_path / "out" / "results.md").read_text()
    head = next(ln for ln in md.splitlines() if ln.startswith("| optim.lr"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[:3] == ["optim.lr", "n", "final test acc"]
    assert "best test acc (selected on test)" in cols and "best val acc (selected on val)" not in cols
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0.1 "))
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
    assert cells[1] == "2" and re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[2])
