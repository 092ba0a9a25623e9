"""A trained network that takes images as they are: `Classifier` holds the model, its input
normalization and its class names; `load(path)` rebuilds one from a run folder, checkpoint or bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..train.checkpoint import checkpoint_stats, load_model
from ..train.device import pick_device
from .errors import speaks_python

Images = torch.Tensor | np.ndarray | str | Path | Sequence[str | Path]


class Classifier(nn.Module):
    """An nn.Module: images in (uint8 0..255 or float 0..1; N x H x W x C or N x C x H x W; a single
    image without N), logits out. The normalization the network was trained with is inside.

    `.model` is the bare network (normalized N x C x H x W floats in), `.classes` the class names,
    `.image_shape` the (H, W, C) it was trained at, `.checkpoint` what it was loaded from (or None).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        classes: Sequence[str] = (),
        image_shape: Sequence[int] | None = None,
        checkpoint: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        device = next(model.parameters(), torch.empty(0)).device
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.classes = list(classes)
        self.image_shape: tuple[int, int, int] | None = None
        if image_shape:
            h, w, c = (int(v) for v in image_shape)
            self.image_shape = (h, w, c)
        self.checkpoint = checkpoint

    @property
    def channels(self) -> int:
        return int(self.mean.shape[1])

    def normalize(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Images as the network takes them: float N x C x H x W, (x / 255 for uint8 - mean) / std."""
        x = torch.as_tensor(images)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise UserError(f"images must be N x H x W x C or N x C x H x W, got shape {tuple(x.shape)}")
        c = self.channels
        if x.shape[1] != c and x.shape[-1] == c:  # channels last, as the datasets and PIL store them
            x = x.permute(0, 3, 1, 2)
        if x.shape[1] != c:
            raise UserError(f"the model takes {c}-channel images, got shape {tuple(x.shape)}")
        x = x.to(self.mean.device)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))

    def read_images(self, paths: str | Path | Sequence[str | Path]) -> torch.Tensor:
        """Image files as uint8 N x H x W x C at the trained input size (as `cifarlab predict` reads them)."""
        from ..analysis.predict import load_image

        if self.image_shape is None:
            raise UserError("this Classifier does not know its input size (image_shape); pass arrays instead")
        items = [paths] if isinstance(paths, (str, Path)) else list(paths)
        return torch.stack([load_image(p, self.image_shape) for p in items])

    @torch.no_grad()
    def predict_proba(self, images: Images, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities, N x K (eval mode; the mode the module was in is kept)."""
        if isinstance(images, (str, Path)) or (
            isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, Path))
        ):
            images = self.read_images(images)  # type: ignore[arg-type]
        x = torch.as_tensor(images)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        was_training = self.training
        self.eval()
        try:
            out = [self(x[i : i + batch_size]).float().softmax(1).cpu() for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out).numpy()

    def predict(self, images: Images, batch_size: int = 256) -> np.ndarray:
        """Class indices, shape (N,): of arrays/tensors, or of image files (paths) like `cifarlab predict`."""
        return self.predict_proba(images, batch_size).argmax(1)


@speaks_python
def load(
    path: str | Path, *, model: nn.Module | None = None, device: str | torch.device = "cpu", use_ema: bool = True
) -> Classifier:
    """A trained network from a run folder (its best.pt, else last.pt), a checkpoint or a bundle.

    The weights are the EMA copy where the run kept one (as `cifarlab predict` and `inspect` use).
    model: the module to load the weights into; needed for a run of fit(model=YourNet()), whose
    architecture no name in the zoo rebuilds (a copy is loaded; yours is left as it is).
    """
    return read_classifier(path, model=model, device=device, use_ema=use_ema)


def read_classifier(
    path: str | Path, *, model: nn.Module | None = None, device: str | torch.device = "cpu", use_ema: bool = True
) -> Classifier:
    """load() in the library's words: what `cifarlab predict` calls."""
    net, ckpt = load_model(path, pick_device(device), use_ema, model)
    channels = int(ckpt.get("model_options", {}).get("in_channels") or (ckpt.get("image_shape") or [0, 0, 3])[2])
    mean, std = checkpoint_stats(ckpt, channels)
    return Classifier(net, mean, std, ckpt.get("classes") or [], ckpt.get("image_shape"), ckpt).eval()


def unwrap(model: nn.Module, x: Any) -> tuple[nn.Module, torch.Tensor]:
    """(network, its input): a Classifier takes raw images and hands back its bare network with the
    normalized batch; any other module gets x as a float tensor on its device."""
    if isinstance(model, Classifier):
        return model.model, model.normalize(x)
    p = next(model.parameters(), None)
    t = torch.as_tensor(x)
    return model, t.to(p.device if p is not None else "cpu").float()
