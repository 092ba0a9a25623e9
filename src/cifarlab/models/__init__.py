"""The model zoo: a registry of factory functions and `create_model(name, **options)`.

A factory is `fn(num_classes=10, in_channels=3, **options) -> nn.Module`; its keyword arguments
are the model's options and their defaults (the signature is the documentation). As in timm, the
variants of a family (resnet18/34/50, fastnet/fastnet_small, ...) are `variant(**kwargs)` that
forward to one family factory, registered with `family=` so that its keyword-only parameters are
the options the variant takes. Every model has `stage_names`: dotted names of its main blocks in
forward order, for feature maps and Grad-CAM.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import UserError
from .blocks import ACTIVATIONS, INITS, make_activation, reinit_

__all__ = ["register", "create_model", "model_names", "model_aliases", "count_params", "flops_per_image",
           "make_activation"]  # fmt: skip

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}  # canonical name -> factory
_LOOKUP: dict[str, str] = {}  # lower-case name or alias -> canonical name
_ALIASES: dict[str, str] = {}  # alias -> canonical name
_OPTIONS: dict[str, list[str] | None] = {}  # canonical name -> the options its factory takes (None: any)


def register(name: str, *aliases: str, family: Callable | None = None) -> Callable:
    """Decorator: make a factory available to create_model under `name` (and `aliases`); a variant
    that forwards **kwargs names its `family` factory, whose keyword-only parameters are its options."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for key in (name, *aliases):
            if _LOOKUP.get(key.lower(), name) != name:
                raise ValueError(f"model name '{key}' is already registered for {_LOOKUP[key.lower()]}")
            _LOOKUP[key.lower()] = name
        _FACTORIES[name] = fn
        _ALIASES.update({a: name for a in aliases if a.lower() != name.lower()})
        params = inspect.signature(family or fn).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):  # an open-ended factory takes any option
            _OPTIONS[name] = None
        elif family is None:  # a factory of its own: its parameters are its options
            _OPTIONS[name] = [p.name for p in params]
        else:  # the family's positional parameters are what the variant fixes
            _OPTIONS[name] = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        return fn

    return add


def model_names() -> list[str]:
    return sorted(_FACTORIES, key=str.lower)


def model_aliases() -> dict[str, str]:
    return dict(_ALIASES)


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen (the number the course and the papers quote)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply-adds (MACs) of one forward pass on one image of shape (C, H, W).

    Counted by torch.utils.flop_counter.FlopCounterMode, which counts the matrix products
    (convolutions, linear layers, matmuls) at 2 FLOPs per multiply-add; this returns its total / 2,
    the number papers quote as "FLOPs" for ResNet-18 (0.56 G at 32x32). Normalization,
    activations, pooling and additions are not counted. The model runs once in eval mode on its
    own device, without gradients, and is left in the mode it was in.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def _resolve(name: str) -> str:
    canonical = _LOOKUP.get(str(name).lower())
    if canonical is None:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(model_names())}")
    return canonical


def _check_options(name: str, options: dict[str, Any]) -> None:
    allowed = _OPTIONS[name]
    for key in options:
        if allowed is not None and key not in allowed:
            raise UserError(f"model {name} does not take option '{key}'; it takes: {', '.join(allowed)}")
    act = options.get("activation")
    if act is not None and str(act).lower() not in ACTIVATIONS:
        raise UserError(f"unknown activation '{act}'; choose one of: {', '.join(ACTIVATIONS)}")
    width = options.get("width")
    if width is not None and not (isinstance(width, (int, float)) and width > 0):
        raise UserError(f"width must be a number > 0, got {width!r}")
    dropout = options.get("dropout")
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
    for key in ("num_classes", "in_channels"):
        v = options[key]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise UserError(f"{key} must be a positive integer, got {v!r}")


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: str | None = None,
    width: float | None = None,
    dropout: float | None = None,
    init: str = "default",
    init_std: float = 0.01,
    **args: Any,
) -> nn.Module:
    """Build a registered model. Options left as None take the model's own default.

    init "default" keeps the model's own initialisation (the course init for the course models);
    any other scheme re-initialises every Conv/Linear weight and zeroes the biases.
    """
    canonical = _resolve(name)
    fn = _FACTORIES[canonical]
    given = dict(activation=activation, width=width, dropout=dropout, **args)
    options = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        **{k: v for k, v in given.items() if v is not None},
    }
    _check_options(canonical, options)
    if init not in INITS:  # checked before building: a big model takes a while to build
        raise UserError(f"unknown init '{init}'; choose one of: {', '.join(INITS)}")
    model = reinit_(fn(**options), init, init_std)
    model.cifarlab_name = canonical
    model.cifarlab_options = copy.deepcopy(options)
    for stage in model.stage_names:  # a wrong name here is a bug in the zoo, caught at once
        model.get_submodule(stage)
    return model


# The model files register themselves on import; they come last because they import `register`.
from . import fastnet, lenet, resnet, vgg  # noqa: E402,F401
