"""Finding layers by name and seeing what they output, for the analyses that hook into a model."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence

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


@contextlib.contextmanager
def capture(
    model: nn.Module, layer_names: Sequence[str], first: bool = False, clone: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on the named modules while the block runs: yields {name: output}, detached.

    A tuple output keeps its first element; a module that forward calls several times keeps its last
    output (first=True: its first); clone=True copies it, so a later in-place op cannot change it.
    The dict is in the order forward first calls the modules; a module never called has no entry.
    The hooks are gone when the block ends, however it ends.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in layer_names:

            def hook(_m, _inp, y, name=name):
                y = y[0] if isinstance(y, (tuple, list)) else y
                if isinstance(y, torch.Tensor) and not (first and name in outputs):
                    outputs[name] = y.detach().clone() if clone else y.detach()

            handles.append(named_layer(model, name).register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """model.eval() for the block, then the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def trace_outputs(
    model: nn.Module, x: torch.Tensor, names: list[str] | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the named modules (default: all) in the order forward first calls them."""
    names = [n for n, _ in model.named_modules() if n] if names is None else names
    with capture(model, names, first=True) as seen, eval_mode(model):
        model(x)
    return [(n, tuple(y.shape)) for n, y in seen.items()]


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
