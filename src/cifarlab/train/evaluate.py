"""Evaluate a checkpoint on a data source: accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch

from ..data import DeviceLoader
from .checkpoint import checkpoint_data, load_model
from .device import autocast, pick_device
from .engine import check_image_size, predict


def evaluate_checkpoint(path, source: str | None = None, tta: str = "none", device: str = "auto") -> dict:
    dev = pick_device(device)
    model, ckpt = load_model(path, dev)
    ds = checkpoint_data(ckpt, source)
    shape = ckpt.get("image_shape")
    check_image_size(model, ds.image_shape, ckpt.get("model_name", "of this checkpoint"), ds.origin or ds.name, shape)
    mean, std = ckpt.get("mean") or [0.0] * ds.test_x.shape[-1], ckpt.get("std") or [1.0] * ds.test_x.shape[-1]
    loader = DeviceLoader(
        ds.test_x, ds.test_y, 1000, shuffle=False, drop_last=False, seed=0, device=dev, mean=mean, std=std
    )
    amp = ckpt.get("config", {}).get("train", {}).get("amp", "auto")
    logits, y = predict(model, loader, tta, autocast(dev, amp))
    pred = logits.argmax(1)
    k = len(ds.classes)
    conf = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k).cpu()
    per_class = (conf.diag().float() / conf.sum(1).clamp(min=1).float()).tolist()
    return {
        "dataset": ds.name,
        "n": int(len(y)),
        "accuracy": (pred == y).float().mean().item(),
        "loss": torch.nn.functional.cross_entropy(logits, y).item(),
        "per_class": dict(zip(ds.classes, per_class)),
        "confusion": conf.tolist(),
        "classes": list(ds.classes),
    }
