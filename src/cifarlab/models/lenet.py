"""LeNet as the DessiLBI authors define it: parameter names match their official checkpoint."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .blocks import make_activation


class LeNet(nn.Module):
    """conv1 (5x5, pad 2) - pool - conv2 (5x5) - pool - conv3 (5x5) - fc1 - fc2, log-softmax output.

    On 28x28 input (MNIST, the default) conv3 gives 1x1x120, as in the official code. Any other
    size (CIFAR's 32x32 gives 2x2) is averaged to 1x1 before fc1, so the model keeps its 61,706
    parameters and its checkpoint layout whatever the input; at 28x28 that pooling is the identity.
    """

    stage_names = ["conv1", "conv2", "conv3"]

    def __init__(self, in_channels: int = 1, num_classes: int = 10, activation: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)
        self.act = make_activation(activation)  # no parameters: the state_dict stays the official one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.conv1(x)), 2)
        x = F.max_pool2d(self.act(self.conv2(x)), 2)
        x = self.act(self.conv3(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.act(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


@register("LeNet", "lenet5")
def lenet(num_classes: int = 10, in_channels: int = 1, activation: str = "relu") -> nn.Module:
    """DessiLBI LeNet: 61,706 parameters on 1 channel, PyTorch default init. Returns log-probabilities."""
    return LeNet(in_channels, num_classes, activation)
