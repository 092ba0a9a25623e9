"""One run over 2 CPU processes (torchrun, gloo) equals the single-process run on the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import make_image_folder

CONFIG = """
name: ddp
model: {name: plainnet, args: {stages: [8, 16], bn: false}}
data: {batch_size: 32, n_items: 32, device: cpu}
augment: {hflip: true, crop_padding: 2}
optim: {name: momentum, lr: 0.1, momentum: 0.9}
train: {epochs: 1, progress: false}
"""


def _run(cmd, env):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_ddp_two_processes_equal_one(tmp_path):
    data = make_image_folder(tmp_path / "imgs", n_train=16, n_test=4)
    env = {**os.environ, "CIFARLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(CONFIG)
    common = [str(cfg), "--data", str(data)]
    _run([sys.executable, "-m", "cifarlab", "train", *common, "--out", str(tmp_path / "single")], env)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29613",
            "-m",
            "cifarlab",
            "train",
            *common,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env,
    )
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    # one step was taken: its gradients sit in the momentum buffers, equal and non-zero
    bufs_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    bufs_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(bufs_a) == len(a["model"]) and all(buf.abs().sum() > 0 for buf in bufs_a)
    for x, y in zip(bufs_a, bufs_b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert '"processes": 2' in (tmp_path / "ddp" / "summary.json").read_text()
