"""airbench's lookahead: slow <- d slow + (1 - d) fast, fast <- slow, every k steps, d = decay (t/T)^power."""

import pytest
import torch
from torch import nn

from cifarlab.config import TrainConfig
from cifarlab.train.fast import RecipeSteps
from cifarlab.train.lookahead import Lookahead, lookahead_decay


def test_update_pulls_the_model_to_the_slow_weights():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    la = Lookahead(model)
    slow = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(7)
    fast = {k: v.clone() for k, v in model.state_dict().items()}
    la.update(0.25)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.25 * slow[k] + 0.75 * fast[k]), k
        else:
            assert torch.equal(v, fast[k])  # integer buffers are left alone
    after = {k: v.clone() for k, v in model.state_dict().items()}
    la.update(1.0)  # decay 1: back to the slow weights, which are now `after`
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())


def test_decay_schedule_is_airbenchs():
    total = 97
    alpha = 0.95**5 * (torch.arange(total + 1) / total) ** 3  # airbench94's alpha_schedule
    for t in (0, 5, 50, 97):
        assert lookahead_decay(t, total, 0.95**5, 3.0) == pytest.approx(alpha[t].item(), rel=1e-5)


def test_hooks_update_every_k_steps_and_end_on_the_slow_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    cfg = TrainConfig(lookahead_every=2, lookahead_decay=0.5, lookahead_power=1.0)
    hooks = RecipeSteps(model, cfg, total_steps=4, whiten_layer=None)
    slow, w = 0.0, 0.0
    for step in range(1, 5):
        w += 1.0  # what an optimizer step would do
        with torch.no_grad():
            model.weight.fill_(w)
        hooks.after_step(step)
        if step % 2 == 0:
            d = 0.5 * step / 4
            slow = d * slow + (1 - d) * w
            w = slow
        assert model.weight.item() == pytest.approx(w), step
    assert model.weight.item() == pytest.approx(2.5)  # step 2: 0.75 * 2 = 1.5; step 4: 0.5 * 1.5 + 0.5 * 3.5


def test_lookahead_off_is_a_no_op():
    model = nn.Linear(2, 2)
    hooks = RecipeSteps(model, TrainConfig(), total_steps=3, whiten_layer=None)
    before = model.weight.detach().clone()
    for step in (1, 2, 3):
        hooks.after_step(step)
    assert hooks.lookahead is None and torch.equal(model.weight, before)
