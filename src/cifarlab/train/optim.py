"""Optimizer factory: one builder per name; builders see the model so they can use parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import UserError
from .muon import Muon
from .slbi import SLBI, SLBIAdam, build_slbi, build_slbi_adam
from .tensor_lr import SGD, Adam, AdamW

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_kinds(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by kind: norm (normalization layers), head (the last Linear's weight),
    bias (other 1-D parameters), main (the rest: conv filters, hidden Linear weights)."""
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head = {id(linears[-1].weight)} if linears else set()
    kinds: dict[str, list[nn.Parameter]] = {"main": [], "norm": [], "bias": [], "head": []}
    for p in model.parameters():
        if p.requires_grad:
            kind = "norm" if id(p) in norm else "head" if id(p) in head else "bias" if p.ndim < 2 else "main"
            kinds[kind].append(p)
    return kinds


def scaled_groups(kinds: dict[str, list], cfg: OptimConfig) -> list[dict]:
    """One group per kind with its lr multiplier; weight decay divided by it, so the decay per step
    (lr x weight_decay) is the same in every group (airbench's bias_scaler)."""
    groups = []
    for kind, params in kinds.items():
        if not params:
            continue
        scale = {"norm": cfg.norm_lr_scale, "bias": cfg.bias_lr_scale, "head": cfg.head_lr_scale}.get(kind, 1.0)
        if scale <= 0:
            raise UserError(f"optim.{kind}_lr_scale must be > 0, got {scale}")
        skip = cfg.wd_skip_1d and kind in ("norm", "bias")
        wd = 0.0 if skip else cfg.weight_decay / scale
        groups.append({"params": params, "lr": cfg.lr * scale, "weight_decay": wd})
    return groups


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Weight decay on everything, or (wd_skip_1d) not on biases and norm parameters;
    per-kind groups when a *_lr_scale is set."""
    if (cfg.norm_lr_scale, cfg.bias_lr_scale, cfg.head_lr_scale) != (1.0, 1.0, 1.0):
        return scaled_groups(param_kinds(model), cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.wd_skip_1d:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _no_args(cfg: OptimConfig) -> None:
    if cfg.args:
        raise UserError(f"optimizer '{cfg.name}' takes no optim.args (got {', '.join(cfg.args)})")


def _builds(cls: type) -> Callable:
    """Mark a builder with the class it builds: graph.why_not asks that class (tensor_lr) by name."""

    def mark(build: Callable) -> Callable:
        build.cls = cls
        return build

    return mark


def _sgd(momentum: bool, nesterov: bool) -> Callable:
    @_builds(SGD)
    def build(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        _no_args(cfg)
        m = cfg.momentum if momentum else 0.0
        return SGD(param_groups(model, cfg), lr=cfg.lr, momentum=m, nesterov=nesterov and m > 0)

    return build


def _adam(cls: type) -> Callable:
    @_builds(cls)
    def build(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        _no_args(cfg)
        return cls(param_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)

    return build


@_builds(torch.optim.RMSprop)
def _rmsprop(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    _no_args(cfg)
    return torch.optim.RMSprop(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps)


@_builds(torch.optim.Adagrad)
def _adagrad(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    _no_args(cfg)
    return torch.optim.Adagrad(param_groups(model, cfg), lr=cfg.lr, eps=cfg.eps)


MUON_ARGS = {"muon_momentum": 0.95, "nesterov": True, "ns_steps": 3, "normalize": True}


@_builds(Muon)
def _muon(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Muon (optim.lr, args.muon_momentum) on the main weights (conv filters, hidden Linear weights);
    Nesterov SGD (optim.momentum) on norm parameters, biases and the head, each lr = optim.lr x its
    *_lr_scale. With args.normalize (default) the Muon weights get no weight decay: their norm is fixed."""
    unknown = set(cfg.args) - set(MUON_ARGS)
    if unknown:
        raise UserError(f"optimizer 'muon' takes optim.args {', '.join(MUON_ARGS)}; got {', '.join(sorted(unknown))}")
    a = {**MUON_ARGS, **cfg.args}
    kinds = param_kinds(model)
    main = kinds.pop("main")
    groups = scaled_groups(kinds, cfg)
    for g in groups:
        g.update(muon=False, momentum=cfg.momentum)
    if main:
        groups.insert(
            0,
            {
                "params": main,
                "lr": cfg.lr,
                "muon": True,
                "momentum": a["muon_momentum"],
                "weight_decay": 0.0 if a["normalize"] else cfg.weight_decay,
            },
        )
    return Muon(
        groups, lr=cfg.lr, nesterov=bool(a["nesterov"]), ns_steps=int(a["ns_steps"]), normalize=bool(a["normalize"])
    )


# "sgd" is plain SGD unless momentum > 0 is set through "momentum"/"nesterov";
# SGD with momentum is the name "momentum".
OPTIMIZERS: dict[str, Callable] = {
    "sgd": _sgd(momentum=False, nesterov=False),
    "momentum": _sgd(momentum=True, nesterov=False),
    "nesterov": _sgd(momentum=True, nesterov=True),
    "adam": _adam(Adam),
    "adamw": _adam(AdamW),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "slbi": _builds(SLBI)(build_slbi),
    "slbi_adam": _builds(SLBIAdam)(build_slbi_adam),
    "muon": _muon,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    builder = OPTIMIZERS.get(cfg.name.lower())
    if builder is None:
        raise UserError(f"unknown optimizer '{cfg.name}'; choose from: {', '.join(OPTIMIZERS)}")
    return builder(model, cfg)


def tensor_lr_names() -> list[str]:
    """The optimizers whose step takes its learning rates as a device tensor (the captured step)."""
    return [name for name, build in OPTIMIZERS.items() if getattr(build.cls, "tensor_lr", False)]
