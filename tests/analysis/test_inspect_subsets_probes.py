"""`cifarlab inspect`: the Hessian spectrum figure, --split/--seed image subsets recorded in the JSON,
and the Santurkar et al. probes at a checkpoint (the numbers are bn_probe's own)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_folder, train_tiny_run

from cifarlab.analysis.bn_probe import probe_step
from cifarlab.analysis.hessian import spectrum_figure
from cifarlab.analysis.inspect import Session
from cifarlab.analysis.landscape import bn_mode
from cifarlab.analysis.plotting import to_input
from cifarlab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """plainnet trained one epoch on a two-class image folder: 48 training, 16 test images."""
    root = tmp_path_factory.mktemp("subsets")
    yield train_tiny_run(root, make_image_folder(root / "imgs"), epochs=1)


@pytest.fixture(autouse=True)
def cache(run, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(run.parent / "cache"))


def cli(*args, capsys):
    code = main(["inspect", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_seeded_subsets_reproduce_and_test_split_draws_from_the_test_set(run):
    s = Session(run, "cpu")
    _, y, first = s.images("train", 10)
    assert first["indices"] is None and first["seed"] is None and torch.equal(y, s.ds.train_y[:10])
    a, b, c = (s.images("train", 10, seed)[2]["indices"] for seed in (5, 5, 6))
    assert a == b and a != c and len(set(a)) == 10 and max(a) < len(s.ds.train_y)
    x, y, info = s.images("test", 6, 5)
    idx = torch.tensor(info["indices"])
    assert info["split"] == "test" and info["n_images"] == 6 and max(info["indices"]) < len(s.ds.test_y)
    torch.testing.assert_close(x, to_input(s.ds.test_x[idx], s.mean, s.std))
    assert torch.equal(y, s.ds.test_y[idx])
    assert set(s.images("train", 4, 5)[2]["indices"]) <= set(a)  # --hessian-n images are the landscape's
    assert s.images("test", 1000, 1)[2]["n_images"] == len(s.ds.test_y)  # all of them when there are fewer


def test_landscape_centre_is_the_loss_on_the_drawn_test_images(run, tmp_path, capsys):
    args = ["landscape", "--dims", 1, "--grid", "-1:1:3", "--n", 6, "--split", "test", "--seed", 2]
    code, _, err = cli(run, *args, "--out", tmp_path, capsys=capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["data"]["split"] == "test" and res["data"]["seed"] == 2
    s = Session(run, "cpu")
    x, y, info = s.images("test", 6, 2)
    assert res["data"]["indices"] == info["indices"]
    with torch.no_grad():
        assert res["loss_at_centre"] == pytest.approx(F.cross_entropy(s.model(x), y).item(), rel=1e-5)


def test_hessian_writes_its_spectrum_and_subset(run, tmp_path, capsys):
    args = ["hessian", "--n", 8, "--k", 2, "--iters", 5, "--trace-samples", 2, "--split", "test", "--seed", 3]
    code, _, err = cli(run, *args, "--out", tmp_path, capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "hessian_spectrum.png").stat().st_size > 1000
    res = json.loads((tmp_path / "hessian.json").read_text())
    assert res["data"]["indices"] == Session(run, "cpu").images("test", 8, 3)[2]["indices"]
    assert res["data"]["split"] == "test" and res["n_images"] == 8 and len(res["eigenvalues"]) == 2


@pytest.mark.parametrize("eigs,largest", [([5.0, -3.0, 1.5], 5.0), ([-4.0, 2.0], 2.0)])
def test_spectrum_figure_shows_the_computed_eigenvalues(eigs, largest):
    fig = spectrum_figure(eigs, largest, 7.5, 0.5, "plainnet, 8 test images")
    ax = fig.axes[0]
    stems = ax.containers[0]
    assert list(stems.markerline.get_xdata()) == list(range(1, len(eigs) + 1))
    assert list(stems.markerline.get_ydata()) == eigs
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == "largest"]
    assert list(line.get_ydata()) == [largest, largest]
    labels = ax.get_legend_handles_labels()[1]
    assert any("largest algebraic" in t for t in labels) and any("largest in magnitude" in t for t in labels)
    assert "plainnet, 8 test images" in ax.get_title()


def test_probes_equal_bn_probes_own_numbers(run, tmp_path, capsys):
    code, out, err = cli(run, "probes", "--n", 12, "--batch-size", 8, "--seed", 1, "--out", tmp_path, capsys=capsys)
    assert code == 0 and out.startswith("probes: "), err
    assert (tmp_path / "probes.png").stat().st_size > 1000
    res = json.loads((tmp_path / "probes.json").read_text())
    finite = [res["loss_variation"], res["gradient_predictiveness"], res["beta_smooth"]]
    assert all(math.isfinite(v) for v in finite) and res["bn"] == "train" and res["batch_sizes"] == [8, 4]
    assert res["etas"] == pytest.approx(np.linspace(0.05, 0.4, 8) * 0.01)  # bn-study's grid times the run's lr
    s = Session(run, "cpu")
    x, y, info = s.images("train", 12, 1)
    assert res["data"]["indices"] == info["indices"]
    with bn_mode(s.model, "train"):
        direct = [probe_step(s.model, F.cross_entropy, x[i : i + 8], y[i : i + 8], res["etas"]) for i in (0, 8)]
    for key in ("loss", "grad_diff", "beta"):
        np.testing.assert_allclose(res["per_batch"][key], [p[key] for p in direct], rtol=1e-6)
    assert res["loss_variation"] == pytest.approx(np.mean([p["loss_max"] - p["loss_min"] for p in direct]))
    assert res["gradient_predictiveness"] == pytest.approx(
        np.mean([p["gradpred_max"] - p["gradpred_min"] for p in direct])
    )
    assert res["beta_smooth"] == pytest.approx(np.mean([p["beta_smooth"] for p in direct]))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["probes", "--split", "val"], "unknown --split 'val'"),
        (["probes", "--etas", "0:1:3"], "step sizes must be positive"),
        (["hessian", "--split", "test", "--n", 0], "--n must be at least 1"),
        (["probes", "--batch-size", 0], "--batch-size must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(run, tmp_path, capsys, args, needle):
    code, _, err = cli(run, *args, "--out", tmp_path, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cifarlab: error:") and needle in lines[0], err
