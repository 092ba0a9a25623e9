"""The analyses as functions of (model, images): numpy arrays back, nothing written to disk.

Each takes any nn.Module (then x is what it takes: normalized N x C x H x W floats) or a
`Classifier` from load()/fit() (then x may be raw images: uint8 or [0, 1] floats, as it takes them).
They call the same library functions `cifarlab inspect` calls, so the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis import attribution, features
from ..analysis import bn_probe as _probes
from ..analysis import hessian as _hessian
from ..analysis import landscape as _landscape
from ..analysis.filters import conv_of, filter_images, first_conv
from ..analysis.layers import conv_names, stage_names
from ..errors import UserError
from .classifier import Classifier, unwrap
from .errors import speaks_python

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Layer = str | nn.Module


def _labels(y: Any, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(y).to(x.device).long()
    if t.shape != (len(x),):
        raise UserError(f"y must hold one label per image ({len(x)}), got shape {tuple(t.shape)}")
    return t


def _name(model: nn.Module, layer: Layer) -> str:
    if isinstance(layer, str):
        return layer
    for name, m in model.named_modules():
        if m is layer:
            return name
    raise UserError(f"layer {type(layer).__name__} is not a submodule of {type(model).__name__}")


@speaks_python
def gradcam(
    model: nn.Module, x: Any, target: int | Sequence[int] | torch.Tensor | None = None, layer: Layer | None = None
) -> np.ndarray:
    """Grad-CAM maps, N x H x W (the input's size), for `target` (None: each image's predicted class;
    an int: that class for all; else one class per image) at `layer` (a name such as "layer4", the
    module itself such as model.layer4[-1], or None: the last conv/stage whose map is still >= 4 x 4)."""
    net, x = unwrap(model, x)
    t = target if target is None or isinstance(target, int) else torch.as_tensor(target)
    return attribution.gradcam(net, x, t, layer).cpu().numpy()


@speaks_python
def filters(model: nn.Module, layer: Layer | None = None, as_images: bool = False) -> np.ndarray:
    """A conv layer's kernels, O x C x kh x kw (default: the first conv). as_images: each filter scaled
    to [0, 1] for imshow, O x kh x kw x 3 for RGB inputs (else O x kh x kw, the mean over inputs)."""
    net = model.model if isinstance(model, Classifier) else model
    _, conv = first_conv(net) if layer is None else conv_of(net, _name(net, layer))
    return filter_images(conv.weight) if as_images else conv.weight.detach().float().cpu().numpy()


@speaks_python
def feature_maps(model: nn.Module, x: Any, layers: Sequence[Layer] | None = None) -> dict[str, np.ndarray]:
    """What the layers output for x: {name: N x C x h x w} in eval mode (default layers: the model's
    stages, else its convs)."""
    net, x = unwrap(model, x)
    names = [_name(net, la) for la in layers] if layers is not None else (stage_names(net) or conv_names(net))
    if not names:
        raise UserError(f"{type(net).__name__} has no stages or conv layers; pass layers=[...]")
    return {n: f.numpy() for n, f in features.feature_maps(net, x, names).items()}


@speaks_python
def landscape(
    model: nn.Module,
    x: Any,
    y: Any,
    dims: int = 2,
    grid: str | Sequence[float] = "-1:1:21",
    *,
    directions: Sequence[dict[str, torch.Tensor]] | None = None,
    norm: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    bn: str = "eval",
    loss_fn: LossFn | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> dict[str, Any]:
    """The loss landscape around the weights (Li et al.): loss and accuracy on (x, y) at
    w + a d1 (+ b d2) for a, b on `grid` ("min:max:num" or a list).

    directions: your own (dicts name -> tensor shaped like the parameters); default `dims` random
    filter-normalized ones drawn from `seed`, the ones `cifarlab inspect RUN landscape --seed` draws.
    Returns {"axes": [arrays], "loss": array, "acc": array (dims-dimensional), "directions": [...]}.
    """
    net, x = unwrap(model, x)
    if dims not in (1, 2):
        raise UserError(f"dims must be 1 or 2, got {dims}")
    if directions is None:
        g = torch.Generator().manual_seed(seed)
        directions = [_landscape.random_direction(net, norm, ignore, g) for _ in range(dims)]
    axes = [_landscape.parse_range(grid) for _ in directions]
    res = _landscape.evaluate_grid(
        net, x, _labels(y, x), list(directions), axes, batch_size=batch_size, loss_fn=loss_fn, bn=bn, progress=progress
    )
    return {"axes": res["axes"], "loss": res["loss"], "acc": res["acc"], "directions": list(directions)}


def _hvp(model: nn.Module, x: Any, y: Any, batch_size: int, loss_fn: LossFn | None):
    net, x = unwrap(model, x)
    return _hessian.make_hvp(net, _hessian.batches_of(x, _labels(y, x), batch_size), loss_fn)


@speaks_python
def hessian_eigs(
    model: nn.Module,
    x: Any,
    y: Any,
    k: int = 1,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
) -> np.ndarray:
    """The k eigenvalues of the loss Hessian (mean loss on (x, y), all parameters, BN in eval mode)
    largest in magnitude, by power iteration with deflation (as PyHessian's eigenvalues(top_n=k))."""
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    hvp, params = _hvp(model, x, y, batch_size, loss_fn)
    eigs, _ = _hessian.top_eigenvalues(hvp, params, k, iters, tol, torch.Generator().manual_seed(seed))
    return np.asarray(eigs)


@speaks_python
def hessian_trace(
    model: nn.Module,
    x: Any,
    y: Any,
    samples: int = 100,
    *,
    seed: int = 0,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
) -> float:
    """tr(H) of the mean loss on (x, y) by Hutchinson's estimator over `samples` Rademacher vectors."""
    if samples < 1:
        raise UserError(f"samples must be at least 1, got {samples}")
    hvp, params = _hvp(model, x, y, batch_size, loss_fn)
    trace, _ = _hessian.hutchinson_trace(hvp, params, samples, torch.Generator().manual_seed(seed))
    return trace


@speaks_python
def probes(
    model: nn.Module,
    x: Any,
    y: Any,
    etas: Sequence[float],
    *,
    bn: str = "train",
    loss_fn: LossFn | None = None,
    method: str = "auto",
) -> dict[str, Any]:
    """Santurkar et al.'s probes at the weights along -g (the gradient on the batch (x, y)), for each
    step size eta: "loss" L(w - eta g), "grad_diff" ||grad L(w - eta g) - g||, "beta" (effective
    smoothness), each an array over etas, plus loss_t, grad_norm, beta_smooth. The model is not changed.
    bn: "train" normalizes with the batch's statistics (running ones untouched), "eval" the running ones."""
    etas = [float(e) for e in etas]
    if not etas or not all(e > 0 and np.isfinite(e) for e in etas):
        raise UserError(f"etas must be positive numbers, got {etas}")
    net, x = unwrap(model, x)
    with _landscape.bn_mode(net, bn):
        return _probes.probe_step(
            net, loss_fn or torch.nn.functional.cross_entropy, x, _labels(y, x), etas, method=method
        )
