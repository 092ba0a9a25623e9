"""Augmentation as a few tensor ops per batch, on the batch's device, driven by the loader's generator.

Order (the rest of the code relies on it): crop / translate / flips / rotation / colour jitter act on
[0, 1] floats, the loader then normalizes, and cutout / CutMix / Mixup act on the normalized batch
(so cutout's zeros are the dataset mean, as in DeVries & Taylor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig, check
from ..errors import UserError


class Mixed(NamedTuple):
    """Labels of a CutMix/Mixup batch: the target is lam * y_a + (1 - lam) * y_b."""

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float


def mixed_loss(loss_fn: Callable, logits: torch.Tensor, y: torch.Tensor | Mixed) -> torch.Tensor:
    if isinstance(y, Mixed):
        return y.lam * loss_fn(logits, y.y_a) + (1 - y.lam) * loss_fn(logits, y.y_b)
    return loss_fn(logits, y)


class Augment:
    """The augmentations an AugmentConfig asks for; holds no random state of its own."""

    def __init__(self, cfg: AugmentConfig):
        check(cfg, "augment.")  # the ranges and choices its fields declare
        self.cfg = cfg

    @property
    def geometric(self) -> bool:  # anything for __call__ to do
        c = self.cfg
        return bool(c.crop_padding or c.translate or c.hflip or c.alternating_flip or c.vflip
                    or c.rotation or c.color_jitter)  # fmt: skip

    @property
    def mixing(self) -> bool:  # anything for mix to do
        c = self.cfg
        return bool(c.cutout or ((c.cutmix or c.mixup) and c.mix_prob > 0))

    @property
    def active(self) -> bool:
        return self.geometric or self.mixing

    def __call__(self, x: torch.Tensor, gen: torch.Generator, epoch: int = 0, idx: torch.Tensor | None = None):
        """x: float (N, C, H, W) in [0, 1]; idx: the images' dataset indices (for alternating_flip)."""
        c = self.cfg
        if c.crop_padding:
            x = random_crop(x, c.crop_padding, gen, c.crop_mode)
        if c.translate:
            x = random_crop(x, c.translate, gen, "reflect")
        if c.alternating_flip:
            if idx is None:
                raise ValueError("alternating_flip needs the batch's dataset indices (idx)")
            x = flip_where(x, alternating_flip_mask(idx, epoch), dim=3)
        elif c.hflip:
            x = flip_where(x, _coin(x, gen), dim=3)
        if c.vflip:
            x = flip_where(x, _coin(x, gen), dim=2)
        if c.rotation:
            x = rotate(x, (torch.rand(len(x), generator=gen, device=x.device) * 2 - 1) * c.rotation)
        if c.color_jitter:
            f = 1 + (torch.rand(3, len(x), generator=gen, device=x.device) * 2 - 1) * c.color_jitter
            x = adjust_colour(x, *f.clamp_min(0))
        return x

    def mix(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, cpu_gen: torch.Generator | None = None):
        """Cutout, then CutMix or Mixup on a normalized batch -> (x, y) or (x, Mixed).

        Per-image draws use `gen` (on the batch's device); the per-batch scalars (mix or not, which,
        lam, the box) come from `cpu_gen` so that nothing waits on the device.
        """
        c = self.cfg
        cpu = cpu_gen if cpu_gen is not None else gen
        if cpu.device.type != "cpu":
            raise ValueError("Augment.mix needs a CPU generator (cpu_gen) when gen is on " + str(cpu.device))
        if c.cutout:
            x = cutout(x, c.cutout, gen)
        if not (c.cutmix or c.mixup):
            return x, y
        u = torch.rand(2, generator=cpu).tolist()
        if u[0] >= c.mix_prob:
            return x, y
        use_cutmix = c.cutmix > 0 and (c.mixup == 0 or u[1] < 0.5)  # both on: pick one per batch
        alpha = c.cutmix if use_cutmix else c.mixup
        lam = _beta(alpha, cpu)
        perm = torch.randperm(len(x), generator=gen, device=x.device)
        if use_cutmix:
            return cutmix(x, y, lam, perm, cpu)
        return mixup(x, y, lam, perm)


def _coin(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(len(x), generator=gen, device=x.device) < 0.5


def _beta(alpha: float, cpu: torch.Generator) -> float:
    # torch's Beta sampler takes no generator; numpy's, seeded from ours, keeps it a function of the seed
    seed = int(torch.randint(0, 2**62, (1,), generator=cpu))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


# ---------------------------------------------------------------- the ops (each usable on its own)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, mode: str = "zero") -> torch.Tensor:
    """Pad by `padding` (zeros or reflection) and cut a random H x W window per image."""
    n, c, h, w = x.shape
    if mode == "reflect" and padding >= min(h, w):
        raise UserError(f"reflect padding {padding} needs images larger than {padding} pixels, got {h}x{w}")
    xp = F.pad(x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant")
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=gen, device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (n, h)
    cols = dx + torch.arange(w, device=x.device)  # (n, w)
    xp = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return xp.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def flip_where(x: torch.Tensor, mask: torch.Tensor, dim: int = 3) -> torch.Tensor:
    """Flip the images where mask is true (dim 3: left-right, dim 2: up-down)."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)


def alternating_flip_mask(idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """Each image flips on alternate epochs, starting from a fixed pseudo-random half (airbench):

    every image is seen both ways in any two consecutive epochs, instead of by chance.
    """
    h = idx.to(torch.int64) & 0xFFFFFFFF
    for _ in range(2):  # a 32-bit integer hash (small constants: no int64 overflow on any device)
        h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return ((h + epoch) & 1).bool()


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (degrees, counter-clockwise) about the centre; corners fill with 0."""
    a = degrees.to(x.dtype) * (math.pi / 180)
    cos, sin, zero = a.cos(), a.sin(), torch.zeros_like(a)
    # affine_grid maps output to input coordinates: the inverse rotation
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def adjust_colour(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                  saturation: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Per-image brightness, contrast, saturation factors (1 = unchanged), as torchvision defines them."""
    b, c, s = (f.to(x.dtype).view(-1, 1, 1, 1) for f in (brightness, contrast, saturation))
    x = (x * b).clamp(0, 1)
    m = _gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - m) * c + m).clamp(0, 1)
    if x.shape[1] == 3:
        g = _gray(x)
        x = ((x - g) * s + g).clamp(0, 1)
    return x


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image, placed uniformly and always whole inside the image."""
    n, _, h, w = x.shape
    size = min(size, h, w)
    y0 = torch.randint(0, h - size + 1, (n, 1, 1), generator=gen, device=x.device)
    x0 = torch.randint(0, w - size + 1, (n, 1, 1), generator=gen, device=x.device)
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (r >= y0) & (r < y0 + size) & (c >= x0) & (c < x0 + size)
    return x.masked_fill(inside[:, None], 0)


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, Mixed]:
    return lam * x + (1 - lam) * x[perm], Mixed(y, y[perm], lam)


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor,
           cpu: torch.Generator) -> tuple[torch.Tensor, Mixed]:  # fmt: skip
    """Paste one box of the permuted batch (area about 1 - lam, clipped at the border, as in
    Yun et al.'s code); lam is then corrected to the pasted area."""
    h, w = x.shape[2:]
    r = math.sqrt(1 - lam)
    ch, cw = int(h * r), int(w * r)
    cy, cx = (torch.randint(0, h, (1,), generator=cpu).item(), torch.randint(0, w, (1,), generator=cpu).item())
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    return out, Mixed(y, y[perm], 1 - (y2 - y1) * (x2 - x1) / (h * w))
