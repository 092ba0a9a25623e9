"""Exponential moving average of the weights (and BN buffers), via torch's AveragedModel."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    # use_buffers: BN running statistics are averaged too, so the EMA model evaluates as is.
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def update_without_sync(ema: AveragedModel, model: nn.Module, decay: float) -> None:
    """ema.update_parameters(model) with the same result but no host sync, so it can be captured in a
    CUDA graph: AveragedModel asks `n_averaged == 0` on the host; here the first update's copy is a
    weight of 1 chosen on the device."""
    first = ema.n_averaged == 0
    w = torch.where(first, 1.0, 1.0 - decay)
    pairs = zip(
        itertools.chain(ema.module.parameters(), ema.module.buffers()),
        itertools.chain(model.parameters(), model.buffers()),
    )
    for e, p in pairs:
        if e.is_floating_point():
            e.lerp_(p, w.to(e.dtype))
        else:  # integer buffers (num_batches_tracked), as torch's EMA function treats them
            e.copy_(torch.where(first, p, e * decay + p * (1 - decay)))
    ema.n_averaged += 1
