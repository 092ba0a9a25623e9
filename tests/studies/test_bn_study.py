import json

import numpy as np
import pytest
import torch

from cifarlab.config import load_config
from cifarlab.data import Dataset
from cifarlab.errors import UserError
from cifarlab.studies.bn_study import BNStudyConfig, eta_grid, model_table, result_rows, run_bn_study, steps_to_loss

# two tiny nets that differ only in BatchNorm (VGG_A itself takes ~2.5 s per step on one CPU thread)
TINY = [
    {"name": "plainnet", "stages": [8, 16], "bn": False, "label": "plain"},
    {"name": "plainnet", "stages": [8, 16], "bn": True, "label": "plain_bn"},
]


def synthetic(n_train: int = 600, n_test: int = 100) -> Dataset:
    """Class-dependent mean colour plus noise, so a few steps already move the loss."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    base = (y.float() * 25).view(-1, 1, 1, 1)
    x = (base + 40 * torch.randn(n_train + n_test, 32, 32, 3, generator=g)).clamp(0, 255).to(torch.uint8)
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        [str(i) for i in range(10)],
        "synthetic",
        "synthetic",
        (0.5,) * 3,
        (0.25,) * 3,
    )


@pytest.mark.slow
def test_study_writes_arrays_tables_and_figures(tmp_path, capsys):
    cfg = load_config(None, ["n_items=512 epochs=1 probe_every=2 lrs=[1e-3,1e-4] n_etas=3"], cls=BNStudyConfig)
    cfg.models = TINY
    summary = run_bn_study(cfg, tmp_path, dataset=synthetic())

    for name in ("arrays.npz", "results.csv", "results.md", "summary.json"):
        assert (tmp_path / name).is_file(), name
    for fig in ("training_curves", "loss_band", "probes", "proxies"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)

    a = np.load(tmp_path / "arrays.npz")
    M, L, S, P, E = 2, 2, 4, 2, 3  # 512 images / batch 128 = 4 steps; probes at steps 0 and 2
    assert list(a["models"]) == ["plain", "plain_bn"]
    assert a["step_loss"].shape == (M, L, S) and np.isfinite(a["step_loss"]).all()
    assert a["train_acc"].shape == a["test_acc"].shape == (M, L, 1)
    assert a["probe_steps"].tolist() == [0, 2]
    assert a["etas"].shape == (L, E)
    np.testing.assert_allclose(a["etas"][1], np.linspace(0.05, 0.4, 3) * 1e-4)
    assert a["probe_loss"].shape == a["probe_grad_diff"].shape == (M, L, P, E)
    assert a["probe_beta"].shape == (M, L, P) and (a["probe_beta"] > 0).all()
    # the probe's L(w_t) is the step's own loss (fp32 on CPU, same batch, same weights)
    np.testing.assert_allclose(a["probe_loss_t"], a["step_loss"][:, :, [0, 2]], rtol=1e-5)
    # the same seed gives every lr the same init and data order: step 0 has the same loss
    np.testing.assert_allclose(a["step_loss"][:, 0, 0], a["step_loss"][:, 1, 0], rtol=1e-6)
    assert np.isnan(a["proxy_grad_change"][:, :, 0]).all() and (a["proxy_grad_change"][:, :, 1] > 0).all()
    assert a["ics_norm"].shape == a["ics_cos"].shape == (M, L, P, 6)  # stem, 2 blocks of 2 convs, fc
    assert a["ics_layers"].shape == (M, 6) and a["ics_layers"][0, -1] == "fc.weight"
    assert (a["ics_norm"][..., 0] == 0).all()  # nothing comes before the first layer

    rows = json.loads((tmp_path / "summary.json").read_text())["runs"]
    assert len(rows) == M * L == len(summary["runs"])
    assert {"final_test_acc", "best_test_acc", "steps_to_loss_0.5", "stalled", "gradpred_width"} <= set(rows[0])
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + M * L
    assert "plain_bn" in (tmp_path / "results.md").read_text()
    assert "epoch 1/1" in capsys.readouterr().out


def test_steps_to_loss_and_eta_grid():
    loss = np.array([2.0] * 30 + [0.1] * 30)
    # the trailing mean of 20 steps first drops below 0.5 once 16 of them are 0.1
    assert steps_to_loss(loss) == 30 + 15
    assert steps_to_loss(np.full(10, 2.3)) is None
    cfg = BNStudyConfig()
    np.testing.assert_allclose(eta_grid(cfg, 1e-3), np.linspace(0.05, 0.4, 8) * 1e-3)
    cfg.eta_scale = 0.1
    assert eta_grid(cfg, 1e-3).max() == pytest.approx(0.04)


@pytest.mark.parametrize(
    "override",
    [
        "optimizer=rmsprop",
        "lrs=[]",
        "eta_range=[0.4,0.05]",
        "models=[VGG_A,VGG_A]",
        "probe_method=fast",
        "normalize=imagenet",
    ],
)
def test_bad_config_is_a_user_error(tmp_path, override):
    cfg = load_config(None, [override, "epochs=1"], cls=BNStudyConfig)
    with pytest.raises(UserError):
        run_bn_study(cfg, tmp_path, dataset=synthetic(64, 16))


def test_stalled_runs_are_flagged_and_left_out_of_the_means():
    S, P, E = 200, 4, 3
    loss = np.stack([np.linspace(2.3, 0.2, S), np.full(S, np.log(10) + 0.01)])  # lr 0 learns, lr 1 stalls
    a = {
        "models": np.array(["m"]),
        "lrs": np.array([1e-3, 2e-3]),
        "step_loss": loss[None],
        "test_acc": np.array([[[0.5, 0.7], [0.1, 0.1]]]),
        "probe_loss": np.zeros((1, 2, P, E)),
        "probe_grad_diff": np.zeros((1, 2, P, E)),
        "probe_beta": np.stack([np.full(P, 2.0), np.full(P, 50.0)])[None],
    }
    a["probe_loss"][0, :, :, 1] = [[0.1] * P, [9.0] * P]  # band widths 0.1 and 9
    runs = {(0, l): {"seconds": 1.0, "probe_seconds": 0.1, "params": 10} for l in range(2)}
    rows = result_rows(a, runs, num_classes=10)
    assert [r["stalled"] for r in rows] == [False, True]
    assert rows[0]["best_test_acc"] == pytest.approx(0.7) and rows[0]["final_test_acc"] == pytest.approx(0.7)
    assert rows[0]["steps_to_loss_0.5"] is not None and rows[1]["steps_to_loss_0.5"] is None
    per = model_table(a, rows)[0]
    assert per["stalled"] == 1 and per["runs"] == 2
    assert per["loss_variation_width"] == pytest.approx(0.1) and per["beta_smooth_mean"] == pytest.approx(2.0)
    assert per["course_band_width"] == pytest.approx(np.mean(np.abs(loss[0] - loss[1])))


def test_a_bad_data_source_leaves_no_folder(tmp_path):
    cfg = load_config(None, ["n_items=512 epochs=1 lrs=[1e-3] device=cpu"], cls=BNStudyConfig)
    cfg.models = TINY
    out = tmp_path / "study"
    with pytest.raises(UserError):
        run_bn_study(cfg, out, data_source=str(tmp_path / "no-such-data"))
    assert not out.exists()


@pytest.mark.slow
def test_parallel_runs_give_the_same_arrays(tmp_path):
    # two runs side by side in spawned processes: the same trajectories as one after another
    over = ["n_items=256 epochs=1 probe_every=0 lrs=[1e-3,1e-4] n_etas=2"]
    arrays = []
    for parallel in (1, 2):
        cfg = load_config(None, over, cls=BNStudyConfig)
        cfg.models = TINY[1:]
        run_bn_study(cfg, tmp_path / f"p{parallel}", dataset=synthetic(), parallel=parallel)
        arrays.append(np.load(tmp_path / f"p{parallel}" / "arrays.npz"))
    np.testing.assert_allclose(arrays[1]["step_loss"], arrays[0]["step_loss"], rtol=1e-4)
    np.testing.assert_allclose(arrays[1]["test_acc"], arrays[0]["test_acc"], atol=1.5 / 100)
