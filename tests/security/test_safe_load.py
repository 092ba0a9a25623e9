"""Opening a file never runs code in it (issue 22): a checkpoint, an old .bundle.pt and a lenet.pth-style
file whose pickle carries a `__reduce__` are refused by every command that reads them, with one line and
exit status 2, before the payload (which would create a marker file) runs; our own files load as before."""

import os
import pathlib
import shutil

import pytest
import torch
from conftest import make_image_folder, train_tiny_run

from cifarlab.cli import main
from cifarlab.errors import UserError
from cifarlab.train.checkpoint import BUNDLE_FORMAT, read_checkpoint


class Touch:
    """Unpickled without weights_only, creates `marker` (pathlib.Path.touch: pickled via getattr)."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class Mkdir(Touch):
    """The same through os.mkdir (pickled as the global posix.mkdir / nt.mkdir)."""

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


PAYLOADS = {"touch": Touch, "mkdir": Mkdir}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """plainnet trained for one epoch on a two-class folder (seed 0): a real run folder."""
    root = tmp_path_factory.mktemp("safe")
    folder = make_image_folder(root / "imgs", n_train=8, n_test=4, size=16)
    return train_tiny_run(root, folder, epochs=1)


@pytest.fixture(autouse=True)
def cache(run, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(run.parent / "cache"))


@pytest.fixture(params=sorted(PAYLOADS))
def payload(request, tmp_path):
    """(the object to hide in a file, the marker it would create)."""
    marker = tmp_path / "pwned"
    return PAYLOADS[request.param](marker), marker


def evil_checkpoint(run, path, obj) -> pathlib.Path:
    """The run's own best.pt with one more entry: the payload."""
    ckpt = torch.load(run / "best.pt", weights_only=True)
    torch.save({**ckpt, "note": obj}, path)
    return path


def evil_old_bundle(run, path, obj) -> pathlib.Path:
    """A version 1 bundle (torch.save dict, as cifarlab wrote them before safetensors) with the payload."""
    ckpt = torch.load(run / "best.pt", weights_only=True)
    keys = ("config", "classes", "mean", "std", "image_shape", "model_name", "model_options")
    bundle = {"format": BUNDLE_FORMAT, "version": 1, "model": ckpt["model"], **{k: ckpt[k] for k in keys}}
    torch.save({**bundle, "metrics": {"epoch": 1}, "environment": obj}, path)
    return path


