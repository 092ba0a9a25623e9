"""SLBI and SLBI-Adam against the SPEC equations, on hand-made tensors."""

import io

import pytest
import torch
from torch import nn

from cifarlab.config import OptimConfig
from cifarlab.errors import UserError
from cifarlab.train.slbi import SLBI, SLBIAdam, build_slbi, build_slbi_adam


@pytest.fixture(autouse=True)
def _float64():
    # Exact comparisons: in float64 both sides agree to ~1e-16 whatever the order of operations.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------- the SPEC, written out plainly


def shrink(z, kind, lam=1.0):
    if kind == "fc":
        return torch.sign(z) * torch.clamp(z.abs() - lam, min=0)
    flat = z.reshape(z.shape[0], -1)
    norms = flat.norm(dim=1)
    scale = torch.clamp(1 - lam / norms, min=0)
    return (flat * scale[:, None]).reshape(z.shape)


def spec_slbi_step(w, g, buf, z, gamma, *, lr, kappa, mu, momentum, wd, tracked, kind="fc", name="w"):
    """SPEC section 4, steps 1-4, one parameter at a time. Returns (w, buf, z, gamma)."""
    d = g + (wd * w if wd and w.ndim > 1 and "bn" not in name else 0)
    buf = d.clone() if buf is None or momentum == 0 else momentum * buf + d
    d = buf
    if not tracked:
        return w - lr * kappa * d, buf, z, gamma
    w_new = w - lr * kappa * (d + (w - gamma) / mu)
    z_new = z + (lr / mu) * (w - gamma)
    return w_new, buf, z_new, kappa * shrink(z_new, kind)


def make_named():
    torch.manual_seed(0)
    return [
        ("conv.weight", nn.Parameter(torch.randn(3, 2, 2, 2))),
        ("conv.bias", nn.Parameter(torch.randn(3))),
        ("fc.weight", nn.Parameter(torch.randn(4, 5))),
        ("fc.bias", nn.Parameter(torch.randn(4))),
    ]


def seed_shadows(opt, named):
    """Start Z away from zero so both shrink branches (selected / not) are exercised."""
    gen = torch.Generator().manual_seed(1)
    for _, p in named:
        st = opt.state[p]
        if "z_buffer" in st:
            z = 2.0 * torch.randn(p.shape, generator=gen)
            if p.ndim == 4:  # filter norms 0.5, 1.5, 3: one filter below the group threshold
                norms = torch.tensor([0.5, 1.5, 3.0]) / z.flatten(1).norm(dim=1)
                z = z * norms[:, None, None, None]
            st["z_buffer"] = z
            st["gamma_buffer"] = opt.param_groups[0]["kappa"] * shrink(st["z_buffer"], "conv" if p.ndim == 4 else "fc")


# ---------------------------------------------------------------- SLBI


