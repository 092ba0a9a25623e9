import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis import landscape as L
from cifarlab.errors import UserError


class Tiny(nn.Module):
    """conv-BN-ReLU-pool, conv-BN-ReLU-pool, linear: every kind of tensor a direction must treat."""

    stage_names = ["conv1", "layer2"]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer2 = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True))
        self.fc = nn.Linear(5 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(self.layer2(x), 2)
        return self.fc(x.flatten(1))


def tiny(seed=0):
    torch.manual_seed(seed)
    m = Tiny()
    x = torch.randn(40, 3, 8, 8)
    y = torch.randint(0, 10, (40,))
    m.train()
    for _ in range(3):  # non-trivial running statistics, so eval-mode BN matters
        m(x * 2 + 1)
    return m.eval(), x, y


def test_filter_normalization_matches_weight_filters_and_zeroes_1d():
    m, _, _ = tiny()
    d = L.random_direction(m, "filter", "biasbn", torch.Generator().manual_seed(1))
    w = dict(m.named_parameters())
    assert set(d) == set(w)
    for n, t in d.items():
        if t.dim() <= 1:  # biases and BN weight/bias
            assert torch.count_nonzero(t) == 0, n
        else:  # every conv output filter / Linear row has its weight filter's norm
            dn = t.reshape(len(t), -1).norm(dim=1)
            wn = w[n].detach().reshape(len(t), -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)
            assert not torch.allclose(
                t / dn.view(-1, *[1] * (t.dim() - 1)), w[n].detach() / wn.view(-1, *[1] * (t.dim() - 1))
            )  # random, not w


def test_layer_norm_and_ignore_none():
    m, _, _ = tiny()
    d = L.random_direction(m, "layer", "none", torch.Generator().manual_seed(1))
    for n, p in m.named_parameters():
        if p.dim() <= 1:  # the reference code keeps w itself for 1-D tensors when not ignored
            torch.testing.assert_close(d[n], p.detach())
        else:
            torch.testing.assert_close(d[n].norm(), p.detach().norm(), rtol=1e-5, atol=0)


def test_same_seed_same_direction():
    m, _, _ = tiny()
    a = L.random_direction(m, generator=torch.Generator().manual_seed(3))
    b = L.random_direction(m, generator=torch.Generator().manual_seed(3))
    c = L.random_direction(m, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_centre_of_grid_is_the_models_own_loss():
    m, x, y = tiny()
    g = torch.Generator().manual_seed(0)
    dirs = [L.random_direction(m, generator=g), L.random_direction(m, generator=g)]
    axes = [np.array([-0.5, 0.0, 0.5]), np.array([-1.0, 0.0, 1.0])]
    with torch.no_grad():
        logits = m(x)
    for method in ("vmap", "loop"):
        res = L.evaluate_grid(m, x, y, dirs, axes, batch_size=16, method=method, progress=False)
        assert res["done"].all()
        assert res["loss"][1, 1] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
        assert res["acc"][1, 1] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
        assert not np.allclose(res["loss"], res["loss"][1, 1])  # the other points moved


def test_vmap_evaluator_equals_loop_in_both_bn_modes():
    m, x, y = tiny()
    g = torch.Generator().manual_seed(0)
    dirs = [L.random_direction(m, generator=g), L.random_direction(m, generator=g)]
    base = L.weights_of(m)
    coeffs = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-1.0, 1.0], [0.7, 0.7], [2.0, -0.5]])
    stats = {n: b.clone() for n, b in m.named_buffers()}
    losses = {}
    for bn in ("eval", "train"):
        lv, av = L.evaluate_points_vmap(m, base, dirs, coeffs, x, y, batch_size=16, bn=bn)
        ll, al = L.evaluate_points_loop(m, base, dirs, coeffs, x, y, batch_size=16, bn=bn)
        torch.testing.assert_close(lv, ll, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(av, al)
        losses[bn] = lv
    assert not torch.allclose(losses["eval"], losses["train"])  # batch statistics really were used
    assert all(torch.equal(stats[n], b) for n, b in m.named_buffers())  # running stats untouched
    assert not m.training


def test_interrupted_grid_resumes_only_missing_points(tmp_path, monkeypatch):
    m, x, y = tiny()
    g = torch.Generator().manual_seed(0)
    dirs = [L.random_direction(m, generator=g), L.random_direction(m, generator=g)]
    axes = [np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)]
    full = L.evaluate_grid(m, x, y, dirs, axes, chunk=5, method="vmap", progress=False)

    real = L.evaluate_points_vmap
    seen = []

    def interrupted(model, base, directions, coeffs, *a, **k):
        if len(seen) == 1:
            raise KeyboardInterrupt
        seen.append(len(coeffs))
        return real(model, base, directions, coeffs, *a, **k)

    monkeypatch.setattr(L, "evaluate_points_vmap", interrupted)
    with pytest.raises(KeyboardInterrupt):
        L.evaluate_grid(m, x, y, dirs, axes, path=tmp_path / "grid", chunk=5, method="vmap", progress=False)
    partial = L.load_grid(tmp_path / "grid.npz")
    assert partial["done"].sum() == 5 and np.isnan(partial["loss"][~partial["done"]]).all()

    counted = []
    monkeypatch.setattr(
        L, "evaluate_points_vmap", lambda mm, b, d, c, *a, **k: counted.append(len(c)) or real(mm, b, d, c, *a, **k)
    )
    res = L.evaluate_grid(m, x, y, dirs, axes, path=tmp_path / "grid", chunk=5, method="vmap", progress=False)
    assert sum(counted) == 12 - 5 and res["evaluated"] == 7
    np.testing.assert_allclose(res["loss"], full["loss"], rtol=1e-5)
    assert res["done"].all()
    # a finished grid is not recomputed
    counted.clear()
    L.evaluate_grid(m, x, y, dirs, axes, path=tmp_path / "grid", chunk=5, method="vmap", progress=False)
    assert counted == []
    # a grid file of other settings is refused, not mixed in
    with pytest.raises(UserError, match="other settings"):
        L.evaluate_grid(m, x, y, dirs, [np.linspace(-2, 2, 4), axes[1]], path=tmp_path / "grid", progress=False)


