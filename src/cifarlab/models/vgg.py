"""The VGG-A family of the course (SPEC 1.1) and the reports' residual VGGs (SPEC 1.2).

The course models keep the course's module layout, so their state_dict keys match the course
code (`features.0.weight`, `classifier.0.weight`; `stage1.0.weight` for VGG_A_Light/Dropout) and
the course's checkpoints load. All expect 32x32 input: five 2x2 pools take it to 1x1x512.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from . import register
from .blocks import BasicBlock, course_init_, make_activation, mlp, scaled

VGG_A_LAYOUT = [[64], [128], [256, 256], [512, 512], [512, 512]]  # conv widths per stage, pool after each


def conv_act(cin: int, cout: int, activation: str, bn: bool = False) -> list[nn.Module]:
    """3x3 conv with bias (+BN) + activation: one VGG conv layer as the course writes it."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    return layers + [make_activation(activation)]


class VGGA(nn.Module):
    """VGG_A (bn=False) and VGG_A_BatchNorm (bn=True: BN after each conv, before the activation)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        activation: str = "relu",
        bn: bool = False,
        bn1d: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        self.stage_names: list[str] = []  # the activation closing each conv layer: 8 conv blocks
        cin = in_channels
        for stage in VGG_A_LAYOUT:
            for cout in stage:
                layers += conv_act(cin, cout, activation, bn)
                self.stage_names.append(f"features.{len(layers) - 1}")
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.classifier = mlp(512, [512, 512], num_classes, activation, bn=bn1d)
        course_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class StagedVGG(nn.Module):
    """The course's stage1..stageN + classifier layout (VGG_A_Light, VGG_A_Dropout)."""

    def __init__(self, stages: list[nn.Module], classifier: nn.Module):
        super().__init__()
        for i, stage in enumerate(stages, 1):
            self.add_module(f"stage{i}", stage)
        self.classifier = classifier
        self.stage_names = [f"stage{i}" for i in range(1, len(stages) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.classifier(torch.flatten(x, 1))


def staged_convs(in_channels: int, layout: list[list[int]], activation: str) -> list[nn.Module]:
    stages, cin = [], in_channels
    for widths in layout:
        layers: list[nn.Module] = []
        for cout in widths:
            layers += conv_act(cin, cout, activation)
            cin = cout
        stages.append(nn.Sequential(*layers, nn.MaxPool2d(2, 2)))
    return stages


@register("VGG_A")
def vgg_a(num_classes: int = 10, in_channels: int = 3, activation: str = "relu") -> nn.Module:
    """The course VGG-A: 8 convs, 3 Linear layers, 9,750,922 parameters, course init."""
    return VGGA(in_channels, num_classes, activation)


@register("VGG_A_BatchNorm", "VGG_BatchNorm")
def vgg_a_batchnorm(
    num_classes: int = 10, in_channels: int = 3, activation: str = "relu", bn1d: bool = False
) -> nn.Module:
    """VGG-A with BatchNorm2d after every conv (9,756,426); bn1d adds BatchNorm1d after fc1, fc2 (9,758,474)."""
    return VGGA(in_channels, num_classes, activation, bn=True, bn1d=bn1d)


@register("VGG_A_Light")
def vgg_a_light(num_classes: int = 10, in_channels: int = 3, activation: str = "relu") -> nn.Module:
    """conv16-pool, conv32-pool, Linear 2048-128-128-10: 285,162 parameters, PyTorch default init."""
    stages = staged_convs(in_channels, [[16], [32]], activation)
    return StagedVGG(stages, mlp(32 * 8 * 8, [128, 128], num_classes, activation))


@register("VGG_A_Dropout")
def vgg_a_dropout(
    num_classes: int = 10, in_channels: int = 3, activation: str = "relu", dropout: float = 0.5
) -> nn.Module:
    """VGG_A with Dropout(p) before each of the first two Linear layers, PyTorch default init."""
    stages = staged_convs(in_channels, VGG_A_LAYOUT, activation)
    classifier = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(512, 512),
        make_activation(activation),
        nn.Dropout(dropout),
        nn.Linear(512, 512),
        make_activation(activation),
        nn.Linear(512, num_classes),
    )
    return StagedVGG(stages, classifier)


# ---------------------------------------------------------------- residual VGGs of the reports


class VGGARes(nn.Module):
    """VGG-A with every conv replaced by a residual BasicBlock (two convs + BN), pools as in VGG-A,
    classifier [Dropout, Linear, BN1d, act] x2 + Linear: the reports' best BN model."""

    def __init__(self, in_channels: int, num_classes: int, activation: str, dropout: float, width: float):
        super().__init__()
        layers: list[nn.Module] = []
        self.stage_names: list[str] = []
        cin = in_channels
        for stage in VGG_A_LAYOUT:
            for c in stage:
                cout = scaled(c, width)
                self.stage_names.append(f"features.{len(layers)}")
                layers.append(BasicBlock(cin, cout, activation=activation))
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        hidden = scaled(512, width)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(cin, hidden),
            nn.BatchNorm1d(hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            make_activation(activation),
            nn.Linear(hidden, num_classes),
        )
        course_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register("vgg_a_res", "VGG_A_Res_BN", "vgg_a_residual")
def vgg_a_res(
    num_classes: int = 10, in_channels: int = 3, activation: str = "relu", dropout: float = 0.5, width: float = 1.0
) -> nn.Module:
    """VGG-A layout (1-1-2-2-2) of residual blocks with BN, course init."""
    return VGGARes(in_channels, num_classes, activation, dropout, width)


RESVGG_CLASSIFIERS = {"standard": [512, 512], "large": [4096, 4096], "light": [1024, 512]}


class ResVGG(nn.Module):
    """3x3 stem, then per stage `blocks` residual BasicBlocks and a 2x2 max-pool, global average
    pooling, MLP classifier with dropout. Following the report's code, each of the VGG16 layout's
    2-2-3-3-3 entries is a residual block (two convs), not a single conv."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int],
        blocks: list[int],
        hidden: list[int],
        activation: str,
        dropout: float,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            make_activation(activation),
        )
        cin = widths[0]
        self.stage_names = []
        for i, (cout, n) in enumerate(zip(widths, blocks), 1):
            self.add_module(
                f"layer{i}",
                nn.Sequential(*[BasicBlock(cin if j == 0 else cout, cout, activation=activation) for j in range(n)]),
            )
            self.stage_names.append(f"layer{i}")
            cin = cout
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = mlp(cin, hidden, num_classes, activation, dropout)
        course_init_(self)  # the report's code applied the course init to this net too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = self.pool(getattr(self, name)(x))
        return self.classifier(x.mean(dim=(2, 3)))


def _create_resvgg(
    widths: list[int],
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: str = "relu",
    dropout: float = 0.5,
    width: float = 1.0,
    classifier: str = "standard",
    blocks_per_stage: tuple[int, ...] = (2, 2, 3, 3, 3),
) -> nn.Module:
    """The ResVGG family: stage widths x width; classifier standard (512-512), large (4096-4096) or light (1024-512)."""
    if classifier not in RESVGG_CLASSIFIERS:
        raise UserError(f"unknown classifier '{classifier}'; choose one of: {', '.join(RESVGG_CLASSIFIERS)}")
    blocks = list(blocks_per_stage)
    if len(blocks) != len(widths) or any(not isinstance(b, int) or b < 1 for b in blocks):
        raise UserError(f"blocks_per_stage must be {len(widths)} positive integers, got {blocks_per_stage}")
    return ResVGG(
        in_channels,
        num_classes,
        [scaled(c, width) for c in widths],
        blocks,
        RESVGG_CLASSIFIERS[classifier],
        activation,
        dropout,
    )


@register("resvgg16", family=_create_resvgg)
def resvgg16(**kwargs) -> nn.Module:
    """ResVGG16, widths 64-128-256-512-512; classifier "standard" (512-512) or "large" (4096-4096)."""
    return _create_resvgg([64, 128, 256, 512, 512], **kwargs)


@register("resvgg16_light", family=_create_resvgg)
def resvgg16_light(**kwargs) -> nn.Module:
    """ResVGG16 at half width (32-64-128-256-256) with the 1024-512 classifier."""
    return _create_resvgg([32, 64, 128, 256, 256], **{"classifier": "light", **kwargs})
