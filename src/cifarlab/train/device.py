"""Where a run computes and how: the device, autocast, memory format, seeds."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from ..errors import UserError


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu; anything else as torch spells it."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"data.device must be auto, cpu, cuda or cuda:N, got '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"data.device={name} but CUDA is not available here; use auto or cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA ('auto' = bf16); plain fp32 elsewhere unless asked."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise UserError(f"train.amp must be auto|bf16|fp16|off, got '{amp}'")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def uncached(amp):
    """The autocast `amp` without its weight cache (what a CUDA graph needs), or a null context."""
    if isinstance(amp, torch.autocast):
        return torch.autocast(amp.device, dtype=amp.fast_dtype, cache_enabled=False)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, setting: str) -> bool:
    if setting not in ("auto", "on", "off"):
        raise UserError(f"train.channels_last must be auto|on|off, got '{setting}'")
    return setting == "on" or (setting == "auto" and device.type == "cuda")
