"""The command as a user meets it: exit codes, one-line errors, files written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifarlab.cli import main


def make_image_folder(root: Path, classes=("cat", "dog"), n_train=24, n_test=8, size=16, seed=0) -> Path:
    """A tiny ImageFolder with train/ and test/: class k has a brighter left/right half."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                img[:, k * size // 2:(k + 1) * size // 2] += 120
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = ["--set", "model.name=plainnet", "--set", "model.args={stages: [8, 16]}", "--set", "train.epochs=2",
        "--set", "data.batch_size=16", "--set", "train.progress=false", "--set", "data.device=cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def test_train_eval_resume(tmp_path, folder, capsys, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, out, err = run_cli("train", "quick", "--data", folder, "--out", run, *TINY, capsys=capsys)
    assert code == 0, err
    assert "run folder:" in out and (run / "summary.json").is_file()
    code, out, _ = run_cli("eval", run, "--json", capsys=capsys)
    res = json.loads(out)
    assert code == 0 and res["n"] == 16 and set(res["per_class"]) == {"cat", "dog"}
    assert sum(map(sum, res["confusion"])) == 16
    # resume a finished run: nothing left to do, the summary is rewritten from the checkpoint
    code, out, err = run_cli("train", "--out", run, "--resume", *TINY[:-2], capsys=capsys)
    assert code == 0, err


@pytest.mark.parametrize("args,needle", [
    (["train", "quick", "--set", "optim.lrr=1"], "unknown key 'optim.lrr'"),
    (["train", "quick", "--set", "model.name=resnet999"], "unknown model"),
    (["train", "quick", "--set", "optim.name=adamx"], "unknown optimizer"),
    (["train", "nope.yaml"], "config file not found"),
    (["train", "quick", "--data", "/no/such/place"], "/no/such/place"),
    (["eval", "/no/such.pt"], "checkpoint not found"),
    (["train"], "needs a CONFIG"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    args = [a if a != "quick" else "quick" for a in args]
    if args[0] == "train" and "--data" not in args and len(args) > 1:
        args += ["--data", str(folder), "--out", str(tmp_path / "r"), *TINY]
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_corrupt_checkpoint_and_wrong_architecture(tmp_path, folder, capsys, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run_cli("eval", bad, capsys=capsys)
    assert code == 2 and "cannot read checkpoint" in err
    run = tmp_path / "run"
    assert run_cli("train", "quick", "--data", folder, "--out", run, *TINY, capsys=capsys)[0] == 0
    import torch

    ck = torch.load(run / "last.pt", weights_only=False)
    ck["model_name"] = "resnet18"
    torch.save(ck, tmp_path / "other.pt")
    code, _, err = run_cli("eval", tmp_path / "other.pt", capsys=capsys)
    assert code == 2 and "does not fit model resnet18" in err and len(err.strip().splitlines()) == 1


def test_models_lists_course_counts(capsys):
    code, out, _ = run_cli("models", capsys=capsys)
    assert code == 0
    for name, n in [("VGG_A ", "9,750,922"), ("VGG_A_BatchNorm", "9,756,426"), ("VGG_A_Light", "285,162"),
                    ("LeNet", "61,706")]:
        assert any(line.startswith(name) and n in line for line in out.splitlines()), (name, out)


def test_data_info(folder, capsys, tmp_path):
    code, out, _ = run_cli("data", "info", folder, "--cache-dir", tmp_path, "--json", capsys=capsys)
    info = json.loads(out)
    assert code == 0 and info["counts"]["train"] == {"cat": 24, "dog": 24}


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "cifarlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