def test_slbi_hand_computed_fc_and_conv():
    fc = nn.Parameter(torch.tensor([[2.0, -0.5]]))
    conv = nn.Parameter(torch.tensor([[[[3.0, 4.0]]], [[[0.3, 0.4]]]]))  # 2 filters, norms 5 and 0.5
    opt = SLBI([("fc.weight", fc), ("conv.weight", conv)], lr=0.1, kappa=1, mu=10, momentum=0.0)
    opt.state[fc]["z_buffer"] = torch.tensor([[1.5, -0.2]])
    opt.state[fc]["gamma_buffer"] = torch.tensor([[0.5, 0.0]])
    fc.grad = torch.tensor([[1.0, 1.0]])
    conv.grad = torch.zeros_like(conv)
    opt.state[conv]["z_buffer"] = torch.tensor([[[[3.0, 4.0]]], [[[0.03, 0.04]]]])
    opt.step()
    # W - lr*(g + (W - Gamma)/mu) = [2 - 0.1*(1 + 0.15), -0.5 - 0.1*(1 - 0.05)]
    assert torch.allclose(fc.detach(), torch.tensor([[1.885, -0.595]]), atol=1e-12)
    # Z + lr/mu*(W - Gamma) = [1.5 + 0.015, -0.2 - 0.005]; shrink by 1
    assert torch.allclose(opt.state[fc]["z_buffer"], torch.tensor([[1.515, -0.205]]), atol=1e-12)
    assert torch.allclose(opt.state[fc]["gamma_buffer"], torch.tensor([[0.515, 0.0]]), atol=1e-12)
    # conv: Gamma_old = 0, grad 0: W *= 1 - lr/mu; Z = [3, 4]/[.03, .04] + 0.01*W
    assert torch.allclose(conv.detach().flatten(), torch.tensor([2.97, 3.96, 0.297, 0.396]), atol=1e-12)
    z = torch.tensor([3.03, 4.04, 0.033, 0.044])
    assert torch.allclose(opt.state[conv]["z_buffer"].flatten(), z, atol=1e-12)
    expect = torch.cat([z[:2] * (1 - 1 / z[:2].norm()), torch.zeros(2)])  # second filter's norm < 1
    assert torch.allclose(opt.state[conv]["gamma_buffer"].flatten(), expect, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("kappa", [1.0, 2.0])
def test_slbi_steps_match_spec(momentum, wd, kappa):
    named = make_named()
    ref = {n: [p.detach().clone(), None, None, None] for n, p in named}
    opt = SLBI(named, lr=0.3, kappa=kappa, mu=5.0, momentum=momentum, weight_decay=wd)
    seed_shadows(opt, named)
    for n, p in named:
        st = opt.state[p]
        if "z_buffer" in st:
            ref[n][2], ref[n][3] = st["z_buffer"].clone(), st["gamma_buffer"].clone()
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        for n, p in named:
            p.grad = torch.randn(p.shape, generator=gen)
            tracked = p.ndim > 1
            w, buf, z, gamma = ref[n]
            ref[n] = list(
                spec_slbi_step(
                    w,
                    p.grad,
                    buf,
                    z,
                    gamma,
                    lr=0.3,
                    kappa=kappa,
                    mu=5.0,
                    momentum=momentum,
                    wd=wd,
                    tracked=tracked,
                    kind="conv" if p.ndim == 4 else "fc",
                    name=n,
                )
            )
        opt.step()
        for n, p in named:
            w, buf, z, gamma = ref[n]
            assert torch.allclose(p.detach(), w, atol=1e-12, rtol=0), n
            if p.ndim > 1:
                assert torch.allclose(opt.state[p]["z_buffer"], z, atol=1e-12, rtol=0), n
                assert torch.equal(opt.state[p]["gamma_buffer"] != 0, gamma != 0), n
                assert torch.allclose(opt.state[p]["gamma_buffer"], gamma, atol=1e-12, rtol=0), n
    sel = [(opt.state[p]["gamma_buffer"] != 0).float().mean().item() for n, p in named if p.ndim > 1]
    assert all(0 < s < 1 for s in sel)  # the test really saw both selected and unselected weights


def test_weight_decay_skips_1d_and_bn_names():
    w = nn.Parameter(torch.ones(2, 2))
    bn = nn.Parameter(torch.ones(2, 2))
    b = nn.Parameter(torch.ones(2))
    opt = SLBI(
        [("fc.weight", w), ("layer.bn.weight", bn), ("fc.bias", b)], lr=1.0, momentum=0.0, weight_decay=0.5, layers=[]
    )
    for p in (w, bn, b):
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), 0.5))
    assert torch.equal(bn.detach(), torch.ones(2, 2)) and torch.equal(b.detach(), torch.ones(2))
    assert torch.equal(w.grad, torch.zeros(2, 2))  # the gradient itself is left alone


def test_params_without_grad_are_skipped():
    named = make_named()
    opt = SLBI(named, lr=0.1, mu=1.0)
    before = {n: p.detach().clone() for n, p in named}
    named[0][1].grad = torch.ones_like(named[0][1])
    opt.step()
    for n, p in named[1:]:
        assert torch.equal(p.detach(), before[n]) and "momentum_buffer" not in opt.state[p]
        assert torch.count_nonzero(opt.state[p].get("z_buffer", torch.zeros(1))) == 0
    assert not torch.equal(named[0][1].detach(), before["conv.weight"])


def test_layers_choose_tracked_and_errors():
    named = make_named()
    opt = SLBI(named, lr=0.1, layers=["fc.weight"])
    assert opt.tracked_names() == ["fc.weight"]
    assert SLBI(make_named(), lr=0.1).tracked_names() == ["conv.weight", "fc.weight"]
    with pytest.raises(UserError, match="nope.weight"):
        SLBI(make_named(), lr=0.1, layers=["nope.weight"])
    with pytest.raises(UserError, match="1-D"):
        SLBI(make_named(), lr=0.1, layers=["fc.bias"])
    with pytest.raises(UserError, match="mu"):
        SLBI(make_named(), lr=0.1, mu=0)


