"""ResNets for 32x32 input (3x3 stem, stride 1, no max-pool), and a small plain/residual twin pair.

Stage i > 1 halves the resolution with a stride-2 first block; the shortcut is a 1x1 conv + BN
where the shape changes (option B of He et al.), identity elsewhere. An optional MLP `head`
(hidden sizes, with `dropout`) replaces the single Linear: the reports' "ResNet with classifier head".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from ..errors import UserError
from . import register
from .blocks import BasicBlock, Bottleneck, make_activation, mlp, norm_or_identity, scaled


class ResNet(nn.Module):
    def __init__(
        self,
        make_block: Callable[[int, int, int], nn.Module],
        expansion: int,
        depths: Sequence[int],
        widths: Sequence[int],
        in_channels: int,
        num_classes: int,
        *,
        activation: str = "relu",
        head: Sequence[int] | None = None,
        dropout: float = 0.0,
        bn: bool = True,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not bn)
        self.bn1 = norm_or_identity(widths[0], bn)
        self.act = make_activation(activation)
        cin = widths[0]
        self.stage_names = []
        for i, (cout, n) in enumerate(zip(widths, depths), 1):
            blocks = []
            for j in range(n):
                blocks.append(make_block(cin, cout, 2 if (i > 1 and j == 0) else 1))
                cin = cout * expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i}")
        self.fc = mlp(cin, head, num_classes, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling


def _create_resnet(
    depths: list[int],
    bottleneck: bool = False,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: str = "relu",
    width: float = 1.0,
    head: Sequence[int] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """The CIFAR ResNet family: BasicBlocks (or Bottlenecks) at widths 64-128-256-512 x width."""
    block = Bottleneck if bottleneck else BasicBlock
    return ResNet(
        partial(block, activation=activation),
        block.expansion,
        depths,
        [scaled(c, width) for c in (64, 128, 256, 512)],
        in_channels,
        num_classes,
        activation=activation,
        head=head,
        dropout=dropout,
    )


@register("resnet18", family=_create_resnet)
def resnet18(**kwargs) -> nn.Module:
    """BasicBlock [2,2,2,2], widths 64-128-256-512 x width: 11,173,962 parameters at 10 classes."""
    return _create_resnet([2, 2, 2, 2], **kwargs)


@register("resnet34", family=_create_resnet)
def resnet34(**kwargs) -> nn.Module:
    """BasicBlock [3,4,6,3]."""
    return _create_resnet([3, 4, 6, 3], **kwargs)


@register("resnet50", family=_create_resnet)
def resnet50(**kwargs) -> nn.Module:
    """Bottleneck [3,4,6,3], expansion 4: 23,520,842 parameters at 10 classes."""
    return _create_resnet([3, 4, 6, 3], bottleneck=True, **kwargs)


# ---------------------------------------------------------------- plain vs residual ablation


def _create_small_net(
    residual: bool,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: str = "relu",
    width: float = 1.0,
    stages: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int | Sequence[int] = 1,
    head: Sequence[int] | None = None,
    dropout: float = 0.0,
    bn: bool = True,
) -> nn.Module:
    """Stem conv, then per stage `blocks_per_stage` blocks of two 3x3 convs, with or without shortcuts."""
    stages = list(stages)
    if not stages or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in stages):
        raise UserError(f"stages must be a non-empty list of positive channel counts, got {stages}")
    depths = [blocks_per_stage] * len(stages) if isinstance(blocks_per_stage, int) else list(blocks_per_stage)
    if len(depths) != len(stages) or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in depths):
        raise UserError(f"blocks_per_stage must be a positive integer or one per stage, got {blocks_per_stage}")
    make_block = partial(BasicBlock, activation=activation, bn=bn, residual=residual)
    return ResNet(
        make_block,
        1,
        depths,
        [scaled(c, width) for c in stages],
        in_channels,
        num_classes,
        activation=activation,
        head=head,
        dropout=dropout,
        bn=bn,
    )


@register("plainnet", family=_create_small_net)
def plainnet(**kwargs) -> nn.Module:
    """Stem conv, then per stage `blocks_per_stage` blocks of two 3x3 convs without shortcuts."""
    return _create_small_net(False, **kwargs)


@register("resnet_small", family=_create_small_net)
def resnet_small(**kwargs) -> nn.Module:
    """plainnet with residual connections (1x1 projections where the shape changes add a few weights)."""
    return _create_small_net(True, **kwargs)
