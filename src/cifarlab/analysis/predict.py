"""Classify image files with a trained checkpoint: top-k classes, optionally a Grad-CAM overlay.

Any image file PIL reads (PNG, JPEG, ..., any size or mode) is converted to the model's channels
and resized to the input size it was trained on (32x32 for CIFAR, 28x28 for MNIST).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..train.checkpoint import checkpoint_stats, input_shape


def load_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file as uint8 H x W x C at `shape`: grey or RGB as C asks, resized (aspect not kept)."""
    from PIL import Image, UnidentifiedImageError

    h, w, c = shape
    if c not in (1, 3):
        raise UserError(f"the model takes {c}-channel images; only 1 (grey) or 3 (RGB) can be read from files")
    try:
        with _open_image(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                # transparent pixels over white, as an image viewer shows them
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"cannot read image {path}: {str(e).splitlines()[0][:200]}") from None
    return torch.from_numpy(arr.copy()).view(h, w, c)


def _open_image(path: str | Path):
    """Image.open, refusing what PIL only warns about (89M+ pixels) like what it refuses (179M+): a
    20000x20000 PNG is a few hundred KB on disk and 1.2 GB decoded."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


@torch.no_grad()
def classify(model: nn.Module, x: torch.Tensor, classes: Sequence[str], topk: int = 3) -> list[list[dict]]:
    """Per image of the normalized batch x: the top-k {"class", "index", "prob"} by softmax."""
    was_training = model.training
    model.eval()
    try:
        probs = model(x).float().softmax(1).cpu()  # softmax of log-softmax (LeNet) is the softmax too
    finally:
        model.train(was_training)
    k = max(1, min(topk, probs.shape[1]))
    p, idx = probs.topk(k, dim=1)
    return [
        [
            {"class": classes[j] if j < len(classes) else str(j), "index": int(j), "prob": float(q)}
            for q, j in zip(pr.tolist(), ix.tolist())
        ]
        for pr, ix in zip(p, idx)
    ]


def gradcam_figure(
    model: nn.Module, x: torch.Tensor, image: np.ndarray, target: int, layer: str | None, path: str | Path, title: str
) -> Path:
    """The resized input beside its Grad-CAM overlay for class `target` (one image), saved as PNG."""
    from .attribution import gradcam, overlay
    from .layers import default_cam_layer
    from .plotting import figure, save_figure, show_image

    layer = layer or default_cam_layer(model, x)
    cam = gradcam(model, x, torch.tensor([target], device=x.device), layer)[0].cpu().numpy()
    fig = figure(4.2, 2.4)
    show_image(fig.add_subplot(1, 2, 1), image, "input (as the model sees it)")
    show_image(fig.add_subplot(1, 2, 2), overlay(image, cam), f"Grad-CAM at {layer}")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def predict_files(
    model: nn.Module,
    ckpt: dict,
    paths: Sequence[str | Path],
    topk: int = 3,
    gradcam: bool = False,
    out_dir: str | Path | None = None,
    layer: str | None = None,
    source: str | None = None,
) -> list[dict]:
    """Top-k classes of each image file; with gradcam, IMAGE_STEM.gradcam.png beside it (or in out_dir).

    Returns [{"image", "top": [{"class", "index", "prob"}, ...], "gradcam": path or None}].
    """
    from .layers import model_device
    from .plotting import to_input

    if not paths:
        raise UserError("name at least one image file")
    shape = input_shape(ckpt, source)
    classes = list(ckpt.get("classes") or [])
    mean, std = checkpoint_stats(ckpt, shape[2])
    device = model_device(model)
    images = torch.stack([load_image(p, shape) for p in paths])
    x = to_input(images, mean, std, device)
    tops = classify(model, x, classes, topk)
    results = []
    for i, (p, top) in enumerate(zip(paths, tops)):
        fig = None
        if gradcam:
            p = Path(p)
            where = Path(out_dir) if out_dir is not None else p.parent
            shown = images[i].float().div(255).numpy()
            fig = str(
                gradcam_figure(
                    model,
                    x[i : i + 1],
                    shown,
                    top[0]["index"],
                    layer,
                    where / f"{p.stem}.gradcam",
                    f"{p.name}: {top[0]['class']} ({top[0]['prob']:.1%})",
                )
            )
        results.append({"image": str(p), "top": top, "gradcam": fig})
    return results
