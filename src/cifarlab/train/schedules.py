"""Learning-rate schedules of SPEC.md 1.3, built from torch's schedulers and stepped once per batch.

Config times are in epochs (fractions allowed); they are turned into steps here, so every schedule
is smooth within an epoch and `warmup_epochs` composes with any of them.
"""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler as S

from ..config import ScheduleConfig
from ..errors import UserError

SCHEDULES = ("none", "step", "multistep", "cosine", "cosine_restarts", "onecycle", "linear")


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int):
    name = cfg.name.lower()
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule '{cfg.name}'; choose from: {', '.join(SCHEDULES)}")
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if name == "onecycle":  # has its own warm-up (pct_start)
        max_lr = [g["lr"] for g in opt.param_groups]
        return S.OneCycleLR(
            opt,
            max_lr=max_lr,
            total_steps=total,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
        )
    rest = max(1, total - warm)
    ep = lambda e: max(1, int(round(e * steps_per_epoch)))  # noqa: E731  epochs -> steps
    if name == "none":
        main = S.LambdaLR(opt, lambda step: 1.0)
    elif name == "step":
        main = S.StepLR(opt, step_size=ep(cfg.step_size), gamma=cfg.gamma)
    elif name == "multistep":
        main = S.MultiStepLR(opt, milestones=[ep(m) - warm for m in cfg.milestones], gamma=cfg.gamma)
    elif name == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=rest, eta_min=cfg.min_lr)
    elif name == "cosine_restarts":
        main = S.CosineAnnealingWarmRestarts(opt, T_0=ep(cfg.t0), T_mult=cfg.t_mult, eta_min=cfg.min_lr)
    else:  # linear decay to lr * end_factor
        main = S.LinearLR(opt, start_factor=1.0, end_factor=max(cfg.end_factor, 1e-8), total_iters=rest)
    if warm <= 0:
        return main
    warmup = S.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm)
    return S.SequentialLR(opt, [warmup, main], milestones=[warm])
