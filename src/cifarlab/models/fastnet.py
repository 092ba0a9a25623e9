"""A fast residual-free CIFAR net after airbench94 (Keller Jordan, 2024).

whiten (2x2 conv, 2*C*4 = 24 channels for RGB, weight frozen) -> act -> 3 blocks of
[conv3x3 -> maxpool2 -> BN -> act -> conv3x3 -> BN -> act] -> global max-pool -> Linear (no bias) x scale.
`depth=3` adds a third conv-BN-act per block and a residual around the last two, as airbench96 does.

Conventions taken from airbench94:
- `model.whiten` is frozen (requires_grad False) and keeps PyTorch's default init until a training
  method sets it from image patches (airbench fills it with the scaled eigenvectors of the 2x2
  patch covariance, +/-); its bias trains.
- BatchNorm has eps 1e-12, weight fixed at 1 (requires_grad False) and a trainable bias.
  airbench writes the momentum as 0.6 in its own convention and passes `momentum=1-0.6` to
  PyTorch, so `bn_momentum` here is PyTorch's convention and its default is 0.4.
- The 3x3 convs have no bias; the first `in` filters of each start as identities (dirac) so the
  block starts close to passing its input through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from . import register
from .blocks import make_activation


def conv3x3_dirac(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


def batchnorm(channels: int, eps: float, momentum: float, train_weight: bool) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    bn.weight.requires_grad = train_weight
    return bn


class ConvGroup(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        activation: str,
        bn_eps: float,
        bn_momentum: float,
        train_bn_weight: bool,
        depth: int = 2,
    ):
        super().__init__()
        self.depth = depth
        self.conv1 = conv3x3_dirac(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = batchnorm(cout, bn_eps, bn_momentum, train_bn_weight)
        self.act1 = make_activation(activation)
        self.conv2 = conv3x3_dirac(cout, cout)
        self.norm2 = batchnorm(cout, bn_eps, bn_momentum, train_bn_weight)
        self.act2 = make_activation(activation)
        if depth == 3:
            self.conv3 = conv3x3_dirac(cout, cout)
            self.norm3 = batchnorm(cout, bn_eps, bn_momentum, train_bn_weight)
            self.act3 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        if self.depth == 2:
            return self.act2(self.norm2(self.conv2(x)))
        y = self.act2(self.norm2(self.conv2(x)))
        return x + self.act3(self.norm3(self.conv3(y)))  # airbench96: the residual joins after the activation


class FastNet(nn.Module):
    stage_names = ["block1", "block2", "block3"]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        activation: str,
        scale: float,
        bn_eps: float,
        bn_momentum: float,
        train_bn_weight: bool,
        *,
        depth: int = 2,
    ):
        super().__init__()
        whiten_width = 2 * in_channels * 2 * 2  # each patch eigenvector and its negative
        self.whiten = nn.Conv2d(in_channels, whiten_width, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.act = make_activation(activation)
        cin = whiten_width
        for i, cout in enumerate(widths, 1):
            self.add_module(f"block{i}", ConvGroup(cin, cout, activation, bn_eps, bn_momentum, train_bn_weight, depth))
            cin = cout
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        # Global max-pool. Not x.amax: compiled under bf16 autocast, amax's backward (which routes the
        # gradient to the elements equal to the max) matched no element and divided by zero (NaN
        # gradients; torch 2.11 and 2.14). Max-pooling routes it by index.
        return self.head(F.adaptive_max_pool2d(x, 1).flatten(1)) * self.scale


def _create_fastnet(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: str = "gelu",
    widths: Sequence[int] = (64, 256, 256),
    scale: float = 1 / 9,
    bn_eps: float = 1e-12,
    bn_momentum: float = 0.4,
    train_bn_weight: bool = False,
    depth: int = 2,
) -> nn.Module:
    """The airbench family: whitening conv, three blocks of `depth` convs, max-pools, scaled linear head."""
    widths = list(widths)
    if len(widths) != 3 or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise UserError(f"fastnet widths must be 3 positive integers, got {widths}")
    if not 0 < bn_momentum <= 1:
        raise UserError(f"bn_momentum must be in (0, 1] (PyTorch convention), got {bn_momentum}")
    if not bn_eps > 0:
        raise UserError(f"bn_eps must be > 0, got {bn_eps}")
    if depth not in (2, 3):
        raise UserError(f"fastnet depth must be 2 or 3 (convs per block), got {depth!r}")
    return FastNet(
        in_channels, num_classes, widths, activation, scale, bn_eps, bn_momentum, train_bn_weight, depth=depth
    )


@register("fastnet", "airbench", family=_create_fastnet)
def fastnet(**kwargs) -> nn.Module:
    """airbench94's network: 1.97M parameters (widths 64-256-256); depth 3 at 128-512-512 is airbench96's."""
    return _create_fastnet(**kwargs)


@register("fastnet_small", family=_create_fastnet)
def fastnet_small(**kwargs) -> nn.Module:
    """fastnet at widths 32-64-128, for CPU demos."""
    return _create_fastnet(**{"widths": (32, 64, 128), **kwargs})
