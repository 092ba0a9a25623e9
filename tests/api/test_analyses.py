"""The analyses as functions: arrays back, equal to what the library behind `cifarlab inspect`
computes on the same inputs, on any nn.Module (torchvision's, your own) and on a loaded Classifier."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cifarlab
from cifarlab.analysis import attribution, hessian, landscape
from cifarlab.analysis.bn_probe import probe_step
from cifarlab.analysis.layers import default_cam_layer
from cifarlab.analysis.predict import load_image

from .conftest import tiny_config


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def manual_gradcam(model, x, layer, target):
    """Grad-CAM written out with hooks: ReLU(sum_k mean_ij(dS/dA_k) A_k), bilinear to the input."""
    saved = {}
    h = layer.register_forward_hook(lambda m, i, o: saved.update(a=o))
    try:
        scores = model(x).gather(1, target.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(scores, saved["a"])
    finally:
        h.remove()
    cam = (g.mean((2, 3), keepdim=True) * saved["a"]).sum(1, keepdim=True).clamp_min(0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach().numpy()


def test_gradcam_torchvision_resnet(resnet):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cams = cifarlab.gradcam(resnet, x)  # target None: each image's predicted class (captum would assert)
    assert isinstance(cams, np.ndarray) and cams.shape == (3, 64, 64)
    pred = resnet(x).argmax(1)
    layer = default_cam_layer(resnet, x)
    today = attribution.gradcam(resnet, x, pred, layer).numpy()  # what inspect and predict call
    np.testing.assert_allclose(cams, today, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cams, manual_gradcam(resnet, x, resnet.get_submodule(layer), pred), rtol=1e-4, atol=1e-6)
    by_module = cifarlab.gradcam(resnet, x, layer=resnet.layer3[-1])  # as pytorch-grad-cam takes it
    np.testing.assert_allclose(by_module, cifarlab.gradcam(resnet, x, layer="layer3.1"), rtol=1e-6, atol=0)
    np.testing.assert_allclose(by_module, manual_gradcam(resnet, x, resnet.layer3[-1], pred), rtol=1e-4, atol=1e-6)
    one = cifarlab.gradcam(resnet, x, target=4, layer="layer2")
    np.testing.assert_allclose(one, manual_gradcam(resnet, x, resnet.layer2, torch.full((3,), 4)), rtol=1e-4, atol=1e-6)
    with pytest.raises(cifarlab.UserError, match="not a submodule"):
        cifarlab.gradcam(resnet, x, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(cifarlab.UserError, match="no layer 'layer9'"):
        cifarlab.gradcam(resnet, x, layer="layer9")


class MLP(nn.Module):  # a model written by hand: small enough for the dense Hessian
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_hessian_on_your_own_module():
    torch.manual_seed(0)
    model = MLP()
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    eigs = cifarlab.hessian_eigs(model, x, y, k=2, tol=1e-7, iters=500)
    hvp, params = hessian.make_hvp(model, hessian.batches_of(x, y, 500))
    today, _ = hessian.top_eigenvalues(hvp, params, 2, 500, 1e-7, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(eigs, today, rtol=1e-6)
    # against the dense Hessian of the same loss
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(v):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = v[i : i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(torch.func.functional_call(model, ps, (x,)), y)

    dense = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    top = dense[dense.abs().argsort(descending=True)][:2].numpy()
    np.testing.assert_allclose(eigs, top, rtol=2e-3)
    trace = cifarlab.hessian_trace(model, x, y, samples=400)
    assert abs(trace - float(dense.sum())) < 0.15 * abs(float(dense.sum()))


def test_landscape_equals_inspect_landscape(folder, tmp_path):
    run = cifarlab.fit(tiny_config(folder, epochs=1), out=tmp_path / "run")
    clf = run.model
    images = torch.stack([load_image(p, (18, 18, 3)) for p in sorted((folder / "train").glob("*/*.png"))[:40]])
    x, y = clf.normalize(images), torch.tensor([0] * 24 + [1] * 16)
    lib = landscape.run_landscape(clf.model, x, y, tmp_path / "ls", dims=2, xrange="-1:1:5", seed=3, progress=False)
    grid = landscape.load_grid(tmp_path / "ls" / "landscape.npz")
    res = cifarlab.landscape(clf, images, y, dims=2, grid="-1:1:5", seed=3)  # raw images through the Classifier
    np.testing.assert_allclose(res["loss"], grid["loss"], rtol=1e-6)
    np.testing.assert_allclose(res["acc"], grid["acc"])
    assert lib["complete"] and res["loss"].shape == (5, 5)
    saved = torch.load(tmp_path / "ls" / "directions.pt", weights_only=True)["directions"]
    mine = cifarlab.landscape(clf.model, x, y, grid=[-0.5, 0.0, 0.5], directions=saved)
    np.testing.assert_allclose(mine["loss"], grid["loss"][1:4:1, 1:4:1], rtol=1e-6)
    one = cifarlab.landscape(clf.model, x, y, dims=1, grid="-1:1:5", seed=3)
    assert one["loss"].shape == (5,) and np.isclose(one["loss"][2], grid["loss"][2, 2], rtol=1e-6)


def test_probes_features_filters(resnet):
    torch.manual_seed(0)
    model = MLP()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    res = cifarlab.probes(model, x, y, etas=[0.1, 0.5])
    ref = probe_step(model, F.cross_entropy, x, y, [0.1, 0.5])
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-6)
    assert res["beta"].shape == (2,)
    with pytest.raises(cifarlab.UserError, match="etas must be positive"):
        cifarlab.probes(model, x, y, etas=[0.0])
    img = torch.randn(2, 3, 32, 32)
    feats = cifarlab.feature_maps(resnet, img, layers=["layer1", resnet.layer2])
    assert list(feats) == ["layer1", "layer2"] and feats["layer2"].shape == (2, 128, 4, 4)
    w = cifarlab.filters(resnet)
    assert w.shape == (64, 3, 7, 7) and np.array_equal(w, resnet.conv1.weight.detach().numpy())
    pics = cifarlab.filters(resnet, as_images=True)
    assert pics.shape == (64, 7, 7, 3) and pics.min() >= 0 and pics.max() <= 1
