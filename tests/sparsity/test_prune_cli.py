"""`cifarlab prune`: the official checkpoint's numbers, our own SLBI run, and bad inputs (exit 2, one line)."""

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder, shared_file

from cifarlab import cli
from cifarlab.config import load_config
from cifarlab.train.engine import train
from cifarlab.train.evaluate import evaluate_checkpoint


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_official_checkpoint_conv3_then_conv3_fc1(capsys):
    ckpt, mnist = shared_file("dessilbi-official/lenet.pth"), shared_file("mnist")
    rc, out, err = run(
        capsys,
        "prune",
        ckpt,
        "--layers",
        "conv3.weight",
        "--percent",
        80,
        "--data",
        mnist,
        "--prune-bias",
        "--json",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    res = json.loads(out)
    assert res["accuracy_before"] == pytest.approx(98.61, abs=1e-9)
    assert res["accuracy_pruned"] == pytest.approx(97.85, abs=1e-9)
    assert res["accuracy_recovered"] == pytest.approx(98.61, abs=1e-9)
    conv3 = res["report"]["layers"]["conv3.weight"]
    assert (conv3["kind"], conv3["removed"], conv3["total"]) == ("filters", 96, 120)

    rc, out, err = run(
        capsys,
        "prune",
        ckpt,
        "--layers",
        "conv3.weight",
        "fc1.weight",
        "--percent",
        80,
        "--data",
        mnist,
        "--device",
        "cpu",
    )
    assert rc == 0, err
    assert "accuracy before pruning: 98.61%" in out
    assert "| fc1.weight | weights | 8,335 | 10,080 | 82.7% |" in out  # not the nominal 80%
    assert "accuracy after pruning:  97.85% (-0.76 points)" in out
    assert "accuracy after recover:  98.61%" in out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny LeNet runs on 28x28 RGB images: one with SLBI, one with SGD-momentum."""
    root = tmp_path_factory.mktemp("prune_cli")
    data = make_image_folder(root / "imgs", n_train=32, n_test=16, size=28)
    out = {}
    for opt in ("slbi", "momentum"):
        cfg = load_config(
            "lenet_mnist_slbi" if opt == "slbi" else "lenet_mnist",
            [
                f"data.source={data}",
                "data.batch_size=16",
                "train.epochs=2",
                "train.progress=false",
                "train.log_tensorboard=false",
                "data.device=cpu",
                "seed=1",
            ],
        )
        train(cfg, run_dir=root / opt)
        out[opt] = root / opt
    return out


def test_own_slbi_run_prunes_and_recovers(runs, capsys):
    rc, out, err = run(
        capsys,
        "prune",
        runs["slbi"],
        "--layers",
        "conv3.weight",
        "fc1.weight",
        "--percent",
        50,
        "--json",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    res = json.loads(out)
    layers = res["report"]["layers"]
    ckpt = torch.load(runs["slbi"] / "best.pt", weights_only=False)
    order = next(st["prune_order"] for st in ckpt["optimizer"]["state"].values() if st["prune_order"].shape == (120,))
    # the filters scoring below the median of the saved prune order (ties at -2000 keep it from being 60)
    expect = int((order < float(np.percentile(order.numpy(), 50))).sum())
    assert 55 <= expect <= 60
    assert (layers["conv3.weight"]["kind"], layers["conv3.weight"]["removed"]) == ("filters", expect)
    assert layers["fc1.weight"]["kind"] == "weights" and layers["fc1.weight"]["total"] == 120 * 84
    assert res["accuracy_recovered"] == res["accuracy_before"]
    # the same model and test set as `cifarlab eval` (the run folder's best.pt)
    assert res["accuracy_before"] == pytest.approx(100 * evaluate_checkpoint(runs["slbi"], device="cpu")["accuracy"])
    conv3 = ckpt["model"]["conv3.weight"]
    assert torch.count_nonzero(conv3.flatten(1).norm(dim=1) == 0) == 0  # the file itself is never pruned


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--layers", "conv3.bias", "--percent", 50],
            "unknown layer conv3.bias; tracked layers: conv1.weight, "
            "conv2.weight, conv3.weight, fc1.weight, fc2.weight",
        ),
        (["--layers", "conv3.weight", "--percent", 150], "prune percent must be in [0, 100]"),
    ],
)
def test_bad_layer_or_percent_exit_2_with_one_line(runs, capsys, args, message):
    rc, out, err = run(capsys, "prune", runs["slbi"], *args, "--device", "cpu")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_a_run_without_slbi_state_or_no_checkpoint_exit_2(runs, tmp_path, capsys):
    rc, _, err = run(capsys, "prune", runs["momentum"], "--layers", "conv3.weight", "--percent", 50)
    assert rc == 2 and err.count("\n") == 1
    assert "has no SLBI state (trained with optimizer 'momentum')" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path in (junk, tmp_path / "missing.pt", tmp_path):
        rc, _, err = run(capsys, "prune", path, "--layers", "conv3.weight", "--percent", 50)
        assert rc == 2 and err.startswith("cifarlab: error: ") and err.count("\n") == 1, err
