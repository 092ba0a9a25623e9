"""Optimizer factory: one builder per name; builders see the model so they can use parameter names."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import UserError


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Weight decay on everything, or (wd_skip_1d) not on biases and norm parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.wd_skip_1d:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _no_args(cfg: OptimConfig) -> None:
    if cfg.args:
        raise UserError(f"optimizer '{cfg.name}' takes no optim.args (got {', '.join(cfg.args)})")


def _sgd(momentum: bool, nesterov: bool) -> Callable:
    def build(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        _no_args(cfg)
        m = cfg.momentum if momentum else 0.0
        return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=m, nesterov=nesterov and m > 0)

    return build


def _adam(cls: type) -> Callable:
    def build(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        _no_args(cfg)
        return cls(param_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)

    return build


def _rmsprop(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    _no_args(cfg)
    return torch.optim.RMSprop(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps)


def _adagrad(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    _no_args(cfg)
    return torch.optim.Adagrad(param_groups(model, cfg), lr=cfg.lr, eps=cfg.eps)


def _slbi(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    from ..sparsity.slbi import build_slbi

    return build_slbi(model, cfg)


def _slbi_adam(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    from ..sparsity.slbi import build_slbi_adam

    return build_slbi_adam(model, cfg)


# "sgd" is plain SGD unless momentum > 0 is set through "momentum"/"nesterov";
# SGD with momentum is the name "momentum".
OPTIMIZERS: dict[str, Callable] = {
    "sgd": _sgd(momentum=False, nesterov=False),
    "momentum": _sgd(momentum=True, nesterov=False),
    "nesterov": _sgd(momentum=True, nesterov=True),
    "adam": _adam(torch.optim.Adam),
    "adamw": _adam(torch.optim.AdamW),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "slbi": _slbi,
    "slbi_adam": _slbi_adam,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    builder = OPTIMIZERS.get(cfg.name.lower())
    if builder is None:
        raise UserError(f"unknown optimizer '{cfg.name}'; choose from: {', '.join(OPTIMIZERS)}")
    return builder(model, cfg)
