"""fit / load / Run / sweep: one call trains, the model comes back in memory, a rerun of the same
cell works, and a loaded run predicts what `cifarlab predict` prints."""

import json
import tempfile

import numpy as np
import pytest
import torch
from conftest import shared_file
from torch import nn

import cifarlab
from cifarlab.analysis.predict import load_image
from cifarlab.cli import main

from .conftest import CLASSES, tiny_config


def test_fit_twice_in_one_folder_and_out_reruns(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(folder)
    a = cifarlab.fit(cfg, overrides={"train.epochs": 2})
    b = cifarlab.fit(cfg, overrides={"train": {"epochs": 2}})  # nested keys mean the same
    assert a.run_dir != b.run_dir and a.run_dir.is_dir() and b.run_dir.is_dir()
    assert not (tmp_path / "runs").exists()  # out=None keeps nothing in the working folder
    assert a.summary["final_test_acc"] == b.summary["final_test_acc"]  # same seed, same run
    assert [h["epoch"] for h in a.history] == [1, 2] and a.history[-1]["test_acc"] == a.summary["final_test_acc"]
    assert isinstance(a.model, cifarlab.Classifier) and a.model.classes == list(CLASSES)
    out = tmp_path / "run"
    c = cifarlab.fit(cfg, overrides={"train.epochs": 2}, out=out)
    again = cifarlab.fit(cfg, overrides={"train.epochs": 2}, out=out)  # the finished run comes back
    assert again.summary == c.summary and again.run_dir == out
    with pytest.raises(cifarlab.UserError) as e:  # other settings into the same folder: Python's words
        cifarlab.fit(cfg, overrides={"train.epochs": 3}, out=out)
    assert "out=" in str(e.value) and "--out" not in str(e.value) and "train.epochs" in str(e.value)


def test_load_predict_equals_cifarlab_predict(folder, tmp_path, capsys):
    run = cifarlab.fit(tiny_config(folder), out=tmp_path / "run")
    images = sorted((folder / "test").glob("*/*.png"))
    assert main(["predict", str(run.run_dir), *map(str, images), "--json", "--topk", "1"]) == 0
    cli = [r["top"][0]["index"] for r in json.loads(capsys.readouterr().out)]
    clf = cifarlab.load(run.run_dir)
    assert clf.predict(images).tolist() == cli  # image files
    raw = torch.stack([load_image(p, (18, 18, 3)) for p in images])
    assert clf.predict(raw).tolist() == cli  # uint8 N x H x W x C
    assert clf.predict(raw.permute(0, 3, 1, 2).float() / 255).tolist() == cli  # [0, 1] floats N x C x H x W
    assert run.predict(raw.numpy()).tolist() == cli
    assert np.mean(np.array(cli) == np.array([CLASSES.index(p.parent.name) for p in images])) > 0.9
    logits = clf(raw)  # an nn.Module: forward on raw images, normalization inside
    assert logits.shape == (len(images), 3) and isinstance(clf, nn.Module)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_fit_your_own_module(folder, tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    before = net.conv.weight.detach().clone()
    run = cifarlab.fit(tiny_config(folder), model=net, out=tmp_path / "run")
    assert run.summary["model"] == "custom:TinyNet" and run.summary["params"] == cifarlab.count_params(net)
    assert not torch.equal(net.conv.weight.detach(), before)  # trained in place, as Lightning's fit does
    raw = torch.stack([load_image(p, (18, 18, 3)) for p in sorted((folder / "test").glob("*/*.png"))])
    with pytest.raises(cifarlab.UserError, match=r"model=TinyNet"):  # no name rebuilds your module
        cifarlab.load(run.run_dir)
    loaded = cifarlab.load(run.run_dir, model=TinyNet())
    assert torch.equal(loaded(raw), run.model(raw))
    assert loaded.predict(raw).tolist() == run.predict(raw).tolist()


def test_sweep_rows_and_rerun(folder, tmp_path):
    base = tiny_config(folder, epochs=1)
    rows = cifarlab.sweep(base, {"optim.lr": [0.01, 0.003]}, seeds=[0, 1], out=tmp_path / "sw")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert (tmp_path / "sw" / "results.csv").is_file()
    again = cifarlab.sweep(base, {"optim": {"lr": [0.01, 0.003]}}, seeds=[0, 1], out=tmp_path / "sw")
    assert [r["final_test_acc"] for r in again] == [r["final_test_acc"] for r in rows]
    with pytest.raises(cifarlab.SweepFailed, match=r"1 of 2 runs failed") as e:  # 72 images, no batch of 100
        cifarlab.sweep(base, {"data.batch_size": [16, 100]}, overrides={"data.drop_last": True}, out=tmp_path / "f")
    assert [r["status"] for r in e.value.rows] == ["done", "failed"]


def test_errors_name_python_arguments(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where out=None makes its folder
    with pytest.raises(cifarlab.UserError, match=r"overrides must be a dict"):
        cifarlab.fit(tiny_config(folder), overrides=["train.epochs=1"])
    with pytest.raises(cifarlab.UserError, match=r"epochz") as e:
        cifarlab.fit(tiny_config(folder), overrides={"train.epochz": 1})
    assert "--set" not in str(e.value)
    with pytest.raises(cifarlab.UserError, match=r"resume=True") as e:
        cifarlab.fit(tiny_config(folder), resume=True)
    assert "--" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # the failed fit left no empty temporary run folder


@pytest.mark.slow
def test_quick_preset_twice_on_the_shared_data(tmp_path, monkeypatch):
    """The issue's first acceptance line, on the offline copy of CIFAR-10 (a smaller test split)."""
    monkeypatch.setenv("CIFARLAB_DATA", str(shared_file("cifar10-jpeg.tar.gz").parent))
    monkeypatch.chdir(tmp_path)
    over = {"data.n_items": 1024, "train.epochs": 1, "data.n_test": 500, "train.progress": False}
    accs = [cifarlab.fit("quick", overrides=over).summary["final_test_acc"] for _ in range(2)]
    assert accs[0] == accs[1] and 0 <= accs[0] <= 1
