"""Multi-view TTA: the six views and airbench's weights, checked on a model that returns its input."""

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.data import DeviceLoader
from cifarlab.errors import UserError
from cifarlab.train.engine import predict
from cifarlab.train.tta import tta_logits


class Pixels(nn.Module):
    """logits = the image's pixels, so the averaged logits show exactly which views were used."""

    def forward(self, x):
        return x.flatten(1)


def expected_multiview(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    down_right, up_left = padded[..., :h, :w], padded[..., 2:, 2:]
    views = [(x, 1 / 4), (x[..., ::-1], 1 / 4)]
    for v in (down_right, up_left):
        views += [(v, 1 / 8), (v[..., ::-1], 1 / 8)]
    return sum(wt * v.reshape(len(v), -1) for v, wt in views)


def test_multiview_weights_six_views():
    x = torch.randn(2, 3, 5, 6)
    out = tta_logits(Pixels(), x, "multiview")
    assert np.allclose(out.numpy(), expected_multiview(x.numpy()), atol=1e-6)
    # a down-right move: output pixel (1, 1) is input pixel (0, 0), and the border reflects
    assert out.shape == (2, 90)


def test_none_and_flip():
    x = torch.randn(2, 1, 3, 4)
    assert torch.equal(tta_logits(Pixels(), x, "none"), x.flatten(1))
    assert torch.allclose(tta_logits(Pixels(), x, "flip"), 0.5 * (x + x.flip(-1)).flatten(1))
    with pytest.raises(ValueError):
        tta_logits(Pixels(), x, "rotate")


def test_engine_predict_uses_multiview():
    images = torch.randint(0, 256, (5, 4, 4, 1), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.zeros(5, dtype=torch.long), 2, shuffle=False, device="cpu")
    logits, y = predict(Pixels(), loader, "multiview")
    x = images.permute(0, 3, 1, 2).float().numpy() / 255
    assert np.allclose(logits.numpy(), expected_multiview(x), atol=1e-6) and len(y) == 5
    with pytest.raises(UserError, match="train.tta must be none|flip|multiview"):
        predict(Pixels(), loader, "five-crop")
