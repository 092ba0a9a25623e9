"""flops_per_image: multiply-adds of one forward pass, checked against hand counts and ResNet-18's 0.56 G."""

import pytest
from torch import nn

from cifarlab.models import create_model, flops_per_image


def test_small_conv_net_matches_the_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),  # 10x10 out
        nn.Conv2d(8, 16, 3, stride=2),  # 4x4 out
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise: C_in per group is 1
        nn.MaxPool2d(2), nn.Flatten(),  # 16 x 2 x 2
        nn.Linear(64, 10),
    )  # fmt: skip
    # conv: H_out * W_out * C_out * (C_in / groups) * k * k; linear: in * out (biases, BN, ReLU, pooling: 0)
    want = 10 * 10 * 8 * 3 * 9 + 4 * 4 * 16 * 8 * 9 + 4 * 4 * 16 * 1 * 9 + 64 * 10
    assert flops_per_image(net, (3, 10, 10)) == want
    assert net.training  # left in the mode it was in
    net.eval()
    assert flops_per_image(net, (3, 10, 10)) == want and not net.training


def test_lenet_at_28x28():
    macs = 28 * 28 * 6 * 1 * 25 + 10 * 10 * 16 * 6 * 25 + 1 * 1 * 120 * 16 * 25 + 120 * 84 + 84 * 10
    assert flops_per_image(create_model("lenet", in_channels=1), (1, 28, 28)) == macs


def test_resnet18_at_32x32_is_about_056_gmacs():
    assert flops_per_image(create_model("resnet18"), (3, 32, 32)) == pytest.approx(0.56e9, rel=0.03)


def test_cifarlab_models_lists_macs(capsys):
    from cifarlab.cli.train import cmd_models

    cmd_models(None)
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["model"][2] == "MMACs"
    assert float(lines["resnet18"][2].replace(",", "")) == pytest.approx(555.4, abs=1)
    assert lines["LeNet"][3] == "1x28x28" and lines["resnet18"][3] == "3x32x32"
