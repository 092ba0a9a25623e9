"""The DessiLBI study at tiny settings: run folders, pruning rows, tables, figures, reuse, stalled runs."""

import csv
import json

import pytest
import torch
from conftest import make_image_folder

from cifarlab import cli
from cifarlab.data import Dataset
from cifarlab.errors import UserError
from cifarlab.studies.dessilbi_study import lenet_run_config, load_study_config, prune_costs, run_dessilbi_study

TINY = (
    "epochs=1 n_items=256 percents=[50,80] vgg_percents=[30,60] vgg_layer_percent=50 "
    "vgg_model=VGG_A_Light vgg_epochs=1 vgg_n_items=128 progress=false device=cpu chance_acc=0"
)
FIGURES = ["lenet_curves", "solution_path", "conv3_weights", "lenet_pruning", "vgg_pruning"]


def synthetic(n_train: int, n_test: int, size: int, channels: int) -> Dataset:
    """Class k has a bright horizontal band at rows 2k+4 .. 2k+6, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x = 30 * torch.randn(n_train + n_test, size, size, channels, generator=g) + 60
    for k in range(10):
        x[y == k, 2 * k + 4 : 2 * k + 7] += 150
    x = x.clamp(0, 255).to(torch.uint8)
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        [str(i) for i in range(10)],
        "synthetic",
        "synthetic",
        (0.3,) * channels,
        (0.3,) * channels,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("dessilbi")
    cfg = load_study_config(None, [TINY])
    data = {"lenet_dataset": synthetic(256, 100, 28, 1), "vgg_dataset": synthetic(128, 100, 32, 3)}
    summary = run_dessilbi_study(cfg, out, **data)
    return out, summary, data


def test_study_writes_runs_tables_and_figures(study):
    out, summary, _ = study
    runs = ["lenet-slbi-seed1", "lenet-momentum-seed1", "lenet-slbi_adam-seed1", "vgg-slbi_adam-seed0"]
    for name in runs:
        assert (out / name / "last.pt").is_file() and (out / name / "summary.json").is_file(), name
    for name in ("results.md", "results.csv", "pruning.csv", "summary.json"):
        assert (out / name).stat().st_size > 100, name
    for fig in FIGURES:
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    assert summary["figures"] == FIGURES

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == runs
    with open(out / "pruning.csv") as f:
        prune = list(csv.DictReader(f))
    # LeNet: 2 SLBI runs x (conv3 at 2 percents + conv3&fc1 at 2 percents); VGG_A_Light: sweep of 2 percents
    # of one layer + each of its 5 tracked layers (2 conv, 3 FC) at one percent
    lenet = [r for r in prune if r["part"] == "lenet"]
    vgg = [r for r in prune if r["part"] == "vgg"]
    assert len(lenet) == 2 * (2 + 2 * 2) and {r["optimizer"] for r in lenet} == {"slbi", "slbi_adam"}
    assert len(vgg) == 2 + 5
    assert [r["layer"] for r in vgg if r["experiment"] == "each_layer"] == [
        "stage1.0.weight",
        "stage2.0.weight",
        "classifier.0.weight",
        "classifier.2.weight",
        "classifier.4.weight",
    ]
    for r in prune:
        assert float(r["accuracy_recovered"]) == float(r["accuracy_before"])  # recover() undoes every prune
        n, total = int(r["removed"]), int(r["total"])
        assert float(r["fraction"]) == pytest.approx(n / total)
        if r["layer"] == "conv3.weight":
            assert r["unit"] == "filters" and total == 120
            # percentile semantics: at most `percent` of the filters fall strictly below it
            assert 0 < n <= float(r["percent"]) / 100 * total
        if r["layer"] == "fc1.weight":
            assert r["unit"] == "weights" and total == 120 * 84

    s = json.loads((out / "summary.json").read_text())
    assert [h["run"] for h in s["headline"]] == runs[:3]
    slbi = s["headline"][0]
    assert slbi["percent"] == 80 and slbi["removed"]["conv3.weight"].endswith("/120")
    ok = [
        float(r["percent"])
        for r in lenet
        if r["run"] == slbi["run"]
        and r["layer_set"] == "conv3.weight"
        and float(r["accuracy_before"]) - float(r["accuracy_pruned"]) <= 1
    ]
    assert slbi["max_percent_within_1pt"] == (max(ok) if ok else None)
    assert "cost_points" not in s["headline"][1]  # momentum has no SLBI state: not pruned
    md = (out / "results.md").read_text()
    assert "## LeNet: pruning conv3.weight at 80" in md and "each layer pruned alone at 50" in md
    assert [(c["optimizer"], c["runs"]) for c in s["prune_costs"]] == [("slbi", 1), ("slbi_adam", 1)]
    assert s["prune_costs"][0]["median_cost"] == pytest.approx(slbi["cost_points"])


def test_prune_cost_over_seeds_and_fp32_lenet():
    head = [{"optimizer": "slbi", "cost_points": c} for c in (0.5, 4.0, 1.0, 2.0)]
    head += [{"optimizer": "slbi"}, {"optimizer": "momentum"}]  # a stalled run, an unpruned optimizer
    assert prune_costs(head) == [
        {
            "optimizer": "slbi",
            "runs": 4,
            "median_cost": 1.5,
            "mean_cost": 1.875,
            "min_cost": 0.5,
            "max_cost": 4.0,
            "within_1pt": 2,
        }
    ]
    cfg = lenet_run_config(load_study_config(), "slbi", 1)
    assert cfg.train.amp == "off"  # the authors trained in fp32; bf16 autocast would change the selection


def test_finished_runs_are_reused_and_stalled_runs_flagged(study, capsys):
    """Same folder, chance_acc 0.99: no run trains again, every run is stalled, nothing is pruned."""
    out, _, data = study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/last.pt")}
    cfg = load_study_config(None, [TINY, "chance_acc=0.99 progress=true"])
    summary = run_dessilbi_study(cfg, out, **data)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/last.pt")} == stamps
    assert "stalled at chance" in capsys.readouterr().out
    assert all(r["stalled"] for r in summary["runs"]) and summary["pruning"] == []
    assert all(m["mean_test_acc"] is None and m["stalled"] == m["runs"] for m in summary["optimizer_means"])
    md = (out / "results.md").read_text()
    assert md.count("STALLED") >= 4 and "not pruned" in md
    assert summary["figures"] == ["lenet_curves", "vgg_pruning"]  # training curves only
    assert not (out / "solution_path.png").exists()  # the first pass's figure, stale now

    cfg = load_study_config(None, [TINY, "epochs=2"])  # another setting must not reuse the old folder
    with pytest.raises(UserError, match="holds a run with other settings .*train.epochs"):
        run_dessilbi_study(cfg, out, **data)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizers=[adam]", "optimizers must be"),
        ("seeds=[]", "seeds must be"),
        ("percents=[50,120]", "percents"),
        ("prune_sets=[conv3.weight]", "prune_sets"),
        ("lenet=false vgg=false", "nothing to do"),
        ("no_such_key=1", "unknown key 'no_such_key'"),
    ],
)
def test_bad_settings_are_user_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_study_config(None, [override])


def test_command_runs_the_lenet_part_and_names_unknown_layers(tmp_path, monkeypatch, capsys):
    data = make_image_folder(tmp_path / "imgs", n_train=16, n_test=8, size=28)
    args = [
        "dessilbi",
        "--out",
        str(tmp_path / "study"),
        "--data",
        str(data),
        "--set",
        "epochs=1 batch_size=16 percents=[50] optimizers=[slbi] vgg=false progress=false device=cpu chance_acc=0",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| lenet-slbi-seed1 | conv3.weight | 50.00 |" in out and "study folder:" in out
    assert cli.main(args + ["--set", "prune_sets=[[conv9.weight]]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown layer conv9.weight" in err and "tracked layers: conv1.weight" in err


def test_runs_are_the_train_presets_plus_overrides_and_the_shorthands_are_aliases():
    """lenet_run / vgg_run are {base: PRESET, set: {...}}; epochs=, lr=, vgg_epochs= ... land in the same place."""
    from cifarlab.config import load_config, to_dict
    from cifarlab.studies.dessilbi_study import vgg_run_config

    preset = to_dict(load_config("lenet_mnist_slbi"))
    slbi = to_dict(lenet_run_config(load_study_config(), "slbi", 1))
    assert {k: slbi[k] for k in ("model", "optim", "schedule")} == {
        k: preset[k] for k in ("model", "optim", "schedule")
    }
    momentum = lenet_run_config(load_study_config(), "momentum", 1)
    assert momentum.optim.name == "momentum" and momentum.optim.args == {}  # kappa, mu belong to SLBI
    short = load_study_config(None, ["epochs=2 lr=0.05 lr_step=1 vgg_epochs=3 vgg_model=VGG_A_Light"])
    long = load_study_config(
        None,
        [
            "lenet_run.set.train.epochs=2 lenet_run.set.schedule.step_size=1 "
            "lenet_optims.slbi.lr=0.05 lenet_optims.momentum.lr=0.05 "
            "vgg_run.set.train.epochs=3 vgg_run.set.model.name=VGG_A_Light"
        ],
    )
    for opt in ("slbi", "momentum", "slbi_adam"):
        assert to_dict(lenet_run_config(short, opt, 1)) == to_dict(lenet_run_config(long, opt, 1))
    assert to_dict(vgg_run_config(short)) == to_dict(vgg_run_config(long))
    assert vgg_run_config(short).augment.crop_padding == 4
    assert vgg_run_config(load_study_config(None, ["vgg_augment=false"])).augment.crop_padding == 0
    with pytest.raises(UserError, match="not found"):
        load_study_config(None, ["lenet_run.base=no_such_preset"])
    with pytest.raises(UserError, match="train.epochs"):
        load_study_config(None, ["lenet_run.set.train.epochs=ten"])


@pytest.mark.slow
def test_lenet_runs_side_by_side_match_the_runs_one_after_another(study, tmp_path):
    """--parallel 2: the three LeNet runs in processes of their own give the same results."""
    from cifarlab.train import pool

    out, summary, data = study
    cfg = load_study_config(None, [TINY, "vgg=false"])
    pool.set_parallel(2)
    try:
        apart = run_dessilbi_study(cfg, tmp_path / "par", lenet_dataset=data["lenet_dataset"])
    finally:
        pool.set_parallel(None)
    lenet = [r for r in summary["runs"] if r["part"] == "lenet"]
    assert [r["run"] for r in apart["runs"]] == [r["run"] for r in lenet]
    for a, b in zip(lenet, apart["runs"]):
        assert b["final_test_acc"] == pytest.approx(a["final_test_acc"], abs=1.5), a["run"]  # percent: one image