def test_shards_merge_into_the_full_grid(tmp_path):
    m, x, y = tiny()
    g = torch.Generator().manual_seed(0)
    dirs = [L.random_direction(m, generator=g), L.random_direction(m, generator=g)]
    axes = [np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)]
    full = L.evaluate_grid(m, x, y, dirs, axes, progress=False)
    parts = []
    for i in range(3):
        r = L.evaluate_grid(m, x, y, dirs, axes, path=tmp_path / "grid", shard=(i, 3), progress=False)
        assert r["done"].sum() == 3
        parts.append(tmp_path / f"grid.shard{i}of3.npz")
    assert not L.merge_shards(parts[:2])["done"].all()
    merged = L.merge_shards(parts, tmp_path / "merged")
    assert merged["done"].all()
    np.testing.assert_allclose(merged["loss"], full["loss"], rtol=1e-5)
    np.testing.assert_allclose(L.load_grid(tmp_path / "merged.npz")["acc"], full["acc"])


def test_sharded_run_landscape_merges_and_plots(tmp_path):
    m, x, y = tiny()
    for i in range(2):
        part = L.run_landscape(m, x, y, tmp_path, xrange="-1:1:3", shard=(i, 2), progress=False)
        assert not part["complete"] and part["points_done"] == (5 if i == 0 else 4) and part["figures"] == []
    res = L.run_merge_shards(tmp_path, 2)
    assert res["complete"] and (tmp_path / "landscape_contour.png").stat().st_size > 1000
    whole = L.run_landscape(m, x, y, tmp_path / "whole", xrange="-1:1:3", progress=False)
    assert whole["complete"]
    np.testing.assert_allclose(
        L.load_grid(tmp_path / "landscape.npz")["loss"],
        L.load_grid(tmp_path / "whole" / "landscape.npz")["loss"],
        rtol=1e-5,
    )
    with pytest.raises(UserError, match="missing shard"):
        L.run_merge_shards(tmp_path, 3)


def test_vmap_failure_falls_back_to_the_loop():
    class ItemNet(Tiny):  # .item() in forward has no vmap rule
        def forward(self, x):
            out = super().forward(x)
            return out * 1.0 if out.sum().item() > -1e30 else out

    torch.manual_seed(0)
    m, x, y = ItemNet().eval(), torch.randn(20, 3, 8, 8), torch.randint(0, 10, (20,))
    dirs = [L.random_direction(m, generator=torch.Generator().manual_seed(0))]
    axes = [np.linspace(-1, 1, 5)]
    with pytest.warns(UserWarning, match="falling back"):
        res = L.evaluate_grid(m, x, y, dirs, axes, method="vmap", progress=False)
    ref = L.evaluate_grid(m, x, y, dirs, axes, method="loop", progress=False)
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-5)


