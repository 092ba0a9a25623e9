"""The model zoo from Python: `create_model(name)` as in timm, `list_models()`, `count_params(model)`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import models as _zoo
from .errors import speaks_python


@speaks_python
def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **options: Any) -> nn.Module:
    """A network of the zoo by name (`list_models()`), freshly initialised.

    options: what the model takes (`activation`, `width`, `dropout`, `init`, and its own, e.g.
    `stages=[8, 16]` for plainnet). The module is plain PyTorch: it takes normalized N x C x H x W floats.
    """
    return _zoo.create_model(name, num_classes=num_classes, in_channels=in_channels, **options)


def list_models(aliases: bool = False) -> list[str]:
    """The zoo's model names (with aliases=True, their aliases too)."""
    names = _zoo.model_names()
    return sorted([*names, *_zoo.model_aliases()], key=str.lower) if aliases else names


def count_params(model: nn.Module) -> int:
    """Every parameter of the model, trainable or frozen."""
    return _zoo.count_params(model)