def test_per_type_lambda_and_fc_group():
    fc = nn.Parameter(torch.zeros(2, 2))
    conv = nn.Parameter(torch.zeros(1, 1, 1, 2))
    opt = SLBI([("fc.weight", fc), ("conv.weight", conv)], lr=1.0, mu=1.0, momentum=0.0, lambda_fc=0.5, lambda_conv=2.0)
    fc.grad, conv.grad = torch.zeros_like(fc), torch.zeros_like(conv)
    opt.state[fc]["z_buffer"] = torch.tensor([[0.7, -0.4], [0.3, 0.3]])
    opt.state[conv]["z_buffer"] = torch.tensor([[[[3.0, 4.0]]]])
    opt.step()  # W = Gamma = 0, so Z is unchanged
    assert torch.allclose(opt.state[fc]["gamma_buffer"], torch.tensor([[0.2, 0.0], [0.0, 0.0]]))
    assert torch.allclose(opt.state[conv]["gamma_buffer"].flatten(), torch.tensor([3.0, 4.0]) * (1 - 2 / 5))
    grouped = SLBI([("fc.weight", fc)], lr=1.0, mu=1.0, momentum=0.0, fc_group=True)
    grouped.state[fc]["z_buffer"] = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # rows: norm 5 (kept), 0.5 (dropped)
    grouped.step()
    assert torch.allclose(grouped.state[fc]["gamma_buffer"], torch.tensor([[2.4, 3.2], [0.0, 0.0]]))


def test_state_dict_round_trip_keeps_names_and_trajectory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 4, (8,))

    def train(m, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

    opt = SLBI(list(model.named_parameters()), lr=0.5, mu=2.0, weight_decay=1e-3)
    train(model, opt, 5)
    opt.end_epoch(0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    assert saved["opt"]["param_groups"][0]["param_names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    clone = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    clone.load_state_dict(saved["model"])
    opt2 = SLBI(list(clone.named_parameters()), lr=0.1)  # hyperparameters come from the state
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["mu"] == 2.0 and opt2.tracked_names() == ["0.weight", "2.weight"]
    for p, q in zip(model.parameters(), clone.parameters()):
        for k, v in opt.state[p].items():  # tensors, and the path's step count (an int)
            assert torch.equal(v, opt2.state[q][k]) if torch.is_tensor(v) else v == opt2.state[q][k], k
    train(model, opt, 3)
    train(clone, opt2, 3)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p].get("gamma_buffer", p), opt2.state[q].get("gamma_buffer", q))
    other = SLBI(
        [
            ("a.weight", nn.Parameter(torch.zeros(3, 1, 3, 3))),
            ("a.bias", nn.Parameter(torch.zeros(3))),
            ("b.weight", nn.Parameter(torch.zeros(4, 48))),
            ("b.bias", nn.Parameter(torch.zeros(4))),
        ],
        lr=0.1,
    )
    with pytest.raises(UserError, match="names differ"):
        other.load_state_dict(saved["opt"])


def test_end_epoch_records_first_selection_and_never_increases():
    conv = nn.Parameter(torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]], [[[0.0, 2.0]]]]))
    fc = nn.Parameter(torch.tensor([[0.5, -2.0, 1.0]]))
    opt = SLBI([("conv.weight", conv), ("fc.weight", fc)], lr=0.1)
    sc, sf = opt.state[conv], opt.state[fc]
    opt.end_epoch(0)  # nothing selected yet
    assert torch.equal(sc["epoch_record"], torch.full((3,), 2000.0))
    assert torch.equal(sf["epoch_record"], torch.full((1, 3), 2000.0))
    sc["gamma_buffer"] = torch.tensor([[[[0.0, 0.1]]], [[[0.0, 0.0]]], [[[0.0, 0.0]]]])  # filter 0, one entry
    sf["gamma_buffer"] = torch.tensor([[0.0, -0.3, 0.0]])
    opt.end_epoch(3)
    assert torch.equal(sc["epoch_record"], torch.tensor([3.0, 2000.0, 2000.0]))
    assert torch.equal(sf["epoch_record"], torch.tensor([[2000.0, 3.0, 2000.0]]))
    assert torch.allclose(sc["prune_order"], torch.tensor([5.0 - 3, 1.0 - 2000, 2.0 - 2000]))
    assert torch.allclose(sf["prune_order"], torch.tensor([[0.5 - 2000, 2.0 - 3, 1.0 - 2000]]))
    assert torch.equal(sf["w_star"], torch.tensor([[0.0, -2.0, 0.0]]))
    # w_star is element-wise W * (Gamma != 0), as in the official calculate_all_w_star
    assert torch.equal(sc["w_star"].flatten(), torch.tensor([0.0, 4.0, 0.0, 0.0, 0.0, 0.0]))
    sc["gamma_buffer"] = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 0.0]]], [[[5.0, 0.0]]]])  # filter 0 dropped again
    sf["gamma_buffer"] = torch.tensor([[1.0, 0.0, 0.0]])
    opt.end_epoch(7)
    assert torch.equal(sc["epoch_record"], torch.tensor([3.0, 2000.0, 7.0]))
    assert torch.equal(sf["epoch_record"], torch.tensor([[7.0, 3.0, 2000.0]]))


