"""Convolution kernels as pictures: the first layer as an RGB grid, deeper layers as heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifarlab.errors import UserError

from .layers import named_layer, stage_names
from .plotting import figure, grid_shape, safe_name, save_arrays, save_figure, show_image


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise UserError(f"{type(model).__name__} has no Conv2d layer to show filters of")


def conv_of(model: nn.Module, name: str) -> tuple[str, nn.Conv2d]:
    """The conv called `name`, or the first conv inside the block called `name` (a stage)."""
    layer = named_layer(model, name)
    if isinstance(layer, nn.Conv2d):
        return name, layer
    for sub, m in layer.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.{sub}", m
    raise UserError(f"layer {name!r} of {type(model).__name__} has no Conv2d kernels to show")


def filter_images(weight: torch.Tensor) -> np.ndarray:
    """O x C x kh x kw kernels -> O x kh x kw x 3 (C = 3) or O x kh x kw (otherwise: mean over C).

    Each filter is min-max normalized on its own: the picture shows its pattern, not its scale.
    """
    w = weight.detach().float().cpu()
    w = w.permute(0, 2, 3, 1) if w.shape[1] == 3 else w.mean(dim=1)
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *[1] * (w.dim() - 1))
    hi = flat.max(dim=1).values.view(-1, *[1] * (w.dim() - 1))
    return ((w - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def kernel_maps(weight: torch.Tensor, mode: str = "mean", k: int = 4) -> np.ndarray:
    """Kernels for heatmaps: mode "mean" -> O x kh x kw (mean over input channels);
    mode "first" -> O x k x kh x kw (the first k input channels)."""
    w = weight.detach().float().cpu()
    if mode == "mean":
        return w.mean(dim=1).numpy()
    if mode == "first":
        return w[:, :k].numpy()
    raise UserError(f"unknown kernel mode {mode!r}; use 'mean' or 'first'")


def plot_filter_grid(images: np.ndarray, path: str | Path, title: str = "", max_filters: int = 64) -> Path:
    n = min(len(images), max_filters)
    rows, cols = grid_shape(n, 8)
    fig = figure(cols * 0.9, rows * 0.9 + 0.4)
    for i in range(n):
        show_image(fig.add_subplot(rows, cols, i + 1), images[i])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_kernel_heatmaps(maps: np.ndarray, path: str | Path, title: str = "", max_filters: int = 64) -> Path:
    """One shared, zero-centred colour scale per layer so filters compare by sign and magnitude."""
    vmax = float(np.abs(maps).max()) or 1.0
    kw = dict(cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    if maps.ndim == 3:  # O x kh x kw
        n = min(len(maps), max_filters)
        rows, cols = grid_shape(n, 8)
        fig = figure(cols * 0.9, rows * 0.9 + 0.6)
        for i in range(n):
            ax = fig.add_subplot(rows, cols, i + 1)
            im = ax.imshow(maps[i], interpolation="nearest", **kw)
            ax.set_xticks([]), ax.set_yticks([])
    else:  # O x k x kh x kw: a row per filter, a column per input channel
        rows, cols = min(len(maps), max(1, max_filters // max(1, maps.shape[1]))), maps.shape[1]
        fig = figure(cols * 0.9 + 0.6, rows * 0.9 + 0.6)
        for r in range(rows):
            for c in range(cols):
                ax = fig.add_subplot(rows, cols, r * cols + c + 1)
                im = ax.imshow(maps[r, c], interpolation="nearest", **kw)
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"in {c}", fontsize=7)
                if c == 0:
                    ax.set_ylabel(f"out {r}", fontsize=7)
    fig.colorbar(im, ax=fig.axes, shrink=0.6, **({"location": "bottom", "aspect": 30} if maps.ndim == 4 else {}))
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def default_kernel_layers(model: nn.Module, limit: int = 8) -> list[str]:
    """The first conv of each stage after the first layer (or every later conv for foreign models)."""
    first, _ = first_conv(model)
    names = []
    for stage in stage_names(model):
        try:
            name, _ = conv_of(model, stage)
        except UserError:
            continue
        if name != first and name not in names:
            names.append(name)
    if not names:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != first]
    return names[:limit]


def _shown(conv: nn.Conv2d, max_filters: int) -> str:
    return f", first {max_filters} shown" if conv.out_channels > max_filters else ""


def run_filters(
    model: nn.Module,
    out_dir: str | Path,
    layers: list[str] | None = None,
    mode: str = "mean",
    k: int = 4,
    max_filters: int = 64,
) -> dict:
    """First-layer RGB grid plus heatmaps of the chosen (default: one per stage) conv layers.

    Writes filters_first.png, kernels_<layer>.png and filters.npz (the kernels shown); returns
    {"first_layer": name, "layers": [names], "figures": [paths], "arrays": path}.
    """
    out_dir = Path(out_dir)
    first, conv = first_conv(model)
    title = f"{first}: {conv.out_channels} filters {tuple(conv.kernel_size)}{_shown(conv, max_filters)}"
    figures = [plot_filter_grid(filter_images(conv.weight), out_dir / "filters_first", title, max_filters)]
    arrays = {"first": conv.weight.detach().float().cpu().numpy()}
    chosen = []
    for name in default_kernel_layers(model) if layers is None else layers:
        name, layer = conv_of(model, name)
        maps = kernel_maps(layer.weight, mode, k)
        what = "mean over inputs" if mode == "mean" else f"first {maps.shape[1]} inputs"
        figures.append(
            plot_kernel_heatmaps(
                maps,
                out_dir / f"kernels_{safe_name(name)}",
                f"{name}: {tuple(layer.weight.shape)}, {what}{_shown(layer, max_filters)}",
                max_filters,
            )
        )
        arrays[name] = maps
        chosen.append(name)
    return {
        "first_layer": first,
        "layers": chosen,
        "figures": [str(f) for f in figures],
        "arrays": str(save_arrays(out_dir / "filters", **arrays)),
    }
