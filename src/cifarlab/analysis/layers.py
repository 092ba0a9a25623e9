"""Finding layers by name and seeing what they output, for the analyses that hook into a model."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from cifarlab.errors import UserError


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def stage_names(model: nn.Module) -> list[str]:
    """The model's main blocks in forward order (the registry sets them); [] for foreign models."""
    return list(getattr(model, "stage_names", None) or [])


def conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def named_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (dotted); a UserError naming valid layers if there is none."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    known = [n for n in modules if n]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    some = close or (stage_names(model) + conv_names(model))[:12] or known[:12]
    raise UserError(f"no layer {name!r} in {type(model).__name__}; valid layers include: {', '.join(some)}")


@torch.no_grad()
def trace_outputs(model: nn.Module, x: torch.Tensor, names: list[str] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the named modules (default: all) in the order forward first calls them."""
    modules = dict(model.named_modules())
    names = [n for n in modules if n] if names is None else names
    seen: dict[str, tuple[int, ...]] = {}
    handles = []
    for n in names:
        def hook(_m, _inp, out, n=n):
            if n not in seen and isinstance(out, torch.Tensor):
                seen[n] = tuple(out.shape)
        handles.append(named_layer(model, n).register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return list(seen.items())


def default_cam_layer(model: nn.Module, x: torch.Tensor, min_size: int = 4) -> str:
    """The last conv or stage module (in forward order) whose output map is at least min_size on a side.

    On CIFAR ResNets the last stage is 4x4, so this picks it; on nets that pool further it falls back
    to an earlier, finer layer where a class-activation map still has some resolution.
    """
    candidates = list(dict.fromkeys(stage_names(model) + conv_names(model)))
    if not candidates:
        raise UserError(f"{type(model).__name__} has no conv or stage layers; name a layer for the attribution")
    shapes = trace_outputs(model, x[:1], candidates)
    ok = [n for n, s in shapes if len(s) == 4 and min(s[2], s[3]) >= min_size]
    if not ok:
        ok = [n for n, s in shapes if len(s) == 4]
    if not ok:
        raise UserError(f"{type(model).__name__} has no layer with a spatial output; name a layer for the attribution")
    return ok[-1]
