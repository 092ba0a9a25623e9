"""train(cfg, hooks=[...]): the step hooks' calls, their order and what they see (train/hooks.py)."""

import json

import pytest
import torch
from conftest import tiny_dataset

from cifarlab.config import Config, from_dict
from cifarlab.train.engine import train
from cifarlab.train.hooks import StepHook


class Recorder(StepHook):
    def __init__(self):
        self.calls, self.losses = [], []

    def before_step(self, trainer, x, y):
        self.weights = [p.detach().clone() for p in trainer.model.parameters()]
        self.calls.append(("before", trainer.step, len(x)))

    def after_backward(self, trainer):
        assert all(p.grad is not None for p in trainer.model.parameters())
        unchanged = all(torch.equal(w, p) for w, p in zip(self.weights, trainer.model.parameters()))
        self.calls.append(("backward", trainer.step, unchanged))

    def after_step(self, trainer, x, y, loss):
        moved = not all(torch.equal(w, p) for w, p in zip(self.weights, trainer.model.parameters()))
        self.calls.append(("after", trainer.step, moved))
        self.losses.append(float(loss))

    def end_epoch(self, trainer, record):
        self.calls.append(("epoch", record["epoch"], "test_acc" in record))
        record["hook_steps"] = len(self.losses)  # logged with the engine's own metrics


def _cfg(tmp_path, **train_opts):
    return from_dict(
        Config,
        {
            "name": "hooked",
            "out": str(tmp_path),
            "model": {"name": "plainnet", "args": {"stages": [8, 16]}},
            "data": {"batch_size": 100, "device": "cpu"},  # 3 steps per epoch, the last of 56 images
            "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 2, "progress": False, "log_tensorboard": False, **train_opts},
        },
    )


def test_hooks_see_every_step_in_order_and_log_with_the_epoch(tmp_path):
    rec = Recorder()
    summary = train(_cfg(tmp_path), tmp_path / "run", dataset=tiny_dataset(256, 32), hooks=[rec])
    want = []
    for epoch in range(2):
        for i, n in enumerate((100, 100, 56)):
            t = 3 * epoch + i
            want += [("before", t, n), ("backward", t, True), ("after", t + 1, True)]
        want.append(("epoch", epoch + 1, True))
    assert rec.calls == want
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["hook_steps"] for r in lines] == [3, 6]
    # the loss a hook gets is the step's: its mean over the epoch's images is the logged train_loss
    for e, r in enumerate(lines):
        mean = sum(loss * n for loss, n in zip(rec.losses[3 * e : 3 * e + 3], (100, 100, 56))) / 256
        assert r["train_loss"] == pytest.approx(mean, rel=1e-5)
    assert summary["step"] == "eager"


def test_hooks_keep_the_step_eager_and_a_wrong_hook_is_refused(tmp_path, capsys):
    rec = Recorder()
    summary = train(_cfg(tmp_path, graph="on"), tmp_path / "run", dataset=tiny_dataset(256, 32), hooks=[rec])
    assert "step hooks" in capsys.readouterr().out and summary["step"] == "eager"
    assert len([c for c in rec.calls if c[0] == "after"]) == 6
    with pytest.raises(TypeError):
        train(_cfg(tmp_path), tmp_path / "other", dataset=tiny_dataset(256, 32), hooks=[lambda t: None])
