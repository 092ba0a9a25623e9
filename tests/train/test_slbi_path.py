"""The DessiLBI solution path: recorded every path_every steps (not only per epoch), with its steps,
kept in the optimizer state that last.pt holds, and continued after a resume."""

import types

import numpy as np
import pytest
import torch
from conftest import tiny_dataset
from torch import nn

from cifarlab.config import Config, from_dict
from cifarlab.errors import UserError
from cifarlab.studies.dessilbi_study import path_epochs
from cifarlab.train.engine import train
from cifarlab.train.slbi import PATH_POINTS, SLBI, SLBIAdam


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _steps(opt, model, n):
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _state(opt, name):
    return opt.state[dict(opt.named_parameters())[name]]


@pytest.mark.parametrize("cls", [SLBI, SLBIAdam])
def test_an_explicit_step_count_records_every_n_steps_and_each_epoch_end(cls):
    model = _net()
    opt = cls(list(model.named_parameters()), lr=0.1, kappa=1.0, mu=1.0, path_every=3)
    _steps(opt, model, 7)
    opt.end_epoch(0)
    st = _state(opt, "0.weight")
    assert st["path_steps"].tolist() == [3, 6, 7]  # every 3 steps, and the epoch end
    assert st["gamma_path"].shape == (3, 4) and st["epoch_steps"].tolist() == [7]
    assert torch.allclose(st["gamma_path"][-1], st["gamma_buffer"].flatten(1).norm(dim=1))


def test_auto_keeps_about_path_points_per_epoch():
    model = _net()
    opt = SLBI(list(model.named_parameters()), lr=0.1, kappa=1.0, mu=1.0)  # path_every 0: auto
    _steps(opt, model, 100)
    opt.end_epoch(0)
    steps = _state(opt, "2.weight")["path_steps"].tolist()
    assert PATH_POINTS <= len(steps) <= PATH_POINTS + 1 and steps[-1] == 100 and steps == sorted(steps)
    _steps(opt, model, 10)  # a short epoch keeps all of its steps
    opt.end_epoch(1)
    st = _state(opt, "2.weight")
    assert st["path_steps"].tolist()[-10:] == list(range(101, 111)) and st["epoch_steps"].tolist() == [100, 110]
    x = path_epochs(types.SimpleNamespace(opt=opt), "2.weight")
    assert np.isclose(x[len(steps) - 1], 1.0) and np.isclose(x[-1], 2.0) and np.isclose(x[0], steps[0] / 100)


def test_the_path_survives_a_state_dict_round_trip_and_goes_on():
    model = _net()
    opt = SLBI(list(model.named_parameters()), lr=0.1, kappa=1.0, mu=1.0, path_every=2)
    _steps(opt, model, 4)
    opt.end_epoch(0)
    again = SLBI(list(model.named_parameters()), lr=0.1, kappa=1.0, mu=1.0, path_every=2)
    again.load_state_dict(opt.state_dict())
    _steps(again, model, 4)
    again.end_epoch(1)
    st = _state(again, "0.weight")
    assert st["path_steps"].tolist() == [2, 4, 6, 8] and st["epoch_steps"].tolist() == [4, 8]


def test_path_every_must_be_a_step_count():
    with pytest.raises(UserError, match="path_every"):
        SLBI(list(_net().named_parameters()), lr=0.1, path_every=-1)


def test_a_short_run_records_the_path_within_its_one_epoch(tmp_path):
    cfg = from_dict(
        Config,
        {
            "name": "p",
            "seed": 0,
            "model": {"name": "plainnet", "args": {"stages": [4, 8]}},
            "data": {"batch_size": 8, "device": "cpu"},
            "optim": {"name": "slbi", "lr": 0.05, "args": {"kappa": 1.0, "mu": 20.0}},
            "train": {"epochs": 1, "progress": False, "log_tensorboard": False},
        },
    )
    train(cfg, run_dir=tmp_path / "run", dataset=tiny_dataset(n_train=256, n_test=32))  # 32 steps
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    states = [s for s in ckpt["optimizer"]["state"].values() if "gamma_path" in s]
    assert states
    for s in states:
        assert len(s["gamma_path"]) >= PATH_POINTS and len(s["path_steps"]) == len(s["gamma_path"])
        assert s["path_steps"][-1] == 32 and s["epoch_steps"].tolist() == [32]
