"""Pieces the networks share: activations, initialisation schemes, residual blocks, MLP heads.

Nothing here is in-place (no ReLU(inplace=True), no `out += x`): feature-map hooks, Grad-CAM and
torch.func all need every module's output to stay as it was produced.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # PyTorch default slope 0.01
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

INITS = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "normal")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (case-insensitive)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise UserError(f"unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, never below 1."""
    return max(1, int(round(channels * width)))


# ---------------------------------------------------------------- initialisation


def course_init_(model: nn.Module) -> nn.Module:
    """The course's init: Xavier-normal Conv/Linear weights, zero biases, BatchNorm weight 1 bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


@torch.no_grad()
def reinit_(model: nn.Module, scheme: str, std: float = 0.01) -> nn.Module:
    """Re-initialise every Conv/Linear weight with `scheme` and zero its bias ("default" keeps all)."""
    if scheme not in INITS:
        raise UserError(f"unknown init '{scheme}'; choose one of: {', '.join(INITS)}")
    if scheme == "default":
        return model
    if scheme == "normal" and not std > 0:
        raise UserError(f"init_std must be > 0, got {std}")
    fill = {
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "xavier_normal": nn.init.xavier_normal_,
        "xavier_uniform": nn.init.xavier_uniform_,
        "normal": lambda w: nn.init.normal_(w, 0.0, std),
    }[scheme]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fill(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------- blocks


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def norm_or_identity(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs (+BN) with a shortcut: identity, or a 1x1 projection when the shape changes.

    residual=False drops the shortcut, which gives the plain twin of the same block for ablations.
    """

    expansion = 1

    def __init__(
        self, cin: int, cout: int, stride: int = 1, activation: str = "relu", bn: bool = True, residual: bool = True
    ):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, bias=not bn)
        self.bn1 = norm_or_identity(cout, bn)
        self.act1 = make_activation(activation)
        self.conv2 = conv3x3(cout, cout, bias=not bn)
        self.bn2 = norm_or_identity(cout, bn)
        self.act2 = make_activation(activation)
        self.residual = residual
        self.shortcut = nn.Identity()
        if residual and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=not bn), norm_or_identity(cout, bn)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), each with BN, plus the shortcut: the ResNet-50 block."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, activation: str = "relu"):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act3 = make_activation(activation)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


def mlp(
    in_features: int,
    hidden: list[int] | tuple[int, ...] | None,
    out_features: int,
    activation: str = "relu",
    dropout: float = 0.0,
    bn: bool = False,
) -> nn.Module:
    """Classifier: [Linear (+BN1d), act, Dropout] per hidden size, then Linear; a bare Linear if no hidden.

    With no hidden layer, dropout (if any) goes before the final Linear.
    """
    hidden = list(hidden or [])
    if any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in hidden):
        raise UserError(f"head/classifier hidden sizes must be positive integers, got {hidden}")
    if not hidden:
        return (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features))
            if dropout > 0
            else nn.Linear(in_features, out_features)
        )
    layers: list[nn.Module] = []
    for h in hidden:
        layers.append(nn.Linear(in_features, h))
        if bn:
            layers.append(nn.BatchNorm1d(h))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = h
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)
