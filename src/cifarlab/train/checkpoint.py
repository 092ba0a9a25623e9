"""Checkpoints: what a run saves, and rebuilding a model from one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..run import atomic_torch_save


def save_checkpoint(path: Path, **state) -> None:
    atomic_torch_save(state, path)


def checkpoint_path(path: str | Path, which: str = "best.pt") -> Path:
    """A checkpoint file, or a run folder (then its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in (which, "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise UserError(f"run folder {p} holds no checkpoint (best.pt or last.pt)")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    return p


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    p = checkpoint_path(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated file, not a torch file, ...
        raise UserError(f"cannot read checkpoint {p}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{p} is not a cifarlab checkpoint (no 'model' entry)")
    return ckpt


def load_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """load_state_dict with a one-line error when the architectures differ."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        name = getattr(model, "cifarlab_name", type(model).__name__)
        raise UserError(f"{source} does not fit model {name}: {first[:200]}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained with; EMA weights when the run kept them."""
    from ..models import create_model

    ckpt = read_checkpoint(path)
    name = ckpt.get("model_name")
    if not name:
        raise UserError(f"{checkpoint_path(path)} does not say which model it holds (no 'model_name')")
    model = create_model(name, **ckpt.get("model_options", {}))
    state = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
    load_state(model, state, f"checkpoint {checkpoint_path(path)}")
    return model.to(device).eval(), ckpt
