"""Test-time augmentation: average the logits of a few views of each (normalized) test image.

multiview is airbench's level 2: half the weight on the image and its mirror, half on the two
one-pixel translations (up-left and down-right, reflect-padded), each also averaged with its
mirror - six views, weighted 1/4, 1/4, 1/8, 1/8, 1/8, 1/8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TTA_MODES  # noqa: F401  (defined with the config it checks)


def mirror_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * model(x).float() + 0.5 * model(x.flip(-1)).float()


def translations(x: torch.Tensor, pad: int = 1) -> list[torch.Tensor]:
    """x moved by `pad` pixels towards the bottom-right and towards the top-left (reflect padding)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad,) * 4, mode="reflect")
    return [xp[..., :h, :w], xp[..., 2 * pad :, 2 * pad :]]


def tta_logits(model: nn.Module, x: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """float32 logits of `model` on x under the TTA `mode` (none | flip | multiview)."""
    if mode == "none":
        return model(x).float()
    if mode == "flip":
        return mirror_logits(model, x)
    if mode == "multiview":
        shifted = torch.stack([mirror_logits(model, v) for v in translations(x)]).mean(0)
        return 0.5 * mirror_logits(model, x) + 0.5 * shifted
    raise ValueError(f"unknown TTA mode '{mode}'; choose from: {', '.join(TTA_MODES)}")
