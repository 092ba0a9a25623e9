import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis import attribution as A
from cifarlab.analysis.layers import default_cam_layer
from cifarlab.errors import UserError


class Net(nn.Module):
    """Three conv stages with in-place ReLUs (as the registry's models have), log-softmax output."""

    stage_names = ["block1", "block2", "block3"]

    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
        self.block3 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block3(x).mean(dim=(2, 3))
        return F.log_softmax(self.fc(x), 1)


def net():
    torch.manual_seed(0)
    m = Net()
    m.train()
    m(torch.randn(16, 3, 16, 16))
    return m.eval(), torch.randn(6, 3, 16, 16)


def direct_gradcam(m, x, target, layer):
    """Grad-CAM from first principles: hook A, take dS/dA, weight channels by the spatial mean."""
    saved = {}
    h = dict(m.named_modules())[layer].register_forward_hook(lambda _m, _i, out: saved.update(a=out))
    try:
        m.block1[1].inplace = m.block2[2].inplace = m.block3[1].inplace = False
        out = m(x)
        (g,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), saved["a"])
    finally:
        h.remove()
        m.block1[1].inplace = m.block2[2].inplace = m.block3[1].inplace = True
    a = saved["a"].detach()
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), a, g


@pytest.mark.parametrize("layer", ["block2", "block3.0", "block1"])
def test_gradcam_equals_direct_hook_computation(layer):
    m, x = net()
    target = A.predict(m, x)
    cam_small = A.gradcam(m, x, target, layer, upsample=False)
    want, _, _ = direct_gradcam(m, x, target, layer)
    torch.testing.assert_close(cam_small, want, rtol=1e-5, atol=1e-7)
    assert cam_small.abs().sum() > 0
    cam = A.gradcam(m, x, target, layer)
    assert cam.shape == (6, 16, 16)
    torch.testing.assert_close(cam, F.interpolate(want[:, None], (16, 16), mode="bilinear")[:, 0], rtol=1e-5, atol=1e-7)
    other = torch.full_like(target, 3)  # a chosen class gives its own map
    torch.testing.assert_close(
        A.gradcam(m, x, other, layer, upsample=False), direct_gradcam(m, x, other, layer)[0], rtol=1e-5, atol=1e-7
    )


def test_layercam_and_gradcam_reduce_to_cam_on_a_gap_linear_head():
    """After global average pooling + linear, dS/dA_k = w_ck / HW everywhere: Grad-CAM is the class
    activation map relu(sum_k w_ck A_k) / HW (Zhou et al.), and so is LayerCAM when all w_ck > 0."""

    class Gap(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    m, x = Gap().eval(), torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        m.fc.weight.abs_()
    t = torch.tensor([0, 1, 2])
    a = m.features(x).detach()
    cam = F.relu(torch.einsum("nk,nkhw->nhw", m.fc.weight[t].detach(), a)) / 64
    torch.testing.assert_close(A.gradcam(m, x, t, "features", upsample=False), cam, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(A.layercam(m, x, t, "features", upsample=False), cam, rtol=1e-5, atol=1e-8)
    pp = A.gradcam_pp(m, x, t, "features", upsample=False)
    assert pp.shape == cam.shape and (pp >= 0).all() and pp.sum() > 0


def test_default_layer_is_the_last_map_of_at_least_4x4():
    m, _ = net()
    assert default_cam_layer(m, torch.randn(1, 3, 16, 16)) == "block3"  # 4 x 4
    assert default_cam_layer(m, torch.randn(1, 3, 8, 8)) == "block2"  # block3 is only 2 x 2


def test_bad_layers_are_user_errors_naming_valid_ones():
    m, x = net()
    with pytest.raises(UserError, match="block2") as e:
        A.run_attribution(m, x, "/nonexistent/never-written", layer="block4")
    assert "block4" in str(e.value)
    with pytest.raises(UserError, match="N x C x H x W"):
        A.layercam(m, x, A.predict(m, x), "fc")
    with pytest.raises(UserError, match="unknown attribution"):
        A.run_attribution(m, x, "/nonexistent/never-written", methods=["saliency"])


def test_run_attribution_writes_maps_and_grid(tmp_path):
    m, x = net()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    flags = [mod.inplace for mod in m.modules() if hasattr(mod, "inplace")]
    out = A.run_attribution(
        m, x, tmp_path, y=y, classes=["a", "b", "c", "d", "e"], mean=[0.5] * 3, std=[0.25] * 3, batch_size=4, ig_steps=8
    )
    assert out["layer"] == "block3" and out["methods"] == list(A.METHODS)
    with np.load(tmp_path / "attribution.npz") as z:
        assert z["gradcam"].shape == (6, 16, 16) and z["gradcampp"].shape == (6, 16, 16)
        assert z["layercam"].shape == (6, 16, 16)
        assert z["guided_gradcam"].shape == (6, 3, 16, 16) and z["integrated_gradients"].shape == (6, 3, 16, 16)
        assert (z["gradcam"] >= 0).all() and np.isfinite(z["integrated_gradients"]).all()
        np.testing.assert_array_equal(z["predictions"], A.predict(m, x).numpy())
        np.testing.assert_array_equal(z["targets"], z["predictions"])  # default target: the predicted class
        # batching (4 + 2) gives the same maps as one batch
        target = torch.as_tensor(z["targets"])
        torch.testing.assert_close(
            torch.as_tensor(z["gradcam"]), A.gradcam(m, x, target, "block3"), rtol=1e-5, atol=1e-7
        )
    assert (tmp_path / "attribution.png").stat().st_size > 5000
    assert [mod.inplace for mod in m.modules() if hasattr(mod, "inplace")] == flags and not m.training
    assert all(p.grad is None for p in m.parameters())
