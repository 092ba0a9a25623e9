import copy

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.analysis.bn_probe import (
    grad_change_proxy,
    ics_measure,
    model_grads,
    probe_step,
    trainable_params,
    weight_layers,
)


class Quadratic(nn.Module):
    """A module whose output is the 'loss' 0.5 w'Aw with a fixed PSD A (input ignored)."""

    def __init__(self, d: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.register_buffer("A", m @ m.T + 0.1 * torch.eye(d, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))

    def forward(self, x):
        return 0.5 * self.w @ self.A @ self.w


def identity_loss(out, y):
    return out


def bn_net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(6 * 4 * 4, 10),
    )


def batch(n: int = 8):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


ce = nn.functional.cross_entropy


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_quadratic_closed_form(method):
    m = Quadratic()
    A, w = m.A, m.w.detach()
    g = A @ w
    etas = [0.01, 0.05, 0.2]
    r = probe_step(m, identity_loss, torch.zeros(1), torch.zeros(1), etas, method=method)
    assert r["method"] == method
    for k, eta in enumerate(etas):
        w1 = w - eta * g
        assert r["loss"][k] == pytest.approx(float(0.5 * w1 @ A @ w1), rel=1e-12)
        # grad at w - eta g is A w - eta A g: the change is exactly eta ||A g||
        assert r["grad_diff"][k] == pytest.approx(eta * float((A @ g).norm()), rel=1e-10)
    assert r["beta_smooth"] == pytest.approx(float((A @ g).norm() / g.norm()), rel=1e-10)
    assert np.allclose(r["beta"], r["beta_smooth"], rtol=1e-10)
    assert r["loss_t"] == pytest.approx(float(0.5 * w @ A @ w), rel=1e-12)
    assert r["loss_min"] == r["loss"].min() and r["gradpred_max"] == r["grad_diff"].max()
    # a gradient passed in is used as g_t (here 2 A w: every gradient difference changes)
    r2 = probe_step(m, identity_loss, torch.zeros(1), torch.zeros(1), etas, grad={"w": 2 * g}, method=method)
    want = (A @ (w - etas[0] * 2 * g)) - 2 * g
    assert r2["grad_diff"][0] == pytest.approx(float(want.norm()), rel=1e-10)


def snapshot(model, opt):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "flags": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "opt": copy.deepcopy(opt.state_dict()),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def assert_same(a, b):
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:  # weights, running stats, num_batches_tracked
        assert torch.equal(a["state"][k], b["state"][k]), k
    for n in a["grads"]:
        ga, gb = a["grads"][n], b["grads"][n]
        assert (ga is None) == (gb is None) and (ga is None or torch.equal(ga, gb)), n
    assert a["flags"] == b["flags"] and a["training"] == b["training"]
    for i, sa in a["opt"]["state"].items():
        for k, v in sa.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["opt"]["state"][i][k])), (i, k)
    assert a["opt"]["param_groups"] == b["opt"]["param_groups"]
    assert torch.equal(a["rng"], b["rng"])
    if a["cuda_rng"] is not None:
        assert all(torch.equal(x, y) for x, y in zip(a["cuda_rng"], b["cuda_rng"]))


def test_probe_and_ics_leave_model_optimizer_and_rng_untouched():
    model = bn_net(dropout=0.3).train()
    model[4].bias.requires_grad_(False)  # a frozen parameter keeps its flag and gets no update
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = batch()
    for _ in range(2):  # Adam state and moved running stats
        opt.zero_grad()
        ce(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=False)
    ce(model(x), y).backward()  # .grad fields populated
    before = snapshot(model, opt)
    expected_next = torch.rand(3)
    torch.set_rng_state(before["rng"])

    probe_step(model, ce, x, y, [1e-3, 1e-2], method="vmap")
    probe_step(model, ce, x, y, [1e-3, 1e-2], method="loop")
    probe_step(model, ce, x, y, [1e-3], grad=model_grads(model))
    w0 = {n: v.clone() for n, v in trainable_params(model).items()}
    w1 = {n: v - 0.01 for n, v in w0.items()}
    ics_measure(model, ce, x, y, w0, w1)

    assert_same(before, snapshot(model, opt))
    assert torch.equal(torch.rand(3), expected_next)
    assert int(model[1].num_batches_tracked) == 3  # the three training forwards, no probe forward


