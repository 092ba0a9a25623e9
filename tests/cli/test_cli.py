"""The command as a user meets it: exit codes, one-line errors, files written."""

import json
import subprocess
import sys

import pytest
from conftest import make_image_folder

from cifarlab.cli import main


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = [
    "--set",
    "model.name=plainnet",
    "--set",
    "model.args={stages: [8, 16]}",
    "--set",
    "train.epochs=2",
    "--set",
    "data.batch_size=16",
    "--set",
    "train.progress=false",
    "--set",
    "data.device=cpu",
]


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


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "quick", "--set", "optim.lrr=1"], "unknown key 'optim.lrr'"),
        (["train", "quick", "--set", "model.name=resnet999"], "unknown model"),
        (["train", "quick", "--set", "optim.name=adamx"], "unknown optimizer"),
        (["train", "nope.yaml"], "config file not found"),
        (["train", "quick", "--data", "/no/such/place"], "/no/such/place"),
        (["eval", "/no/such.pt"], "checkpoint not found"),
        (["train"], "needs a CONFIG"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, capsys, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    if args[0] == "train" and len(args) > 1:  # the case's own settings come last, so they win
        data = [] if "--data" in args else ["--data", str(folder)]
        args = args[:2] + ["--out", str(tmp_path / "r"), *data, *TINY] + args[2:]
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("cifarlab: error:")]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "last.pt").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["train", "quick", *TINY],
        ["sweep", "ablation_lr", "--set", "seeds=[0]"],
        ["bn-study", "--set", "epochs=1"],
        ["dessilbi", "--set", "epochs=1 vgg=false"],
        ["pj2", "--scale", "smoke"],
    ],
)
def test_out_that_is_a_file_is_one_line_exit_2(command, capsys, folder, tmp_path, monkeypatch):
    """Every command that writes a folder refuses a file as --out before any work, and leaves it alone."""
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run_cli(*command, "--out", target, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"cifarlab: error: --out {target} is a file, not a folder"
    assert target.read_text() == "mine"


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
    ck["model_name"], ck["model_options"] = "resnet18", {"num_classes": 2, "in_channels": 3}
    torch.save(ck, tmp_path / "other.pt")
    code, _, err = run_cli("eval", tmp_path / "other.pt", capsys=capsys)
    assert code == 2 and "does not fit model resnet18" in err and "Traceback" not in err


def test_models_lists_course_counts(capsys):
    code, out, _ = run_cli("models", capsys=capsys)
    assert code == 0
    for name, n in [
        ("VGG_A ", "9,750,922"),
        ("VGG_A_BatchNorm", "9,756,426"),
        ("VGG_A_Light", "285,162"),
        ("LeNet", "61,706"),
    ]:
        assert any(line.startswith(name) and n in line for line in out.splitlines()), (name, out)


def test_data_info(folder, capsys, tmp_path):
    code, out, _ = run_cli("data", "info", folder, "--cache-dir", tmp_path, "--json", capsys=capsys)
    info = json.loads(out)
    assert code == 0 and info["splits"]["train"]["per_class"] == {"cat": 24, "dog": 24}
    code, out, _ = run_cli("data", "info", folder, "--cache-dir", tmp_path, capsys=capsys)
    assert code == 0 and "train: 48 images  cat:24  dog:24" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "cifarlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
