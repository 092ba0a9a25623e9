import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from cifarlab.analysis import hessian as H


class Small(nn.Module):
    """conv, BN (eval), tanh, pool, linear: 51 parameters, a Hessian small enough to build whole."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(torch.tanh(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


def small():
    torch.manual_seed(0)
    m = Small().double()
    x = torch.randn(12, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    m.train()
    m(x + 0.5)  # non-default running statistics
    return m.eval(), x, y


def full_hessian(m, x, y):
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for _, p in m.named_parameters()]
    sizes = [p.numel() for _, p in m.named_parameters()]
    flat = torch.cat([p.detach().flatten() for _, p in m.named_parameters()])

    def f(theta):
        parts = dict(zip(names, [t.view(s) for t, s in zip(theta.split(sizes), shapes)]))
        return F.cross_entropy(functional_call(m, parts, (x,)), y)

    return torch.autograd.functional.hessian(f, flat), names


def flat(v, names):
    return torch.cat([v[n].flatten() for n in names])


def test_top_eigenvalues_match_the_full_hessian():
    m, x, y = small()
    h, _ = full_hessian(m, x, y)
    eig = torch.linalg.eigvalsh(h)
    by_magnitude = eig[eig.abs().argsort(descending=True)]
    hvp, params = H.make_hvp(m, [(x, y)])
    values, vectors = H.top_eigenvalues(
        hvp, params, k=2, iters=5000, tol=1e-13, generator=torch.Generator().manual_seed(0)
    )
    assert values[0] == pytest.approx(float(by_magnitude[0]), rel=1e-3)
    assert values[1] == pytest.approx(float(by_magnitude[1]), rel=1e-3)
    names = list(params)
    v0 = flat(vectors[0], names)
    torch.testing.assert_close(h @ v0, values[0] * v0, rtol=0, atol=1e-3 * abs(values[0]))  # a real eigenvector


def test_forward_and_reverse_hvp_agree_with_the_full_hessian():
    m, x, y = small()
    h, names = full_hessian(m, x, y)
    v = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    for mode in ("fwd", "rev"):
        hvp, _ = H.make_hvp(m, [(x, y)], mode=mode)
        torch.testing.assert_close(flat(hvp(v), names), h @ flat(v, names), rtol=1e-9, atol=1e-10)


def test_several_batches_average_to_the_whole_data():
    m, x, y = small()
    v = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    whole, _ = H.make_hvp(m, [(x, y)])
    split, _ = H.make_hvp(m, [(x[:7], y[:7]), (x[7:], y[7:])])  # unequal sizes: weighted mean
    a, b = whole(v), split(v)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-9, atol=1e-12)


def test_hutchinson_samples_are_vHv_and_average_to_the_trace():
    m, x, y = small()
    h, names = full_hessian(m, x, y)
    hvp, params = H.make_hvp(m, [(x, y)])
    n = 300
    mean, samples = H.hutchinson_trace(hvp, params, n, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # the same probes again
    for s in samples[:5]:
        v = flat(H.rademacher(params, g), names)
        assert s == pytest.approx(float(v @ h @ v), rel=1e-9)
    # E[v^T H v] = tr(H), Var = 2 * sum_{i != j} H_ij^2 for Rademacher v: the mean is within 4 SE
    se = math.sqrt(2 * float((h**2).sum() - (h.diagonal() ** 2).sum()) / n)
    assert abs(mean - float(h.trace())) < 4 * se
    assert mean == pytest.approx(float(np.mean(samples)))


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))

        def forward(self, x):
            return x * self.w

    torch.manual_seed(0)
    m, x = Scale(), torch.randn(10, 6, dtype=torch.float64)
    loss = lambda out, y: (out**4).mean() + (out * y).mean()  # separable in w: diagonal Hessian
    hvp, params = H.make_hvp(m, [(x, x)], loss)
    diag = 12 * (x**4 * m.w.detach() ** 2).mean(0) / 6  # d2/dw_i2 of the mean over (sample, i) of (x w)^4
    mean, samples = H.hutchinson_trace(hvp, params, 4, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(samples, float(diag.sum()), rtol=1e-10)
    top, _ = H.top_eigenvalues(hvp, params, 1, iters=2000, tol=1e-14)
    assert top[0] == pytest.approx(float(diag.max()), rel=1e-3)


def test_run_hessian_and_grid_write_results(tmp_path):
    m, x, y = small()
    m.float()
    out = H.run_hessian(m, x.float(), y, tmp_path, k=2, iters=20, trace_samples=5, batch_size=5)
    saved = json.loads((tmp_path / "hessian.json").read_text())
    assert saved["eigenvalues"] == out["eigenvalues"] and len(saved["eigenvalues"]) == 2
    assert saved["n_params"] == 51 and saved["trace_samples"] == 5 and math.isfinite(saved["trace"])
    grid = H.run_hessian_grid(m, x.float(), y, tmp_path, xrange="-1:1:2", iters=5)
    assert np.isfinite(np.array(grid["top_eigenvalue"])).all()
    assert (tmp_path / "hessian_grid.png").stat().st_size > 1000
    assert (tmp_path / "directions.pt").exists()  # the landscape's directions, shared
