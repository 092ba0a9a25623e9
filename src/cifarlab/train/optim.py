"""Optimizer factory: one builder per name; builders see the model so they can use parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import UserError

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
    from .slbi import build_slbi

    return build_slbi(model, cfg)


def _slbi_adam(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    from .slbi import build_slbi_adam

    return build_slbi_adam(model, cfg)


MUON_ARGS = {"muon_momentum": 0.95, "nesterov": True, "ns_steps": 3, "normalize": True}


def _muon(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Muon (optim.lr, args.muon_momentum) on the main weights (conv filters, hidden Linear weights);
    Nesterov SGD (optim.momentum) on norm parameters, biases and the head, each lr = optim.lr x its
    *_lr_scale. With args.normalize (default) the Muon weights get no weight decay: their norm is fixed."""
    from .muon import Muon

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
    "adam": _adam(torch.optim.Adam),
    "adamw": _adam(torch.optim.AdamW),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "slbi": _slbi,
    "slbi_adam": _slbi_adam,
    "muon": _muon,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    builder = OPTIMIZERS.get(cfg.name.lower())
    if builder is None:
        raise UserError(f"unknown optimizer '{cfg.name}'; choose from: {', '.join(OPTIMIZERS)}")
    return builder(model, cfg)


# ---------------------------------------------------------------- the step with learning rates on the device

# The optimizers whose step can take its learning rates as a device tensor (the captured step, graph.py).
TENSOR_LR = ("sgd", "momentum", "nesterov", "adam", "adamw", "muon")


def init_state(opt: torch.optim.Optimizer) -> None:
    """Create the state the first step would create, at zero, on the parameters' device: a captured step
    must not allocate it or branch on whether it exists. Zero momentum gives the first step torch's
    result (m * 0 + g = g); Adam's step count moves to the device so bias correction needs no sync."""
    adam = isinstance(opt, torch.optim.Adam | torch.optim.AdamW)
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if adam:
                step = state.get("step", torch.zeros(()))
                state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device)
                state.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
                state.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))
            elif group.get("momentum", 0) != 0 and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


@torch.no_grad()
def step_with_lr(opt: torch.optim.Optimizer, lrs: torch.Tensor) -> None:
    """One step of `opt` with group i's learning rate lrs[i] (a device tensor): the same update as
    opt.step(), with no Python float baked in, so a captured step follows the schedule. Call
    init_state(opt) first. Parameters without a gradient are skipped, as torch does."""
    from .muon import Muon

    for i, group in enumerate(opt.param_groups):
        params = [p for p in group["params"] if p.grad is not None]
        if isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
            decoupled = group.get("decoupled_weight_decay", isinstance(opt, torch.optim.AdamW))
            _adam_step(opt, group, params, lrs[i], decoupled)
        elif isinstance(opt, Muon) and group["muon"]:
            _muon_step(opt, group, params, lrs[i])
        elif isinstance(opt, torch.optim.SGD | Muon):
            _sgd_step(opt, group, params, lrs[i])
        else:
            raise TypeError(f"{type(opt).__name__} takes no tensor learning rate")


def _momentum(opt, group: dict, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    m = group.get("momentum", 0)
    if m == 0:
        return g
    buf = opt.state[p]["momentum_buffer"]
    buf.mul_(m).add_(g)  # dampening 0: the builders never set it
    return g.add(buf, alpha=m) if group["nesterov"] else buf


def _sgd_step(opt, group: dict, params: list, lr: torch.Tensor) -> None:
    wd = group["weight_decay"]
    for p in params:
        g = p.grad.add(p, alpha=wd) if wd else p.grad
        p.sub_(_momentum(opt, group, p, g) * lr)


def _muon_step(opt, group: dict, params: list, lr: torch.Tensor) -> None:
    wd = group["weight_decay"]
    for p in params:
        g = _momentum(opt, group, p, p.grad)
        if group["normalize"]:
            p.mul_(p.shape[0] ** 0.5 / p.norm())
        elif wd:
            p.mul_(1 - lr * wd)
        update = opt._orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
        p.sub_(update.to(p.dtype) * lr)


def _adam_step(opt, group: dict, params: list, lr: torch.Tensor, decoupled: bool) -> None:
    (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
    for p in params:
        state, g = opt.state[p], p.grad
        if wd and decoupled:
            p.mul_(1 - lr * wd)
        elif wd:
            g = g.add(p, alpha=wd)
        step = state["step"]
        step.add_(1)
        state["exp_avg"].lerp_(g, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        # bias corrections in float64, as torch computes them from the step count on the host
        t = step.double()
        denom = (state["exp_avg_sq"].sqrt() / (1 - b2**t).sqrt().float()).add_(eps)
        p.sub_(state["exp_avg"] / denom * (lr.double() / (1 - b1**t)).float())
