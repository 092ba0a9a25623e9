"""The studies from Python with your own modules beside zoo names; arrays back."""

import numpy as np
import pytest
import torch
from conftest import shared_file, tiny_dataset
from torch import nn

import cifarlab


def small_cnn(bn: bool) -> nn.Module:
    norm = [nn.BatchNorm2d(8)] if bn else []
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 4))  # fmt: skip


def test_bn_study_with_your_modules(tmp_path):
    torch.manual_seed(0)
    mods = [("plain", small_cnn(False)), ("bn", small_cnn(True))]
    settings = dict(epochs=1, n_items=128, lrs=[1e-3, 1e-2], probe_every=4, n_etas=3, progress=False, device="cpu")
    res = cifarlab.bn_study(models=mods, data=tiny_dataset(), out=tmp_path / "bn", **settings)
    assert [(r["model"], r["lr"]) for r in res["runs"]] == [
        ("plain", 1e-3),
        ("plain", 1e-2),
        ("bn", 1e-3),
        ("bn", 1e-2),
    ]
    assert res["config"]["models"][0] == {"name": "custom:plain", "label": "plain"}
    loss = res["arrays"]["step_loss"]
    assert loss.shape[:2] == (2, 2) and np.isfinite(loss).all()  # [model, lr, step]
    assert (tmp_path / "bn" / "arrays.npz").is_file()
    with pytest.raises(cifarlab.UserError, match="two modules named 'Sequential'"):
        cifarlab.bn_study(models=[small_cnn(False), small_cnn(True)], data=tiny_dataset(), **settings)


def test_dessilbi_study_tiny(tmp_path):
    mnist = shared_file("mnist")
    res = cifarlab.dessilbi_study(
        data=str(mnist), out=tmp_path / "d", epochs=1, n_items=512, n_test=500, vgg=False, seeds=[1], percents=[50]
    )
    assert {r["optimizer"] for r in res["runs"]} >= {"slbi"} and (tmp_path / "d" / "results.md").is_file()
