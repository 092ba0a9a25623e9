"""Grad-CAM++ against its formula computed by hand, at CIFAR-sized (1e-4) gradients."""

import torch
from torch import nn

from cifarlab.analysis.attribution import activations_and_gradients, gradcam_pp


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    with torch.no_grad():
        model[4].weight.mul_(1e-3)  # gradients at the conv of order 1e-4, as in trained CIFAR nets
    return model


def _by_hand(a: torch.Tensor, g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3 + eps
    alpha = torch.where(denom != 0, g2 / denom, torch.zeros_like(g2))
    w = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(1).clamp_min(0)


def test_gradcam_pp_matches_formula_at_small_gradients():
    model = _small_model()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 2])
    a, g = activations_and_gradients(model, x, t, "0")
    assert 1e-6 < g.abs().max() < 1e-3
    cam = gradcam_pp(model, x, t, "0", upsample=False)
    expected = _by_hand(a.double(), g.double()).float()
    assert cam.abs().max() > 0
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    # the old fixed +1e-7 in the denominator moves the map visibly at this gradient scale
    old = _by_hand(a.double(), g.double(), eps=1e-7).float()
    assert (old - expected).abs().max() > 0.05 * expected.abs().max()
