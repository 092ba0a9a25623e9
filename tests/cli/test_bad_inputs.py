"""Bad inputs that used to end in a traceback (issue 22, section 3): each is one line `cifarlab: error:`,
exit 2 (exit 1 for a full disk, the environment's fault), and leaves no folder or half-written file."""

import errno
import json
import os

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from cifarlab.cli import main

TINY = ["--set", "model.name=VGG_A_Light", "--set", "train.epochs=1", "--set", "data.batch_size=4",
        "--set", "train.progress=false", "--set", "data.device=cpu", "--set", "train.log_tensorboard=false"]  # fmt: skip


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("cifarlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


def refused(capsys, *args, code: int = 2) -> str:
    got, _, err = cli(capsys, *args)
    line = error_line(err)
    assert got == code, err
    return line


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(autouse=True)
def cache(root, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(root / "cache"))


@pytest.fixture(scope="module")
def vgg_run(root):
    """VGG_A_Light (it takes 32x32 images only: a classifier sized for 8x8x32) trained 1 epoch on 32x32 images."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARLAB_CACHE", str(root / "cache"))
        folder = make_image_folder(root / "img32", n_train=8, n_test=2, size=32)
        assert main(["train", "quick", "--data", str(folder), "--out", str(root / "vgg"), *TINY]) == 0
    return root / "vgg"


# ---------------------------------------------------------------- images of another size


def test_train_on_images_of_another_size_names_both_sizes_before_any_folder(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "img64", n_train=4, n_test=2, size=64)
    line = refused(capsys, "train", "quick", "--data", folder, "--set", f"out={tmp_path / 'runs'}", *TINY)
    assert "model VGG_A_Light takes 32x32 images" in line and "holds 64x64 images" in line, line
    assert not (tmp_path / "runs").exists()
    line = refused(capsys, "train", "quick", "--data", folder, "--out", tmp_path / "run", *TINY)
    assert f"{folder} holds 64x64 images" in line and not (tmp_path / "run").exists(), line


def test_eval_on_images_of_another_size(vgg_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "x64.npz"
    np.savez(npz, x=rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), y=rng.integers(0, 2, 6))
    line = refused(capsys, "eval", vgg_run, "--data", npz)
    assert "takes 32x32 images" in line and f"{npz} holds 64x64 images" in line, line


# ---------------------------------------------------------------- config files and values


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    line = refused(capsys, "train", p)
    assert f"config file {p} is not UTF-8 text" in line, line


def test_run_folder_config_that_is_not_utf8(vgg_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(b"name: \xff\xfe\n")
    (run / "last.pt").write_bytes((vgg_run / "last.pt").read_bytes())
    line = refused(capsys, "train", "--resume", "--out", run)
    assert f"{run / 'config.yaml'} is not UTF-8 text" in line, line


@pytest.mark.parametrize(
    "where, text, key",
    [("top", "name: a\nseed: 1\nseed: 2\n", "'seed' (lines 2 and 3)"),
     ("nested", "train:\n  epochs: 1\n  lr: 2\n  epochs: 3\n", "'epochs' (lines 2 and 4)")],
)  # fmt: skip
def test_duplicate_yaml_key_names_key_and_lines(tmp_path, capsys, where, text, key):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    line = refused(capsys, "train", p)
    assert f"duplicate key {key}" in line, line


def test_duplicate_key_in_a_sweep_file(tmp_path, capsys):
    p = tmp_path / "sweep.yaml"
    p.write_text("name: s\nseeds: [0]\nmetrics: [final_test_acc]\nseeds: [1]\n")
    line = refused(capsys, "sweep", p, "--out", tmp_path / "out")
    assert "duplicate key 'seeds' (lines 2 and 4)" in line and not (tmp_path / "out").exists(), line


def test_yaml_merge_keys_are_no_duplicates(tmp_path):
    from cifarlab.config import read_yaml

    p = tmp_path / "merge.yaml"
    p.write_text("base: &b {lr: 1, wd: 2}\noptim:\n  <<: *b\n  lr: 3\n")
    assert read_yaml(p)["optim"] == {"lr": 3, "wd": 2}


@pytest.mark.parametrize(
    "setting, expect",
    [("seed=36893488147419103232", "seed=36893488147419103232 is out of range"),
     ("seed=-1", "seed=-1 is out of range"),
     ("schedule.milestones=[-5,abc]", "schedule.milestones[0]=-5 is out of range"),
     ("schedule.milestones=[5,abc]", "schedule.milestones[1]='abc' is out of range")],
)  # fmt: skip
def test_seed_and_milestones_out_of_range(tmp_path, capsys, setting, expect):
    line = refused(capsys, "train", "quick", "--out", tmp_path / "run", "--set", setting)
    assert expect in line, line
    assert not (tmp_path / "run").exists()


def test_largest_seed_is_taken():
    from cifarlab.config import Config, check, from_dict

    check(from_dict(Config, {"seed": 2**64 - 1, "schedule": {"milestones": [0.5, 3]}}))


# ---------------------------------------------------------------- inspect arguments and earlier files


@pytest.mark.parametrize(
    "args, expect",
    [(["hessian", "--iters", "0"], "--iters must be an integer >= 1, got 0"),
     (["hessian", "--k", "0"], "--k must be an integer >= 1, got 0"),
     (["hessian", "--trace-samples", "-1"], "--trace-samples must be an integer >= 0, got -1"),
     (["landscape", "--chunk", "0", "--grid", "-1:1:3"], "--chunk must be an integer >= 1, got 0")],
)  # fmt: skip
def test_inspect_counts_below_one_write_nothing(vgg_run, tmp_path, capsys, args, expect):
    out = tmp_path / "ins"
    line = refused(capsys, "inspect", vgg_run, *args, "--out", out)
    assert expect in line, line
    assert not out.exists()


@pytest.fixture(scope="module")
def landscape(vgg_run, root):
    out = root / "landscape"
    assert main(["inspect", str(vgg_run), "landscape", "--grid", "-1:1:3", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "name, expect", [("directions.pt", "cannot read"), ("landscape.npz", "cannot read landscape grid")]
)
@pytest.mark.parametrize("keep", [0, 200])
def test_truncated_file_of_an_earlier_landscape(vgg_run, landscape, tmp_path, capsys, name, expect, keep):
    out = tmp_path / "ins"
    out.mkdir()
    for f in ("directions.pt", "landscape.npz"):
        (out / f).write_bytes((landscape / f).read_bytes())
    cut = (landscape / name).read_bytes()[:keep]
    (out / name).write_bytes(cut)
    line = refused(capsys, "inspect", vgg_run, "landscape", "--grid", "-1:1:3", "--out", out)
    assert f"{expect} {out / name}" in line and "delete it" in line, line
    assert (out / name).read_bytes() == cut  # nothing overwritten


# ---------------------------------------------------------------- images, caches, sweeps


@pytest.mark.parametrize("side", [150, 110])  # PIL refuses from 2x its limit and only warns from 1x
def test_predict_a_decompression_bomb(vgg_run, tmp_path, capsys, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # a 20000x20000 PNG against the real limit
    p = tmp_path / "big.png"
    Image.new("L", (side, side)).save(p)
    line = refused(capsys, "predict", vgg_run, p)
    assert f"cannot read image {p}: Image size ({side * side} pixels) exceeds limit" in line, line


def test_a_cache_with_labels_out_of_range_is_rebuilt(tmp_path, capsys, monkeypatch):
    from cifarlab.data import load_dataset

    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "img", n_train=4, n_test=2)
    good = load_dataset(str(folder))
    (path,) = (tmp_path / "cache").glob("*.pt")
    blob = torch.load(path, weights_only=True)
    blob["train_y"][0] = 7  # two classes
    torch.save(blob, path)
    code, out, err = cli(capsys, "data", "info", folder)
    assert code == 0 and "damaged (labels span 0..7 for 2 classes); rebuilding it" in err, err
    assert torch.equal(load_dataset(str(folder)).train_y, good.train_y)
    blob["train_y"] = blob["train_y"][:3]  # a shape that does not match the images
    torch.save(blob, path)
    assert torch.equal(load_dataset(str(folder)).train_y, good.train_y)
    assert "labels of shapes (3,)" in capsys.readouterr().err


def test_a_sweep_with_an_unknown_metric_is_refused_before_any_run(tmp_path, capsys):
    p = tmp_path / "sweep.yaml"
    p.write_text("name: s\nseeds: [0]\nmetrics: [final_test_acc, final_tset_acc]\n")
    line = refused(capsys, "sweep", p, "--out", tmp_path / "out")
    assert "unknown metric 'final_tset_acc'" in line and "best_val_acc" in line, line
    assert not (tmp_path / "out").exists()


def test_a_table_of_an_unknown_metric_is_refused(tmp_path):
    from cifarlab.errors import UserError
    from cifarlab.sweeps.results import collect

    run = tmp_path / "r0"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "r0", "config_id": "c", "axes": {}, "seed": 0}))
    (run / "summary.json").write_text(json.dumps({"final_test_acc": 0.5, "train_seconds": 1.0, "my_score": 3}))
    with pytest.raises(UserError, match="unknown metric 'final_tset_acc'"):
        collect(tmp_path, ["final_tset_acc"])
    rows, _, metrics = collect(tmp_path, ["my_score"])  # a key a summary holds is known
    assert rows[0]["my_score"] == 3 and metrics[0] == "my_score"


# ---------------------------------------------------------------- a full disk


def test_full_disk_names_the_file_and_the_reason(tmp_path, capsys, monkeypatch):
    """The kernel's own ENOSPC: checkpoints written through /dev/full, as on a disk with no space left."""
    import builtins

    import cifarlab.run

    folder, run = make_image_folder(tmp_path / "img", n_train=4, n_test=2, size=32), tmp_path / "run"
    real_open = builtins.open

    def full(path, mode="r", *a, **k):
        return real_open("/dev/full", mode) if str(path).startswith(str(run)) else real_open(path, mode, *a, **k)

    monkeypatch.setattr(cifarlab.run, "open", full, raising=False)
    line = refused(capsys, "train", "quick", "--data", folder, "--out", run, *TINY, code=1)
    assert line == f"cifarlab: error: cannot write {run / 'best.pt'}: {os.strerror(errno.ENOSPC)}"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_torch_save_onto_a_full_device_reads_as_words():
    """torch.save given a path loses the errno ("inline_container.cc ... unexpected pos"): no such text."""
    from cifarlab.cli import write_error

    with pytest.raises(RuntimeError) as e:
        torch.save({"w": torch.zeros(1000)}, "/dev/full")
    msg = write_error(e.value)
    assert msg.startswith("cannot write /dev/full: ") and "inline_container" not in msg and "pos" not in msg, msg


# ---------------------------------------------------------------- checkpoints of the wrong shape


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"model": [1, 2, 3]}, "'model' entry is a list, not a dict"),
        ({"config": "data: x"}, "'config' entry is a str, not a dict"),
        ({"model_options": 7}, "'model_options' entry is a int, not a dict"),
        ({"model": {"features.0.weight": "not a tensor"}}, "'model' entry holds a non-tensor at 'features.0.weight'"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_a_checkpoint_whose_entries_have_the_wrong_type(vgg_run, tmp_path, capsys, change, expect, command):
    ckpt = torch.load(vgg_run / "best.pt", map_location="cpu", weights_only=True)
    bad = tmp_path / "bad" / "best.pt"
    bad.parent.mkdir()
    torch.save({**ckpt, **change}, bad)
    args = ["eval", bad] if command == "eval" else ["inspect", bad, "metrics"]
    line = refused(capsys, *args)
    assert expect in line, line
    assert sorted(p.name for p in bad.parent.iterdir()) == ["best.pt"]  # no analysis folder left behind


def test_resume_from_a_last_pt_of_the_wrong_type(vgg_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(vgg_run, run)
    (run / "summary.json").unlink()  # an interrupted run
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["config"] = ["not", "a", "config"]
    torch.save(ckpt, run / "last.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = refused(capsys, "train", "--resume", "--out", run)
    assert f"{run / 'last.pt'} is not a cifarlab checkpoint" in line, line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("analysis", ["metrics", "gradcam", "landscape"])
def test_inspect_on_images_of_another_size(vgg_run, tmp_path, capsys, analysis):
    rng = np.random.default_rng(0)
    npz = tmp_path / "x64.npz"
    np.savez(npz, images=rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), labels=rng.integers(0, 2, 6))
    out = tmp_path / "analysis"
    line = refused(capsys, "inspect", vgg_run, analysis, "--data", npz, "--out", out)
    assert "takes 32x32 images" in line and "64x64" in line, line
    assert not out.exists()
