import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis import features, filters
from cifarlab.analysis.plotting import denormalize, to_input
from cifarlab.errors import UserError


class Net(nn.Module):
    stage_names = ["stem", "stage1", "stage2"]

    def __init__(self, in_channels=3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.stage1 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 5, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        x = self.stage2(self.stage1(F.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_filter_images_are_min_max_normalized_per_filter():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 5, 5) * torch.arange(1, 7).view(6, 1, 1, 1)  # very different scales
    img = filters.filter_images(w)
    assert img.shape == (6, 5, 5, 3)
    np.testing.assert_allclose(img.reshape(6, -1).min(1), 0, atol=1e-7)
    np.testing.assert_allclose(img.reshape(6, -1).max(1), 1, atol=1e-6)
    # the pattern is kept: an affine map of the original filter
    f0 = w[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(img[0], (f0 - f0.min()) / (f0.max() - f0.min()), rtol=1e-5, atol=1e-6)
    gray = filters.filter_images(torch.randn(4, 1, 3, 3))
    assert gray.shape == (4, 3, 3)


def test_kernel_maps_modes():
    w = torch.randn(8, 6, 3, 3)
    np.testing.assert_allclose(filters.kernel_maps(w, "mean"), w.mean(1).numpy(), rtol=1e-6)
    assert filters.kernel_maps(w, "first", k=4).shape == (8, 4, 3, 3)
    with pytest.raises(UserError):
        filters.kernel_maps(w, "max")


def test_run_filters_writes_grids(tmp_path):
    m = Net()
    out = filters.run_filters(m, tmp_path)
    assert out["first_layer"] == "stem" and out["layers"] == ["stage1.0", "stage2.1"]  # first conv of each stage
    for f in out["figures"]:
        assert f.endswith(".png") and (tmp_path / f.split("/")[-1]).stat().st_size > 1000
    assert (tmp_path / "kernels_stage1.0.png").exists()  # dots in layer names survive
    out = filters.run_filters(Net(in_channels=1), tmp_path / "gray", layers=["stage1.2"], mode="first", k=3)
    assert out["layers"] == ["stage1.2"]
    with np.load(out["arrays"]) as z:
        assert z["stage1.2"].shape == (8, 3, 3, 3) and z["first"].shape == (6, 1, 3, 3)
    with pytest.raises(UserError, match="no layer"):
        filters.run_filters(m, tmp_path, layers=["stage9"])
    with pytest.raises(UserError, match="no Conv2d"):
        filters.run_filters(m, tmp_path, layers=["head"])


def test_capture_returns_each_stage_output():
    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(3, 3, 8, 8)
    feats = features.feature_maps(m, x, m.stage_names)
    with torch.no_grad():
        stem = m.stem(x)
        s1 = m.stage1(F.relu(stem))
        s2 = m.stage2(s1)
    torch.testing.assert_close(feats["stem"], stem)
    torch.testing.assert_close(feats["stage1"], s1)
    torch.testing.assert_close(feats["stage2"], s2)
    assert list(feats) == ["stem", "stage1", "stage2"]


def test_run_features_writes_a_grid_per_stage(tmp_path):
    torch.manual_seed(0)
    m = Net()
    images = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    x = to_input(images, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    np.testing.assert_allclose(denormalize(x, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]), images.numpy() / 255, atol=1e-6)
    out = features.run_features(m, x, tmp_path, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2], max_images=2, n_channels=4)
    assert out["shapes"] == {"stem": [2, 6, 8, 8], "stage1": [2, 8, 8, 8], "stage2": [2, 5, 4, 4]}
    assert len(out["figures"]) == 2 * (1 + 3)
    assert all((tmp_path / f.split("/")[-1]).stat().st_size > 1000 for f in out["figures"])
    out = features.run_features(m, x, tmp_path / "chosen", layers=["stage1.1", "head"], max_images=1)
    assert out["shapes"]["head"] == [1, 4]  # a vector output is drawn as a strip
    with pytest.raises(UserError, match="no layer"):
        features.run_features(m, x, tmp_path, layers=["stage3"])
