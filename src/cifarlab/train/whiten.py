"""A frozen first layer set by patch whitening (airbench, after tysam's hlb-CIFAR10).

The k x k patches of the (normalized) training images have a covariance C = V diag(l) V^T. A conv
whose filters are the rows of diag(1/sqrt(l + eps)) V^T maps patches to coordinates with
(nearly) identity covariance: the first layer starts out decorrelating pixels, a job SGD would
otherwise spend many steps on. Each eigenvector is used with both signs, so a ReLU-like activation
after the layer keeps both halves of every direction. The weight stays frozen; its bias may train.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


def find_whiten_layer(model: nn.Module) -> nn.Conv2d:
    """`model.whiten` when the model has one (fastnet), else its first Conv2d."""
    layer = getattr(model, "whiten", None)
    if isinstance(layer, nn.Conv2d):
        return layer
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise UserError(f"train.whiten needs a model with a Conv2d layer; {type(model).__name__} has none")


def normalized_images(images_uint8_nhwc: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                      device: torch.device) -> torch.Tensor:  # fmt: skip
    """uint8 (N, H, W, C) -> float (N, C, H, W), normalized as the loader does it."""
    x = images_uint8_nhwc.to(device).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x - m) / s


def patch_covariance(images: torch.Tensor, kernel_size: tuple[int, int], chunk: int = 1000) -> torch.Tensor:
    """Uncentred covariance (C*kh*kw square, float64) of all stride-1 patches of float NCHW images.

    F.unfold flattens a patch as (channel, row, column): the layout of a conv filter."""
    d = images.shape[1] * kernel_size[0] * kernel_size[1]
    cov = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    n = 0
    for part in images.split(chunk):  # bounded memory: a patch copy of 5000 CIFAR images is 230 MB
        p = F.unfold(part.float(), kernel_size).transpose(1, 2).reshape(-1, d)
        cov += (p.T @ p).double()
        n += p.shape[0]
    return cov / n


def whitening_filters(cov: torch.Tensor, out_channels: int, kernel_size: tuple[int, int], eps: float) -> torch.Tensor:
    """The top out_channels/2 eigenvectors scaled by 1/sqrt(eigenvalue + eps), then their negatives."""
    d = cov.shape[0]
    if out_channels % 2 or not 2 <= out_channels <= 2 * d:
        raise UserError(
            f"patch whitening needs an even number of filters up to 2 x {d} (both signs of each "
            f"of the {d} patch eigenvectors); the layer has {out_channels}"
        )
    # eigh on the CPU in float64: a tiny matrix, exact, and no GPU solver to start up
    evals, evecs = torch.linalg.eigh(cov.detach().cpu().double())
    evals, evecs = evals.flip(0), evecs.flip(1)  # largest first
    k = out_channels // 2
    filters = (evecs[:, :k] / torch.sqrt(evals[:k].clamp_min(0) + eps)).T  # (k, d)
    filters = filters.reshape(k, -1, *kernel_size)
    return torch.cat([filters, -filters]).float()


@torch.no_grad()
def init_whitening(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set `layer`'s weight from the patches of float NCHW `images` (normalized as in training), freeze it."""
    if layer.groups != 1 or layer.dilation != (1, 1):
        raise UserError("patch whitening needs a plain conv layer (groups 1, no dilation)")
    if images.shape[1] != layer.in_channels:
        raise UserError(f"whitening layer takes {layer.in_channels} channels, the images have {images.shape[1]}")
    ks = tuple(layer.kernel_size)
    cov = patch_covariance(images, ks)
    layer.weight.copy_(whitening_filters(cov, layer.out_channels, ks, eps).to(layer.weight))
    layer.weight.requires_grad_(False)
