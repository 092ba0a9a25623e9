"""Sweep files: expansion of grid/zip/variants x seeds, stable run ids, overrides, validation,
the presets, tables rebuilt from run folders, and the CLI."""

import argparse
import json
from pathlib import Path

import pytest
import yaml

from cifarlab.cli.sweep import register as add_sweep_parser
from cifarlab.config import from_dict
from cifarlab.errors import UserError
from cifarlab.models import model_names
from cifarlab.sweeps import SweepConfig, expand, load_sweep, tabulate

PRESETS = sorted((Path(__file__).resolve().parents[2] / "src" / "cifarlab" / "configs" / "sweeps").glob("*.yaml"))


def sweep_file(tmp_path, **doc) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", **doc}, sort_keys=False))
    return p


FULL = {
    "set": {"model.name": "plainnet", "train.epochs": 3},
    "axes": {"optim.lr": [0.1, 0.01], "model.activation": ["relu", "gelu"]},
    "zip": {"opt": {"optim.name": ["momentum", "adam"], "optim.weight_decay": [5e-4, 0.0], "labels": ["sgd", "adam"]}},
    "variants": {"plain": {}, "long": {"train.epochs": 7, "optim.lr": 0.5}},
    "seeds": [0, 1],
}


def test_grid_zip_variants_times_seeds(tmp_path):
    runs = expand(load_sweep(sweep_file(tmp_path, **FULL)))
    assert len(runs) == 2 * 2 * 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert runs[0].run_id == "lr0.1-relu-sgd-plain-s0"
    assert runs[1].run_id == "lr0.1-relu-sgd-plain-s1"
    assert runs[-1].run_id == "lr0.01-gelu-adam-long-s1"
    r = next(r for r in runs if r.run_id == "lr0.01-gelu-adam-long-s1")
    c = r.config
    # zip values go together; the grid axis beats the variant's lr; the variant's epochs beat `set`
    assert (c.optim.name, c.optim.weight_decay, c.optim.lr, c.train.epochs) == ("adam", 0.0, 0.01, 7)
    assert (c.model.name, c.model.activation, c.seed) == ("plainnet", "gelu", 1)
    assert r.axes == {"optim.lr": "0.01", "model.activation": "gelu", "opt": "adam", "variant": "long"}
    assert r.config_id == "lr0.01-gelu-adam-long" and r.seed == 1
    assert [x.index for x in runs] == list(range(len(runs)))
    # stable: the same file gives the same ids in the same order
    assert [x.run_id for x in expand(load_sweep(sweep_file(tmp_path, **FULL)))] == [x.run_id for x in runs]


def test_zip_without_labels_and_numeric_values_name_their_key(tmp_path):
    doc = {
        "zip": {"sched": {"schedule.t0": [10, 20], "schedule.t_mult": [1, 2]}},
        "axes": {"model.args.stages": [[8, 16], [16, 32]], "augment.hflip": [True, False]},
        "seeds": [3],
    }
    ids = [r.run_id for r in expand(load_sweep(sweep_file(tmp_path, **doc)))]
    assert ids[0] == "stages8x16-hfliptrue-t010_t_mult1-s3"
    assert len(set(ids)) == 8


def test_command_line_overrides(tmp_path):
    p = sweep_file(tmp_path, **FULL)
    s = load_sweep(p, ["train.epochs=2", "seeds=[5]", "axes.optim.lr=[0.3]", "data.batch_size=16"])
    runs = expand(s)
    assert len(runs) == 1 * 2 * 2 * 2
    assert {r.config.train.epochs for r in runs} == {2}  # reaches every run, variants included
    assert {r.config.optim.lr for r in runs} == {0.3} and {r.seed for r in runs} == {5}
    assert {r.config.data.batch_size for r in runs} == {16}
    with pytest.raises(UserError, match="axes.optim.lr"):  # --set on a varied key would flatten the axis
        load_sweep(p, ["optim.lr=0.5"])
    with pytest.raises(UserError, match="seeds="):
        load_sweep(p, ["seed=3"])


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"axes": {"optim.lr": [0.1]}, "sedes": [0]}, "unknown key 'sedes'"),
        ({"axes": {"optim.lrr": [0.1]}}, "unknown key 'optim.lrr'"),
        ({"axes": {"optim.lr": 0.1}}, "non-empty list"),
        ({"axes": {"optim.lr": [0.1, 0.1]}}, "same value twice"),
        ({"zip": {"g": {"optim.lr": [0.1, 0.2], "optim.momentum": [0.9]}}}, "one length"),
        ({"variants": {False: {}}}, "quote it"),
        ({"seeds": []}, "seeds"),
        ({"name": "a b"}, "name"),
    ],
)
def test_bad_sweep_files_are_user_errors(tmp_path, doc, match):
    with pytest.raises(UserError, match=match):
        expand(load_sweep(sweep_file(tmp_path, **doc)))


def test_missing_sweep_is_a_user_error():
    with pytest.raises(UserError, match="neither a file nor a preset"):
        load_sweep("no_such_sweep")


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_and_expands(path):
    sweep = load_sweep(path.stem, ["train.epochs=1"])  # found by name in configs/sweeps/
    runs = expand(sweep)
    assert runs and len({r.run_id for r in runs}) == len(runs)
    assert {r.config.train.epochs for r in runs} == {1}
    assert len({r.config_id for r in runs}) * len(sweep.seeds) == len(runs)
    names = {n.lower() for n in model_names()} | {"vgg_batchnorm", "vgg_a_res_bn", "vgg_a_residual"}
    assert all(r.config.model.name.lower() in names for r in runs)