def test_slbi_finds_the_true_support():
    """Sparse regression: SLBI's Gamma selects the features that carry signal, and only them."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=gen)
    w_true = torch.zeros(1, 20)
    w_true[0, :3] = torch.tensor([3.0, -2.0, 2.5])
    y = x @ w_true.T + 0.01 * torch.randn(256, 1, generator=gen)
    w = nn.Parameter(torch.zeros(1, 20))
    opt = SLBI([("fc.weight", w)], lr=0.05, kappa=1.0, mu=1.0, momentum=0.0)
    for _ in range(300):
        opt.zero_grad()
        ((x @ w.T - y) ** 2).mean().mul(0.5).backward()
        opt.step()
    support = (opt.state[w]["gamma_buffer"] != 0).flatten()
    assert support[:3].all() and not support[3:].any()


# ---------------------------------------------------------------- SLBI-Adam


def test_slbi_adam_untracked_is_adam_and_tracked_uses_coupled_gradient():
    named = make_named()
    twins = [(n, nn.Parameter(p.detach().clone())) for n, p in named]
    opt = SLBIAdam(named, lr=0.1, kappa=2.0, mu=4.0, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)
    seed_shadows(opt, named)
    adam = torch.optim.Adam([q for _, q in twins], lr=0.2, betas=(0.8, 0.95), eps=1e-6, foreach=False)
    shadows = {
        n: (opt.state[p]["z_buffer"].clone(), opt.state[p]["gamma_buffer"].clone()) for n, p in named if p.ndim > 1
    }
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        for (n, p), (_, q) in zip(named, twins):
            p.grad = torch.randn(p.shape, generator=gen)
            g = p.grad + (0.01 * q.detach() if q.ndim > 1 else 0)
            if n in shadows:
                z, gamma = shadows[n]
                residual = q.detach() - gamma
                g = g + residual / 4.0
                z = z + (0.1 / 4.0) * residual
                shadows[n] = (z, 2.0 * shrink(z, "conv" if q.ndim == 4 else "fc"))
            q.grad = g
        opt.step()
        adam.step()
        for (n, p), (_, q) in zip(named, twins):
            assert torch.allclose(p, q, atol=1e-12, rtol=0), n
            if n in shadows:
                assert torch.allclose(opt.state[p]["z_buffer"], shadows[n][0], atol=1e-12, rtol=0)
                assert torch.allclose(opt.state[p]["gamma_buffer"], shadows[n][1], atol=1e-12, rtol=0)


def test_slbi_adam_legacy_variant_is_adam_then_slbi():
    named = make_named()
    twins = [(n, nn.Parameter(p.detach().clone())) for n, p in named]
    opt = SLBIAdam(named, lr=0.1, mu=4.0, variant="adam_then_slbi")
    seed_shadows(opt, named)
    adam = torch.optim.Adam([q for _, q in twins], lr=0.1)
    ref = {
        n: [None, opt.state[p]["z_buffer"].clone(), opt.state[p]["gamma_buffer"].clone()]
        if p.ndim > 1
        else [None, None, None]
        for n, p in named
    }
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):
        for (_, p), (_, q) in zip(named, twins):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        adam.step()
        with torch.no_grad():
            for (n, p), (_, q) in zip(named, twins):
                _, z, gamma = ref[n]
                w, _, z, gamma = spec_slbi_step(
                    q.detach().clone(),
                    q.grad,
                    None,
                    z,
                    gamma,
                    lr=0.1,
                    kappa=1.0,
                    mu=4.0,
                    momentum=0.0,
                    wd=0.0,
                    tracked=q.ndim > 1,
                    kind="conv" if q.ndim == 4 else "fc",
                )
                q.copy_(w)
                ref[n] = [None, z, gamma]
                assert torch.allclose(p, q, atol=1e-12, rtol=0), n
    with pytest.raises(UserError, match="variant"):
        SLBIAdam(make_named(), lr=0.1, variant="nope")


# ---------------------------------------------------------------- builders


def test_builders_read_the_config():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    cfg = OptimConfig(name="slbi", lr=0.05, momentum=0.8, weight_decay=1e-4, args={"kappa": 2, "mu": 20})
    opt = build_slbi(model, cfg)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["kappa"], g["mu"]) == (0.05, 0.8, 1e-4, 2, 20)
    assert opt.tracked_names() == ["0.weight", "2.weight"]
    cfg = OptimConfig(
        name="slbi_adam",
        lr=1e-3,
        betas=[0.5, 0.9],
        eps=1e-7,
        args={"layers": ["2.weight"], "variant": "adam_then_slbi"},
    )
    opt = build_slbi_adam(model, cfg)
    assert opt.param_groups[0]["betas"] == (0.5, 0.9) and opt.tracked_names() == ["2.weight"]
    with pytest.raises(UserError, match="allowed: kappa, mu, layers"):
        build_slbi(model, OptimConfig(name="slbi", args={"kapa": 1}))
    with pytest.raises(UserError, match="variant"):
        build_slbi(model, OptimConfig(name="slbi", args={"variant": "coupled"}))
