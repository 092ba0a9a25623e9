"""Small figure helpers shared by the analyses: images back to pixels, grids, atomic PNG/PDF saving.

Figures are built with matplotlib's object API (Figure, not pyplot): no global backend state, so it
works headless and from threads, and nothing is left open.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from ..run import atomic_write


def to_input(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 images N x H x W x C (as the datasets store them) -> normalized float N x C x H x W."""
    x = images.to(device).permute(0, 3, 1, 2).float().div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Normalized N x C x H x W -> N x H x W x C floats in [0, 1] for imshow (min-max if no stats)."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.as_tensor(std).view(1, -1, 1, 1) + torch.as_tensor(mean).view(1, -1, 1, 1)
    else:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def show_image(ax, img: np.ndarray, title: str | None = None, **kw) -> None:
    """imshow an H x W x C (C = 1 or 3) or H x W array without ticks."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        kw.setdefault("cmap", "gray")
    ax.imshow(img, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def with_suffix(path: str | Path, suffix: str) -> Path:
    """Add the suffix unless present: layer names hold dots ('kernels_layer2.0' must not lose '.0')."""
    path = Path(path)
    return path if path.suffix == suffix else path.with_name(path.name + suffix)


def figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def epoch_ticks(ax, nbins: int = 8) -> None:
    """Integer epoch ticks on the x axis. min_n_ticks=1: with one epoch MaxNLocator would otherwise
    fall back to fractional ticks (0.945, 0.960, ...)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=nbins, min_n_ticks=1))


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers ('2.3', '0.001', not '2.3x10^0'); which ticks get a label is
    still LogFormatter's choice, so the minor ticks of a wide range stay unlabelled."""

    def __call__(self, x, pos=None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log(axis) -> None:
    """Plain labels on a log axis (ax.xaxis or ax.yaxis); call after set_xscale/set_yscale("log"),
    which reset the formatters."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def save_figure(fig: Figure, path: str | Path, pdf: bool = False) -> Path:
    """Write PNG (and PDF) via a temporary name and rename, so a reader never sees half a file."""
    path = with_suffix(path, ".png")
    for p in [path] + ([path.with_suffix(".pdf")] if pdf else []):
        atomic_write(p, lambda tmp, fmt=p.suffix[1:]: fig.savefig(tmp, format=fmt, bbox_inches="tight"))
    return path


def save_arrays(path: str | Path, **arrays) -> Path:
    """np.savez via a temporary name and rename (into an open file: np.savez adds .npz to bare names)."""
    path = with_suffix(path, ".npz")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})

    atomic_write(path, write)
    return path


def safe_name(name: str) -> str:
    """A layer name as a file-name part ('layer1.0.conv1' stays readable)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "model"


def class_name(classes: Sequence[str] | None, i: int) -> str:
    return classes[i] if classes is not None and 0 <= i < len(classes) else str(i)
