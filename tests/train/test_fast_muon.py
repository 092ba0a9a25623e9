"""Muon: orthogonalised updates for conv filters, SGD (as torch.optim.SGD does it) for the rest."""

import pytest
import torch

from cifarlab.config import OptimConfig
from cifarlab.errors import UserError
from cifarlab.models import create_model
from cifarlab.train.muon import Muon, newton_schulz
from cifarlab.train.optim import OPTIMIZERS, build_optimizer


def singular_values(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(m.reshape(len(m), -1).double())


def test_newton_schulz_approximates_the_polar_factor():
    g = torch.randn(16, 72, generator=torch.Generator().manual_seed(0))
    g[:, :8] *= 30  # a badly conditioned matrix: a few dominant directions
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    for steps, low in [(3, 0.5), (5, 0.65)]:
        o = newton_schulz(g, steps).float()
        s = singular_values(o)
        assert s.min() > low and s.max() < 1.25, (steps, s)
        cos = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
        assert cos > 0.95
    assert newton_schulz(g.T, 5).shape == (72, 16)  # tall matrices go through the transpose


def muon_step(p0, g, **kw):
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=0.1, momentum=0.0, **kw)
    p.grad = g.clone()
    opt.step()
    return p.detach()


def test_muon_update_on_a_conv_weight_is_orthogonal():
    gen = torch.Generator().manual_seed(1)
    p0, g = torch.randn(8, 4, 3, 3, generator=gen), torch.randn(8, 4, 3, 3, generator=gen)
    exact = (p0 - muon_step(p0, g, ns_steps=0, normalize=False)) / 0.1
    assert torch.allclose(singular_values(exact), torch.ones(8, dtype=torch.float64), atol=1e-4)
    ns = (p0 - muon_step(p0, g, ns_steps=5, normalize=False)) / 0.1
    s = singular_values(ns)
    assert s.min() > 0.65 and s.max() < 1.25
    # normalize: the weight is first scaled to norm sqrt(out_channels), then stepped
    after = muon_step(p0, g, ns_steps=0, normalize=True)
    assert torch.allclose(after, p0 * (8**0.5 / p0.norm()) - 0.1 * exact, atol=1e-5)


def test_muon_momentum_is_nesterov_on_the_gradient():
    p = torch.nn.Parameter(torch.randn(6, 10))
    opt = Muon([p], lr=0.1, momentum=0.5, nesterov=True, ns_steps=0, normalize=False)
    g1, g2 = torch.randn(6, 10), torch.randn(6, 10)
    p.grad = g1.clone()
    opt.step()
    before = p.detach().clone()
    p.grad = g2.clone()
    opt.step()
    buf = 0.5 * g1 + g2
    u, _, vh = torch.linalg.svd(g2 + 0.5 * buf, full_matrices=False)
    assert torch.allclose(p.detach(), before - 0.1 * (u @ vh), atol=1e-5)


def muon_cfg(**kw):
    base = dict(
        name="muon",
        lr=0.2,
        momentum=0.85,
        weight_decay=0.01,
        norm_lr_scale=0.25,
        bias_lr_scale=0.5,
        head_lr_scale=2.0,
        args={"muon_momentum": 0.6},
    )
    return OptimConfig(**{**base, **kw})


def test_muon_builder_splits_filters_from_the_rest():
    assert "muon" in OPTIMIZERS
    model = create_model("fastnet_small", widths=[8, 8, 8])
    opt = build_optimizer(model, muon_cfg())
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    convs = [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n != "whiten"]
    assert all(groups[id(w)]["muon"] and groups[id(w)]["lr"] == 0.2 for w in convs)
    assert id(model.whiten.weight) not in groups  # frozen
    assert not groups[id(model.whiten.bias)]["muon"]
    assert groups[id(model.whiten.bias)]["lr"] == pytest.approx(0.1)  # bias_lr_scale 0.5
    bn = model.block1.norm1.bias
    assert groups[id(bn)]["lr"] == pytest.approx(0.05) and groups[id(bn)]["weight_decay"] == pytest.approx(0.04)
    head = groups[id(model.head.weight)]
    assert head["lr"] == pytest.approx(0.4) and head["weight_decay"] == pytest.approx(0.005) and not head["muon"]
    assert head["momentum"] == 0.85 and groups[id(convs[0])]["momentum"] == 0.6
    assert groups[id(convs[0])]["weight_decay"] == 0.0  # normalized weights need no decay
    with pytest.raises(UserError, match="optimizer 'muon' takes optim.args"):
        build_optimizer(model, muon_cfg(args={"beta": 1}))


def test_non_filter_parameters_follow_torch_sgd():
    torch.manual_seed(0)
    model = create_model("fastnet_small", widths=[8, 8, 8])
    opt = build_optimizer(model, muon_cfg())
    sgd_groups = [g for g in opt.param_groups if not g["muon"]]
    twins = [[torch.nn.Parameter(p.detach().clone()) for p in g["params"]] for g in sgd_groups]
    ref = torch.optim.SGD(
        [{"params": t, "lr": g["lr"], "weight_decay": g["weight_decay"]} for t, g in zip(twins, sgd_groups)],
        lr=1.0,
        momentum=0.85,
        nesterov=True,
    )
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        for g, t in zip(sgd_groups, twins):
            for p, q in zip(g["params"], t):
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = p.grad.clone()
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        ref.step()
    for g, t in zip(sgd_groups, twins):
        for p, q in zip(g["params"], t):
            assert torch.allclose(p, q, atol=1e-6)


def test_lr_scales_make_groups_for_sgd_too():
    model = create_model("fastnet_small", widths=[8, 8, 8])
    cfg = OptimConfig(name="nesterov", lr=0.01, momentum=0.85, weight_decay=1.5, norm_lr_scale=64.0)
    opt = build_optimizer(model, cfg)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    bn = groups[id(model.block2.norm2.bias)]
    assert bn["lr"] == pytest.approx(0.64) and bn["weight_decay"] == pytest.approx(1.5 / 64)
    conv = groups[id(model.block2.conv2.weight)]
    assert conv["lr"] == 0.01 and conv["weight_decay"] == 1.5
    assert groups[id(model.whiten.bias)]["lr"] == 0.01  # bias_lr_scale 1
    plain = build_optimizer(model, OptimConfig(name="nesterov", lr=0.01))
    assert len(plain.param_groups) == 1  # no scales: the groups are what they always were
