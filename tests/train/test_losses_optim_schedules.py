import math

import pytest
import torch
import torch.nn.functional as F

from cifarlab.config import OptimConfig, ScheduleConfig
from cifarlab.errors import UserError
from cifarlab.train.losses import LOSSES, l1_penalty, make_loss
from cifarlab.train.optim import OPTIMIZERS, build_optimizer
from cifarlab.train.schedules import SCHEDULES, build_scheduler


def test_losses():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = F.cross_entropy(logits, y)
    for name in LOSSES:
        assert torch.isfinite(make_loss(name)(logits, y))
    assert torch.allclose(make_loss("nll")(logits, y), ce)
    assert torch.allclose(make_loss("kl")(logits, y), ce, atol=1e-5)  # KL to one-hot = CE
    assert torch.allclose(make_loss("mse")(logits, y), F.mse_loss(logits, F.one_hot(y, 10).float()))
    assert make_loss("ce", 0.1)(logits, y) != ce
    with pytest.raises(UserError, match="unknown loss"):
        make_loss("hinge")


def test_l1_penalty_counts_weights_only():
    m = torch.nn.Linear(3, 2)
    assert torch.allclose(l1_penalty(m), m.weight.abs().sum())


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("slbi")])
def test_every_optimizer_steps(name):
    m = _model()
    opt = build_optimizer(m, OptimConfig(name=name, lr=0.01, weight_decay=1e-4))
    before = [p.clone() for p in m.parameters()]
    m(torch.randn(8, 4)).sum().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_optimizer_errors_and_groups():
    with pytest.raises(UserError, match="unknown optimizer 'adamx'"):
        build_optimizer(_model(), OptimConfig(name="adamx"))
    with pytest.raises(UserError, match="takes no optim.args"):
        build_optimizer(_model(), OptimConfig(name="adam", args={"kappa": 1}))
    opt = build_optimizer(_model(), OptimConfig(name="momentum", weight_decay=0.1, wd_skip_1d=True))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.ndim < 2 for p in opt.param_groups[1]["params"])
    assert build_optimizer(_model(), OptimConfig(name="nesterov")).param_groups[0]["nesterov"]


def _lrs(cfg, epochs=4, steps=10, lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = build_scheduler(opt, cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    for name in SCHEDULES:
        assert len(_lrs(ScheduleConfig(name=name))) == 40
    step = _lrs(ScheduleConfig(name="step", step_size=1, gamma=0.5))
    assert step[9] == 1.0 and step[10] == 0.5 and step[20] == 0.25
    multi = _lrs(ScheduleConfig(name="multistep", milestones=[2, 3], gamma=0.1))
    assert multi[19] == 1.0 and math.isclose(multi[20], 0.1) and math.isclose(multi[30], 0.01)
    cos = _lrs(ScheduleConfig(name="cosine"))
    assert cos[0] == 1.0 and cos[-1] < 0.01 and all(a >= b for a, b in zip(cos, cos[1:]))
    warm = _lrs(ScheduleConfig(name="cosine", warmup_epochs=1))
    assert warm[0] == pytest.approx(0.1) and warm[9] < 1.0 and warm[10] == pytest.approx(1.0) and warm[-1] < 0.01
    restarts = _lrs(ScheduleConfig(name="cosine_restarts", t0=1, t_mult=1))
    assert restarts[10] == 1.0 and restarts[9] < 0.1  # restarts every epoch
    one = _lrs(ScheduleConfig(name="onecycle", pct_start=0.25))
    assert max(one) == pytest.approx(1.0) and one[0] < 0.1 and one[-1] < 1e-3
    with pytest.raises(UserError, match="unknown schedule"):
        _lrs(ScheduleConfig(name="poly"))
