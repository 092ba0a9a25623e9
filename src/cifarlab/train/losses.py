"""Losses of SPEC.md 1.3, each a function (logits, int labels) -> scalar mean loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import TrainConfig, choices
from ..data import mixed_loss
from ..errors import UserError

LOSSES = choices(TrainConfig, "loss")  # declared on the field train.loss


def _smoothed(y: torch.Tensor, num_classes: int, smoothing: float, dtype) -> torch.Tensor:
    onehot = F.one_hot(y, num_classes).to(dtype)
    return onehot * (1 - smoothing) + smoothing / num_classes


def make_loss(name: str, label_smoothing: float = 0.0, num_classes: int = 10) -> Callable:
    """Regression-style losses (mse, smooth_l1) compare raw logits with the (smoothed) one-hot target."""
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if name == "nll":
        # NLL on log-softmax; log_softmax is idempotent, so models that already return
        # log-probabilities (LeNet) give the same value.
        return lambda logits, y: F.nll_loss(F.log_softmax(logits.float(), dim=1), y)
    if name == "mse":
        return lambda logits, y: F.mse_loss(logits.float(), _smoothed(y, num_classes, label_smoothing, torch.float32))
    if name == "smooth_l1":
        return lambda logits, y: F.smooth_l1_loss(
            logits.float(), _smoothed(y, num_classes, label_smoothing, torch.float32)
        )
    if name == "kl":
        # KL divergence to smoothed targets; with smoothing 0 it equals cross-entropy.
        return lambda logits, y: F.kl_div(
            F.log_softmax(logits.float(), dim=1),
            _smoothed(y, num_classes, label_smoothing, torch.float32),
            reduction="batchmean",
        )
    raise UserError(f"unknown loss '{name}'; choose from: {', '.join(LOSSES)}")


def l1_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Sum of |w| over weight tensors of rank >= 2 (conv kernels, linear weights)."""
    return sum(p.abs().sum() for p in model.parameters() if p.ndim >= 2)


class TrainingLoss:
    """What the optimizer minimises: the loss (mean over the batch, mixup/cutmix aware), times the
    global batch size under reduction 'sum', plus optim.l1 * |w|. Returns (mean loss, total)."""

    def __init__(self, loss_fn: Callable, *, reduction: str = "mean", world: int = 1, l1: float = 0.0):
        self.loss_fn, self.summed, self.world, self.l1 = loss_fn, reduction == "sum", world, l1

    def __call__(self, logits: torch.Tensor, y, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        loss = mixed_loss(self.loss_fn, logits, y)
        # sum: the gradient of the (global) batch's summed loss; DDP averages over ranks, hence the world size
        total = loss * (logits.shape[0] * self.world) if self.summed else loss
        return loss, total + self.l1 * l1_penalty(model) if self.l1 > 0 else total
