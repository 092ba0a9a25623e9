"""A loader that keeps the whole split on the device as uint8 and builds each batch with tensor ops.

No workers, no per-image Python: a batch is an index into the device copy, a cast, the Augment ops,
and a normalization. Order and augmentation are a pure function of (seed, epoch), so a run resumed
at an epoch boundary sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ..errors import UserError
from .augment import Augment, Mixed


def epoch_seed(seed: int, epoch: int) -> int:
    # distinct, well-spread seeds per (seed, epoch); Generator.manual_seed takes 64 bits
    return (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + 1) % 2**63


class DeviceLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        augment: Augment | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        c = images.shape[-1]
        if len(mean) not in (1, c) or len(std) not in (1, c):
            raise ValueError(f"mean/std need 1 or {c} values, got {len(mean)} and {len(std)}")
        self.device = torch.device(device)  # resolved by the caller (train.device.pick_device)
        self.images = images.to(self.device)  # once; every batch is an index into this copy
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.augment = augment if augment is not None and augment.active else None
        self.channels_last, self.dtype = channels_last, dtype
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.gen = torch.Generator(device=self.device)  # per-image draws, on the device
        self.cpu_gen = torch.Generator()  # per-batch scalars (mix or not, lam), no device sync

    def set_epoch(self, epoch: int) -> None:
        """The next pass uses this epoch's order and augmentation."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | Mixed]]:
        # each pass then moves to the next epoch, so a loop that never calls set_epoch still reshuffles
        epoch, self.epoch = self.epoch, self.epoch + 1
        s = epoch_seed(self.seed, epoch)
        self.gen.manual_seed(s)
        self.cpu_gen.manual_seed(s)
        n, bs = len(self.labels), self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=self.gen, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        aug = self.augment
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs]
            # uint8 NHWC -> NCHW is a view with channels_last strides; the cast keeps that layout
            x = self.images[idx].permute(0, 3, 1, 2).float().div_(255)
            y = self.labels[idx]
            if aug is not None and aug.geometric:
                x = aug(x, self.gen, epoch, idx)
            x = (x - self.mean) / self.std
            if aug is not None and aug.mixing:
                x, y = aug.mix(x, y, self.gen, self.cpu_gen)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            yield x.to(dtype=self.dtype, memory_format=fmt), y