def evil_official(path, obj) -> pathlib.Path:
    """The DessiLBI authors' layout (legacy torch pickle, LeNet weights, one SLBI param group), payload in
    the optimizer state."""
    from cifarlab.models import create_model

    model = create_model("LeNet", in_channels=1)
    group = {"lr": 0.1, "kappa": 1, "mu": 20, "weight_decay": 0, "momentum": 0.9, "dampening": 0, "params": [0]}
    state = {0: {"name": "conv3.weight", "z_buffer": torch.zeros(120, 16, 5, 5), "evil": obj}}
    ckpt = {"model": model.state_dict(), "optimizer": {"state": state, "param_groups": [group]}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


def refused(capsys, marker, *args) -> str:
    """Run the command; assert exit 2, one `cifarlab: error:` line, no marker. Returns that line."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cifarlab: error: refusing to load "), err
    assert "holds code or objects cifarlab does not load" in lines[0], err
    assert not marker.exists(), f"{marker} was created: the file's code ran"
    return lines[0]


def test_the_payloads_are_live(run, tmp_path, payload):
    """Control: loaded the old way (weights_only=False) each file does create the marker."""
    obj, marker = payload
    files = [
        evil_checkpoint(run, tmp_path / "e.pt", obj),
        evil_old_bundle(run, tmp_path / "e.bundle.pt", obj),
        evil_official(tmp_path / "e.pth", obj),
    ]
    for f in files:
        assert not marker.exists()
        torch.load(f, weights_only=False)
        assert marker.exists(), f
        marker.rmdir() if marker.is_dir() else marker.unlink()


def test_eval(run, tmp_path, payload, capsys):
    obj, marker = payload
    line = refused(capsys, marker, "eval", evil_checkpoint(run, tmp_path / "e.pt", obj))
    assert f"refusing to load {tmp_path / 'e.pt'}: " in line
    assert line.endswith(("(getattr)", f"({os.mkdir.__module__}.mkdir)")), line  # names what it holds


def test_predict_on_a_bundle(run, tmp_path, payload, capsys):
    obj, marker = payload
    image = run.parent / "imgs" / "test" / "cat" / "0000.png"
    refused(capsys, marker, "predict", evil_old_bundle(run, tmp_path / "e.bundle.pt", obj), image)


def test_inspect(run, tmp_path, payload, capsys):
    obj, marker = payload
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    evil_checkpoint(run, folder / "best.pt", obj)
    refused(capsys, marker, "inspect", folder, "filters")
    assert not (folder / "analysis").exists()


def test_prune(run, tmp_path, payload, capsys):
    obj, marker = payload
    path = evil_checkpoint(run, tmp_path / "e.pt", obj)
    refused(capsys, marker, "prune", path, "--layers", "conv1.weight", "--percent", 50, "--device", "cpu")


def test_export(run, tmp_path, payload, capsys):
    obj, marker = payload
    path = evil_checkpoint(run, tmp_path / "e.pt", obj)
    for fmt in ("bundle", "torchscript"):
        refused(capsys, marker, "export", path, "--format", fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]  # nothing written


def test_prune_on_an_official_style_pth(tmp_path, payload, capsys):
    obj, marker = payload
    path = evil_official(tmp_path / "lenet.pth", obj)
    refused(capsys, marker, "prune", path, "--layers", "conv3.weight", "--percent", 80, "--device", "cpu")


def test_train_resume(run, tmp_path, payload, capsys):
    obj, marker = payload
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    evil_checkpoint(run, folder / "last.pt", obj)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    refused(capsys, marker, "train", "--out", folder, "--resume", "--set", "train.progress=false")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # nothing changed


def test_own_files_load_as_before(run):
    """A run's checkpoints load through the safe path with every entry (optimizer, scheduler, rng, ...)."""
    for name in ("best.pt", "last.pt"):
        ckpt = read_checkpoint(run / name)
        assert {"model", "optimizer", "scheduler", "rng", "config", "mean", "std"} <= set(ckpt)
        assert ckpt["model_name"] == "plainnet" and ckpt["rng"]["cpu"].dtype == torch.uint8


def test_a_refusal_names_a_pickled_class(run, tmp_path):
    """Not only functions: any object outside torch's weights-only allowlist, named in the message."""
    ckpt = torch.load(run / "best.pt", weights_only=True)
    torch.save({**ckpt, "args": __import__("argparse").Namespace(lr=0.1)}, tmp_path / "ns.pt")
    with pytest.raises(UserError, match=r"refusing to load .*ns\.pt: .*\(argparse\.Namespace\)$"):
        read_checkpoint(tmp_path / "ns.pt")


def test_load_official_refuses_on_its_own(tmp_path, payload):
    """sparsity.load_official (the Python API path, no read_checkpoint before it) is safe by itself."""
    from cifarlab.sparsity.official import load_official

    obj, marker = payload
    with pytest.raises(UserError, match="refusing to load .*lenet.pth: it holds code"):
        load_official(evil_official(tmp_path / "lenet.pth", obj))
    assert not marker.exists()


def test_a_torchscript_file_is_never_loaded_as_a_checkpoint(run, tmp_path, capsys):
    """TorchScript runs code of its own: `export` checks only the file it has just written, and a
    TorchScript file handed to eval/predict is not a checkpoint (torch.load dispatches it to
    torch.jit.load only without weights_only)."""
    out = tmp_path / "m.torchscript.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cifarlab: error: cannot read checkpoint {out}: "), lines
    assert "TorchScript" in lines[0]