def test_interpolation_endpoints_are_the_two_checkpoints(tmp_path):
    a, x, y = tiny(0)
    b, _, _ = tiny(1)
    res = L.run_interpolation(
        a, a.state_dict(), b.state_dict(), x, y, tmp_path, alphas=[0.0, 0.5, 1.0], method="vmap", progress=False
    )
    grid = L.load_grid(tmp_path / "interpolation.npz")
    with torch.no_grad():
        la, lb = float(F.cross_entropy(a(x), y)), float(F.cross_entropy(b(x), y))
    assert grid["loss"][0] == pytest.approx(la, rel=1e-5)
    assert grid["loss"][2] == pytest.approx(lb, rel=1e-5)  # b's BN statistics came along too
    assert (tmp_path / "interpolation_1d.png").stat().st_size > 1000 and res["complete"]


def test_pca_directions_span_a_planar_trajectory():
    m, _, _ = tiny()
    final = {n: p.detach().clone() for n, p in m.state_dict().items()}
    u = L.random_direction(m, generator=torch.Generator().manual_seed(1))
    v = L.random_direction(m, generator=torch.Generator().manual_seed(2))
    ts = [(3.0, 1.0), (2.0, 1.5), (1.2, 0.4), (0.5, 0.3), (0.0, 0.0)]
    states = [{n: t + a * u.get(n, 0) + b * v.get(n, 0) for n, t in final.items()} for a, b in ts]
    names = [n for n, _ in m.named_parameters()]
    dirs, coords, ratio = L.pca_directions(states, final, names)
    assert ratio.sum() == pytest.approx(1.0, abs=1e-5) and ratio[0] >= ratio[1]
    # the last state is the final one: its coordinates are zero up to float32 rounding of the centred
    # projections, which scales with the coordinates themselves
    assert coords[-1] == pytest.approx([0, 0], abs=1e-5 * float(np.abs(coords).max()))
    for s, c in zip(states, coords):  # the trajectory lies in the plane, so two coordinates rebuild it
        for n in dirs[0]:
            torch.testing.assert_close(final[n] + c[0] * dirs[0][n] + c[1] * dirs[1][n], s[n], rtol=1e-4, atol=1e-4)
    flat = torch.cat([torch.stack([d[n].flatten() for d in dirs]) for n in dirs[0]], 1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(2), rtol=0, atol=1e-5)  # orthonormal


def test_run_landscape_trajectory_figures(tmp_path):
    m, x, y = tiny()
    res = L.run_landscape(m, x, y, tmp_path / "l2", xrange="-1:1:4", chunk=6, progress=False)
    assert res["complete"] and res["points"] == 16
    for name in ("contour", "contourf", "surface", "heatmap", "slice_d1", "slice_d2"):
        assert (tmp_path / "l2" / f"landscape_{name}.png").stat().st_size > 1000, name
    assert (tmp_path / "l2" / "landscape_contour.pdf").exists()
    # the saved directions are reused by a second run (resume on another process)
    again = L.run_landscape(m, x, y, tmp_path / "l2", xrange="-1:1:4", progress=False)
    assert again["evaluated_now"] == 0 and again["min_loss"] == res["min_loss"]
    with pytest.raises(UserError, match="directions.pt"):
        L.run_landscape(m, x, y, tmp_path / "l2", xrange="-1:1:4", seed=5, progress=False)
    one = L.run_landscape(m, x, y, tmp_path / "l1", dims=1, xrange="-1:1:7", progress=False)
    assert one["points"] == 7 and (tmp_path / "l1" / "landscape_1d.png").stat().st_size > 1000
    states = [
        {n: t + 0.1 * k * torch.randn_like(t) if t.is_floating_point() else t for n, t in m.state_dict().items()}
        for k in range(4, 0, -1)
    ] + [m.state_dict()]
    tr = L.run_trajectory(m, states, x, y, tmp_path / "tr", steps=4, progress=False)
    assert tr["complete"] and (tmp_path / "tr" / "trajectory_contour.png").stat().st_size > 1000


def test_bad_settings_are_user_errors():
    m, x, y = tiny()
    with pytest.raises(UserError, match="norm"):
        L.random_direction(m, norm="unit")
    with pytest.raises(UserError, match="min:max:num"):
        L.parse_range("-1:1")
    with pytest.raises(UserError, match="shard"):
        L.evaluate_grid(m, x, y, [L.random_direction(m)], [np.zeros(2)], shard=(2, 2), progress=False)