def test_vmap_and_loop_agree_and_match_a_real_model_copy():
    model = bn_net().train()
    x, y = batch()
    etas = [1e-3, 1e-2, 1e-1]
    rv = probe_step(model, ce, x, y, etas, method="vmap")
    rl = probe_step(model, ce, x, y, etas, method="loop")
    assert rv["method"] == "vmap" and rl["method"] == "loop"
    for k in ("loss", "grad_diff", "beta"):
        np.testing.assert_allclose(rv[k], rl[k], rtol=1e-5, atol=1e-7)
    # the independent reference: a deep copy of the model moved by -eta g, in train mode
    ref = copy.deepcopy(model)
    ce(ref(x), y).backward()
    g = {n: p.grad.clone() for n, p in ref.named_parameters()}
    assert rv["grad_norm"] == pytest.approx(float(torch.sqrt(sum(v.pow(2).sum() for v in g.values()))), rel=1e-5)
    for k, eta in enumerate(etas):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in moved.named_parameters():
                p -= eta * g[n]
        loss = ce(moved(x), y)
        loss.backward()
        diff = torch.sqrt(sum((p.grad - g[n]).pow(2).sum() for n, p in moved.named_parameters()))
        assert rv["loss"][k] == pytest.approx(float(loss.detach()), rel=1e-5)
        assert rv["grad_diff"][k] == pytest.approx(float(diff), rel=1e-4)
    # a gradient passed in (from a training backward) gives the same probe
    rg = probe_step(ref, ce, x, y, etas, grad=model_grads(ref))
    np.testing.assert_allclose(rg["grad_diff"], rv["grad_diff"], rtol=1e-4)


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_dropout_uses_one_mask_for_every_eta(method):
    # with a shared mask the gradient change vanishes as eta -> 0; with fresh masks it would not
    model = bn_net(dropout=0.5).double().train()
    x, y = batch()
    r = probe_step(model, ce, x.double(), y, [1e-9, 1e-8], method=method)
    assert r["grad_diff"].max() < 1e-5 * r["grad_norm"]


def test_ics_matches_reference_and_first_layer_is_unshifted():
    model = bn_net().train()
    x, y = batch()
    w0 = {n: v.clone() for n, v in trainable_params(model).items()}
    torch.manual_seed(3)
    w1 = {n: v + 0.05 * torch.randn_like(v) for n, v in w0.items()}
    r = ics_measure(model, ce, x, y, w0, w1)
    layers = weight_layers(model)
    assert r["layers"] == layers == ["0.weight", "4.weight", "9.weight"]
    assert r["norm"][0] == 0 and r["cos"][0] == pytest.approx(1.0)
    names = list(w0)

    def grad_at(ws, layer):
        m = copy.deepcopy(model)
        m.load_state_dict({**m.state_dict(), **ws})
        ce(m(x), y).backward()
        return dict(m.named_parameters())[layer].grad.flatten()

    for i, layer in enumerate(layers):
        mixed = {n: (w1[n] if names.index(n) < names.index(layer) else w0[n]) for n in names}
        G, Gp = grad_at(w0, layer), grad_at(mixed, layer)
        assert r["norm"][i] == pytest.approx(float((G - Gp).norm()), rel=1e-4, abs=1e-7)
        assert r["cos"][i] == pytest.approx(float(nn.functional.cosine_similarity(G, Gp, dim=0)), rel=1e-5)
    assert r["norm"][2] > 0


def test_grad_change_proxy():
    g0, g1 = {"a": torch.tensor([1.0, 2.0])}, {"a": torch.tensor([4.0, 6.0])}
    w0, w1 = {"a": torch.tensor([0.0, 0.0])}, {"a": torch.tensor([0.0, 0.5])}
    r = grad_change_proxy(g0, g1, w0, w1)
    assert float(r["grad_change"]) == pytest.approx(5.0)
    assert float(r["grad_change_ratio"]) == pytest.approx(10.0)
