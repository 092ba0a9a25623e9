"""Pruning by the DessiLBI order: thresholds, ties, biases, recover, w_star, state-dict input."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.errors import UserError
from cifarlab.sparsity.prune import format_report, prune, recover, selection, use_w_star
from cifarlab.train.slbi import SLBI


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 2)
        self.fc = nn.Linear(4, 3)


def setup():
    """A model whose SLBI state is set by hand: conv filters 0, 2, 4 selected at epochs 0, 1, 1;
    FC weights (0,0) and (1,2) selected at epoch 2, all others never (score -2000)."""
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        model.conv.weight.copy_(torch.arange(1.0, 6.0)[:, None, None, None] * torch.ones(5, 1, 2, 2))
        # Small never-selected weights: in float32 |w| - 2000 rounds to exactly -2000 for all of
        # them, the massive tie the official LeNet shows in fc1.
        model.fc.weight.copy_(torch.full((3, 4), 1e-5))
        model.fc.weight[0, 0], model.fc.weight[1, 2] = 0.1, 0.7
    opt = SLBI(list(model.named_parameters()), lr=0.1)
    st = opt.state
    gamma = torch.zeros(5, 1, 2, 2)
    gamma[0] = 1.0
    st[model.conv.weight]["gamma_buffer"] = gamma
    opt.end_epoch(0)
    gamma[2], gamma[4] = 1.0, 1.0
    opt.end_epoch(1)
    g = torch.zeros(3, 4)
    g[0, 0] = g[1, 2] = 0.5
    st[model.fc.weight]["gamma_buffer"] = g
    opt.end_epoch(2)
    return model, opt


def test_prune_conv_filters_below_threshold_and_biases():
    model, opt = setup()
    order = opt.state[model.conv.weight]["prune_order"]  # norms 2,4,6,8,10 minus epochs 0,2000,1,2000,1
    assert torch.allclose(order, torch.tensor([2.0, 4 - 2000, 5.0, 8 - 2000, 9.0]))
    bias = model.conv.bias.detach().clone()
    report = prune(opt, model, 50, "conv.weight", prune_bias=True)
    threshold = float(np.percentile(order.numpy(), 50))
    r = report["layers"]["conv.weight"]
    assert r["threshold"] == pytest.approx(threshold)
    assert (r["kind"], r["removed"], r["total"], r["fraction"]) == ("filters", 2, 5, 0.4)
    assert r["weights_removed"] == 8
    w = model.conv.weight.detach()
    kept = [0, 2, 4]  # the two never-selected filters score lowest; the median itself stays
    assert torch.count_nonzero(w[[1, 3]]) == 0 and all(torch.count_nonzero(w[i]) == 4 for i in kept)
    assert torch.equal(model.conv.bias[[1, 3]].detach(), torch.zeros(2))
    assert torch.equal(model.conv.bias[kept].detach(), bias[kept])
    assert model.fc.weight.count_nonzero() == 12  # only the named layer is touched


def test_prune_fc_keeps_weights_above_threshold_and_ties_remove_more():
    model, opt = setup()
    report = prune(opt, model, 50, ["fc.weight"])
    r = report["layers"]["fc.weight"]
    # 10 of 12 weights score exactly -2000 (never selected): the 50th percentile is -2000 and
    # only scores above it stay, so all 10 go although 50% was asked.
    assert (r["kind"], r["removed"], r["total"]) == ("weights", 10, 12)
    assert r["fraction"] == pytest.approx(10 / 12)
    w = model.fc.weight.detach()
    assert w[0, 0] == pytest.approx(0.1) and w[1, 2] == pytest.approx(0.7) and w.count_nonzero() == 2
    assert "| fc.weight | weights | 10 | 12 | 83.3% |" in format_report(report)


def test_recover_restores_exactly_even_after_two_prunes():
    model, opt = setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prune(opt, model, 50, ["conv.weight"], prune_bias=True)
    prune(opt, model, 90, ["conv.weight", "fc.weight"])
    assert sorted(recover(opt, model)) == ["conv.bias", "conv.weight", "fc.weight"]
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    assert recover(opt, model) == []  # nothing left to restore


def test_use_w_star_keeps_only_selected_weights():
    model, opt = setup()
    report = use_w_star(opt, model)
    assert report["layers"]["conv.weight"] == {"kind": "filters", "removed": 2, "total": 5, "fraction": 0.4}
    assert report["layers"]["fc.weight"]["removed"] == 10
    assert model.conv.weight[[1, 3]].count_nonzero() == 0 and model.conv.weight[[0, 2, 4]].count_nonzero() == 12
    assert selection(opt) == {
        "conv.weight": {"kind": "filters", "selected": 3, "total": 5, "fraction": 0.6},
        "fc.weight": {"kind": "weights", "selected": 2, "total": 12, "fraction": 2 / 12},
    }
    recover(opt, model)
    assert model.conv.weight.count_nonzero() == 20


def test_prune_from_a_state_dict_matches_the_optimizer():
    model, opt = setup()
    sd = copy.deepcopy(opt.state_dict())  # as read from a checkpoint (state_dict() shares the state dicts)
    twin = Tiny()
    twin.load_state_dict(model.state_dict())
    a = prune(opt, model, 80, ["conv.weight", "fc.weight"], prune_bias=True)
    b = prune(sd, twin, 80, ["conv.weight", "fc.weight"], prune_bias=True)
    assert a == b
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    recover(sd, twin)
    recover(opt, model)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_prune_errors_name_the_problem():
    model, opt = setup()
    with pytest.raises(UserError, match="conv.wieght"):
        prune(opt, model, 80, ["conv.wieght"])
    with pytest.raises(UserError, match="no prune_order for conv.bias"):
        prune(opt, model, 80, ["conv.bias"])
    with pytest.raises(UserError, match="percent"):
        prune(opt, model, 120, ["conv.weight"])
    fresh = SLBI(list(model.named_parameters()), lr=0.1)
    with pytest.raises(UserError, match="end_epoch"):
        prune(fresh, model, 80, ["conv.weight"])
    with pytest.raises(UserError, match="state dict"):
        prune({"model": {}}, model, 80, ["conv.weight"])
