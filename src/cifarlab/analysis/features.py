"""Feature maps: what each stage (or chosen layer) outputs for a few images, caught with forward hooks
(layers.capture)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifarlab.errors import UserError

from .layers import capture, conv_names, eval_mode, stage_names
from .plotting import denormalize, figure, grid_shape, safe_name, save_arrays, save_figure, show_image


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named modules for input x (eval mode), on the CPU as float, in the order given.

    A module that forward calls several times (a shared activation) keeps its last output.
    """
    with capture(model, layers, clone=True) as out, eval_mode(model):
        model(x)
    missing = [n for n in layers if n not in out]
    if missing:
        raise UserError(f"layers {missing} of {type(model).__name__} are never called in forward")
    return {n: out[n].float().cpu() for n in layers}


def _as_maps(fmap: torch.Tensor) -> torch.Tensor:
    """One image's output as C x h x w maps; a vector (or C x 1 x 1) output becomes one map with a
    cell per unit, filled row by row into a near-square (NaN pads the end)."""
    if fmap.dim() == 3 and fmap.shape[1] * fmap.shape[2] > 1:
        return fmap
    v = fmap.flatten()
    cols = math.ceil(math.sqrt(len(v)))
    rows = math.ceil(len(v) / cols)
    return torch.cat([v, v.new_full((rows * cols - len(v),), float("nan"))]).view(1, rows, cols)


def plot_stage(image: np.ndarray, fmap: torch.Tensor, path: str | Path, title: str, n_channels: int = 16) -> Path:
    """The input image, then the first n channels of one image's output, each on its own scale."""
    maps = _as_maps(fmap)
    n = min(n_channels, maps.shape[0])
    rows, cols = grid_shape(n + 1, 9)
    fig = figure(cols * 1.0, rows * 1.05 + 0.4)
    show_image(fig.add_subplot(rows, cols, 1), image, "input")
    for c in range(n):
        show_image(
            fig.add_subplot(rows, cols, c + 2),
            maps[c].numpy(),
            f"ch {c}" if maps.shape[0] > 1 else "units",
            cmap="viridis",
        )
    fig.suptitle(f"{title}  {tuple(fmap.shape)}", fontsize=9)
    return save_figure(fig, path)


def plot_overview(image: np.ndarray, feats: dict[str, torch.Tensor], path: str | Path, n_channels: int = 8) -> Path:
    """A row per stage: the input image, then its first n channels, for one image."""
    rows, cols = len(feats), n_channels + 1
    fig = figure(cols * 0.95, rows * 1.0 + 0.3)
    for r, (name, fmap) in enumerate(feats.items()):
        show_image(fig.add_subplot(rows, cols, r * cols + 1), image, "input" if r == 0 else None)
        fig.axes[-1].set_ylabel(name, fontsize=6)
        maps = _as_maps(fmap)
        for c in range(min(n_channels, maps.shape[0])):
            show_image(fig.add_subplot(rows, cols, r * cols + c + 2), maps[c].numpy(), cmap="viridis")
    return save_figure(fig, path)


def run_features(
    model: nn.Module,
    x: torch.Tensor,
    out_dir: str | Path,
    layers: Sequence[str] | None = None,
    n_channels: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_images: int = 4,
) -> dict:
    """Stage outputs (default model.stage_names, else its convs) for the first max_images of x.

    x is a normalized N x C x H x W batch on the model's device; mean/std undo the normalization for
    the input picture. Writes features_<i>_<layer>.png (a grid per stage and image),
    features_<i>.png (all stages of image i) and features.npz (the full outputs, <layer> keys).
    """
    out_dir = Path(out_dir)
    layers = list(layers) if layers is not None else (stage_names(model) or conv_names(model))
    if not layers:
        raise UserError(f"{type(model).__name__} has no stages or conv layers; name the layers to show")
    x = x[:max_images]
    feats = feature_maps(model, x, layers)
    images = denormalize(x, mean, std)
    figures = []
    for i in range(len(x)):
        one = {n: f[i] for n, f in feats.items()}
        figures.append(plot_overview(images[i], one, out_dir / f"features_{i}"))
        for j, (name, fmap) in enumerate(one.items()):
            figures.append(
                plot_stage(images[i], fmap, out_dir / f"features_{i}_{j:02d}_{safe_name(name)}", name, n_channels)
            )
    arrays = save_arrays(out_dir / "features", images=images, **{n: f.numpy() for n, f in feats.items()})
    return {
        "layers": layers,
        "shapes": {n: list(f.shape) for n, f in feats.items()},
        "figures": [str(f) for f in figures],
        "arrays": str(arrays),
    }
