"""bn-study on a fixed seed gives the arrays it gave before it ran through the engine (issue 23).

data/bn_study_tiny_arrays.npz was written by the study's own training loop (before the study became
engine runs with probe hooks) with the settings in data/bn_study_tiny_config.yaml on the real CIFAR-10
JPEGs: two tiny nets that differ only in BatchNorm, Adam at two lrs, 2 epochs of 3 steps (the last batch
short), probes, proxies and ICS every 2 steps (so across the epoch boundary). Any change of init, data
order, loss, optimizer or of where a probe sits in the step moves the losses far beyond the tolerances.

Tolerances: the run is single-threaded (conftest), so on this machine the arrays come out the same to
the bit; the tolerances leave room for other CPUs' float32 kernels, measured as 1 vs 2 threads here:
losses and accuracies moved by < 3e-6 relative (rtol 1e-4); gradient norms, the proxies and the ICS cosine
by < 4e-3 (rtol 1e-2), as Adam turns float32 rounding in near-zero gradients into lr-sized steps; the
gradient differences ||grad L(w - eta g) - g|| (grad_diff, beta, ICS norm) are small differences of
large gradients and moved by < 3e-2 (rtol 0.1).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file, tiny_dataset

from cifarlab.config import load_config
from cifarlab.studies.bn_study import BNProbeHooks, BNStudyConfig, run_bn_study

DATA = Path(__file__).parent / "data"
TIGHT = ("step_loss", "train_acc", "test_acc", "test_loss", "probe_loss", "probe_loss_t", "lrs", "etas")
MEDIUM = ("probe_grad_norm", "proxy_grad_change", "proxy_grad_change_ratio", "ics_cos")
LOOSE = ("probe_grad_diff", "probe_beta", "ics_norm")


@pytest.mark.slow  # ~20 s of CPU: 12 probes with the ICS measure, the figures
def test_tiny_study_gives_the_recorded_arrays(tmp_path):
    src = shared_file("cifar10-jpeg.tar.gz")
    cfg = load_config(str(DATA / "bn_study_tiny_config.yaml"), ["progress=false"], cls=BNStudyConfig)
    run_bn_study(cfg, tmp_path / "study", data_source=str(src))
    got = np.load(tmp_path / "study" / "arrays.npz")
    want = np.load(DATA / "bn_study_tiny_arrays.npz")

    assert sorted(got.files) == sorted(want.files)
    for key in ("models", "probe_steps", "ics_layers"):
        assert got[key].tolist() == want[key].tolist(), key
    for keys, rtol in ((TIGHT, 1e-4), (MEDIUM, 1e-2), (LOOSE, 0.1)):
        for key in keys:
            assert got[key].shape == want[key].shape, key
            np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-7, err_msg=key)
    assert sorted(TIGHT + MEDIUM + LOOSE + ("models", "probe_steps", "ics_layers")) == sorted(want.files)
    # the fixture is not degenerate: the losses move, BN changes them, probes and proxies are finite
    assert np.ptp(want["step_loss"][1, 0]) > 0.05
    assert not np.allclose(want["step_loss"][0], want["step_loss"][1], rtol=1e-2)
    assert np.isfinite(want["probe_beta"]).all() and np.isfinite(want["proxy_grad_change"][..., 1:]).all()

    # each (model, lr) is an engine run in its own folder, the probes' epoch means in its metrics
    run = tmp_path / "study" / "runs" / "plain_bn_lr0.001"
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and (run / "last.pt").is_file() and (run / "tb").is_dir()
    beta = got["probe_beta"][1, 0]  # probes at steps 0 and 2 (epoch 1) and 4 (epoch 2)
    assert [r["probe_beta_smooth"] for r in lines] == pytest.approx([beta[:2].mean(), beta[2]], rel=1e-12)
    assert lines[1]["test_acc"] == got["test_acc"][1, 0, 1]


def test_an_interrupted_study_resumes_its_runs_to_the_same_arrays(tmp_path, monkeypatch):
    # 3 steps per epoch and a probe every 3 steps: the proxy at step 3 uses the gradient of step 2, kept
    # across the epoch boundary, so it has to come back from last.pt with the rest of the hook's record
    over = ["n_items=320 epochs=2 probe_every=3 lrs=[1e-3] n_etas=2 progress=false"]
    cfg = load_config(None, over, cls=BNStudyConfig)
    cfg.models = [{"name": "plainnet", "stages": [8, 16], "bn": True, "label": "plain_bn"}]
    run_bn_study(cfg, tmp_path / "whole", dataset=tiny_dataset(320, 64))

    calls = []

    def stop_in_epoch_2(self, trainer, x, y):
        calls.append(trainer.step)
        if trainer.epoch == 1:
            raise KeyboardInterrupt  # as a Ctrl-C in the second epoch, after last.pt of the first
        return before_step(self, trainer, x, y)

    before_step = BNProbeHooks.before_step
    with monkeypatch.context() as m:
        m.setattr(BNProbeHooks, "before_step", stop_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run_bn_study(cfg, tmp_path / "cut", dataset=tiny_dataset(320, 64))
    run_dir = tmp_path / "cut" / "runs" / "plain_bn_lr0.001"
    assert calls == [0, 1, 2, 3] and (run_dir / "last.pt").is_file() and not (run_dir / "summary.json").exists()

    run_bn_study(cfg, tmp_path / "cut", dataset=tiny_dataset(320, 64))  # the same command again: resumes
    whole, cut = np.load(tmp_path / "whole" / "arrays.npz"), np.load(tmp_path / "cut" / "arrays.npz")
    assert cut["step_loss"].shape == (1, 1, 6) and cut["proxy_grad_change"].shape == (1, 1, 2)
    assert np.isfinite(cut["proxy_grad_change"][0, 0, 1])
    for key in whole.files:
        if whole[key].dtype.kind == "f":
            np.testing.assert_allclose(cut[key], whole[key], rtol=1e-6, atol=1e-9, err_msg=key)
        else:
            assert cut[key].tolist() == whole[key].tolist(), key
    # finished runs are read back from their folders, not trained again
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    run_bn_study(cfg, tmp_path / "cut", dataset=tiny_dataset(320, 64))
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