def test_resvgg16_grid_has_24_configurations():
    runs = expand(load_sweep("grid_resvgg16_24"))
    assert len({r.config_id for r in runs}) == 24
    best = [r for r in runs if r.config_id == "resvgg16-leaky_relu-ce-sgd"][0].config
    assert (best.optim.name, best.optim.lr, best.train.epochs) == ("momentum", 0.01, 60)


def fake_run(
    out: Path, run_id: str, config_id: str, axes: dict, seed: int, index: int, summary=None, error=None, partial=False
):
    d = out / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_text(
        json.dumps({"run_id": run_id, "config_id": config_id, "axes": axes, "values": {}, "seed": seed, "index": index})
    )
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
        (d / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "test_acc": summary["best_test_acc"] * e / 2}) + "\n" for e in (1, 2))
        )
    if error:
        (d / "error.txt").write_text(f"Traceback...\n{error}\n")
    if partial:
        (d / "last.pt").write_bytes(b"x")


def test_tabulate_from_folders_alone(tmp_path):
    accs = {("a", 0): 0.80, ("a", 1): 0.84, ("b", 0): 0.90, ("b", 1): 0.86, ("c", 0): 0.5}
    i = 0
    for (cfg, seed), acc in accs.items():
        fake_run(
            tmp_path,
            f"{cfg}-s{seed}",
            cfg,
            {"variant": cfg},
            seed,
            i,
            {"best_test_acc": acc, "final_test_acc": acc - 0.01, "train_seconds": 10.0 + seed},
        )
        i += 1
    fake_run(tmp_path, "c-s1", "c", {"variant": "c"}, 1, i, error="UserError: boom")
    fake_run(tmp_path, "d-s0", "d", {"variant": "d"}, 0, i + 1, partial=True)
    rows = tabulate(tmp_path)
    assert [r["status"] for r in rows] == ["done"] * 5 + ["failed", "partial"]
    md = (tmp_path / "results.md").read_text()
    lines = {
        ln.split("|")[1].strip(): [c.strip() for c in ln.strip().strip("|").split("|")]
        for ln in md.splitlines()
        if ln.startswith("| ")
    }
    assert lines["a"][1:4] == ["2", "0", "81.00 ± 2.83"]  # final acc: sample std of 79 and 83
    assert lines["b"][1:4] == ["2", "0", "**87.00 ± 2.83**"]
    assert lines["c"][1:4] == ["1", "1", "49.00"]  # one finished seed: no spread to show
    assert lines["d"][1:4] == ["0", "0", "-"]
    assert lines["a"][5] == "10.5 ± 0.7" and lines["c"][5] == "**10.0**"  # the fastest in bold
    assert "`c-s1`: UserError: boom" in md
    assert "Best by final_test_acc: **variant=b**" in md
    assert (tmp_path / "figures" / "curves.png").is_file()


def test_tabulate_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no sweep runs"):
        tabulate(tmp_path)


def parse(argv):
    p = argparse.ArgumentParser()
    add_sweep_parser(p.add_subparsers(dest="command", required=True))
    return p.parse_args(argv)


def test_cli_dry_run_lists_runs(tmp_path, capsys):
    a = parse(["sweep", str(sweep_file(tmp_path, **FULL)), "--set", "seeds=[0]", "--dry-run", "--out", "X"])
    a.fn(a)
    out = capsys.readouterr().out
    assert "lr0.1-relu-sgd-plain-s0" in out and "16 runs -> X" in out


def test_cli_runs_a_sweep_on_real_data(tmp_path, capsys):
    from conftest import shared_file

    mnist = shared_file("mnist")
    doc = {
        "set": {
            "model.name": "plainnet",
            "model.args": {"stages": [4, 8]},
            "data.n_items": 256,
            "data.batch_size": 64,
            "data.eval_batch_size": 2000,
            "data.device": "cpu",
            "data.cache_dir": str(tmp_path / "cache"),
            "train.progress": False,
            "train.log_tensorboard": False,
            "train.save_checkpoints": False,
        },
        "axes": {"optim.lr": [0.1, 0.01]},
    }
    out = tmp_path / "out"
    a = parse(
        ["sweep", str(sweep_file(tmp_path, **doc)), "--data", str(mnist), "--set", "train.epochs=1", "--out", str(out)]
    )
    a.fn(a)
    printed = capsys.readouterr().out
    assert "| optim.lr | n | final test acc" in printed and f"sweep folder: {out}" in printed
    summary = json.loads((out / "lr0.1-s0" / "summary.json").read_text())
    assert summary["dataset"] == "mnist" and 0.0 <= summary["best_test_acc"] <= 1.0
    assert (out / "results.md").read_text() in printed
    saved = from_dict(SweepConfig, yaml.safe_load((out / "sweep.yaml").read_text()))
    # --data is stored absolute, so the runs still find it from another working directory
    assert saved.overrides["data"]["source"] == str(Path(mnist).resolve()) and saved.overrides["train"]["epochs"] == 1
