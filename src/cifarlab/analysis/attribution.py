"""Where the network looks: Grad-CAM, Grad-CAM++, LayerCAM, guided Grad-CAM, integrated gradients.

Grad-CAM, guided Grad-CAM and integrated gradients come from captum. captum has no Grad-CAM++ or
LayerCAM, so those two are computed here from one forward/backward with hooks on the layer.
All maps are per image, batched, and (for the CAMs) upsampled bilinearly to the input size.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, LayerAttribution, LayerGradCam
from matplotlib import colormaps
from torch import nn

from cifarlab.errors import UserError

from .layers import default_cam_layer, named_layer
from .plotting import class_name, denormalize, figure, save_arrays, save_figure, show_image

METHODS = ("gradcam", "gradcam++", "layercam", "guided_gradcam", "integrated_gradients")


@contextlib.contextmanager
def attribution_mode(model: nn.Module):
    """Eval mode with in-place activations turned off: an in-place ReLU after the hooked layer would
    overwrite the captured activations, and captum's backward hooks refuse in-place outputs."""
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    was_training = model.training
    for m in changed:
        m.inplace = False
    model.eval()
    try:
        yield model
    finally:
        for m in changed:
            m.inplace = True
        model.train(was_training)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad(), attribution_mode(model):
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _targets(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return predict(model, x)
    if isinstance(target, int):
        return torch.full((len(x),), target, dtype=torch.long, device=x.device)
    return torch.as_tensor(target, dtype=torch.long, device=x.device)


def _upsample(cam: torch.Tensor, x: torch.Tensor, upsample: bool) -> torch.Tensor:
    """N x 1 x h x w -> N x H x W (bilinear to the input size) or N x h x w."""
    if upsample:
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    return cam[:, 0]


def _check_map(act: torch.Tensor, layer: str) -> None:
    if act.dim() != 4:
        raise UserError(
            f"layer {layer!r} outputs shape {tuple(act.shape)}; a class-activation map needs "
            "a layer with an N x C x H x W output (a conv or stage layer)"
        )


def cam_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None) -> tuple[nn.Module, str]:
    """(module, name) of the layer a CAM hooks: a dotted name, the module itself (as pytorch-grad-cam
    takes it), or None for default_cam_layer's choice."""
    if layer is None:
        layer = default_cam_layer(model, x[:1])
    if isinstance(layer, str):
        return named_layer(model, layer), layer
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return m, name or type(model).__name__
        raise UserError(f"layer {type(layer).__name__} is not a submodule of {type(model).__name__}")
    raise UserError(f"layer must be a layer name or an nn.Module of the model, got {type(layer).__name__}")


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    layer: str | nn.Module | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean_ij(dS/dA_k) * A_k), via captum's LayerGradCam.

    target: a class per image, one class for all, or None for each image's predicted class;
    layer: a name, a submodule, or None (default_cam_layer). N x H x W (N x h x w without upsample)."""
    module, name = cam_layer(model, x, layer)
    target = _targets(model, x, target)
    with attribution_mode(model):
        cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    _check_map(cam, name)
    return _upsample(cam.detach(), x, upsample)


def activations_and_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (the layer's output) and dS/dA for S = the target class score of each image."""
    module = named_layer(model, layer)
    saved: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        if not isinstance(out, torch.Tensor):
            raise UserError(f"layer {layer!r} does not output a single tensor")
        saved["a"] = out
        return out.clone()  # later in-place ops (out += shortcut) then leave A and its gradient intact

    handle = module.register_forward_hook(hook)
    try:
        with attribution_mode(model), torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so A needs grad even when parameters are frozen
            scores = model(x).gather(1, target.view(-1, 1)).sum()
            if "a" not in saved:
                raise UserError(f"layer {layer!r} is never called in forward")
            _check_map(saved["a"], layer)
            (grad,) = torch.autograd.grad(scores, saved["a"])  # not .backward(): parameters' .grad stay as they were
    finally:
        handle.remove()
    return saved["a"].detach(), grad.detach()


def gradcam_pp(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str, upsample: bool = True
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018) with the usual exponential-score closed form:
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), weights = sum_ij alpha * ReLU(g)."""
    a, g = activations_and_gradients(model, x, target, layer)
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    # guard only exact zeros, as the authors do: a fixed epsilon would swamp g^2 ~ 1e-8 at CIFAR gradient sizes
    alpha = torch.where(denom != 0, g2 / denom, torch.zeros_like(g2))
    weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    return _upsample((weights * a).sum(1, keepdim=True).clamp_min(0), x, upsample)


def layercam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str, upsample: bool = True
) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(g_k) * A_k), a weight per position, not per channel."""
    a, g = activations_and_gradients(model, x, target, layer)
    return _upsample((g.clamp_min(0) * a).sum(1, keepdim=True).clamp_min(0), x, upsample)


def guided_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Guided backprop times upsampled Grad-CAM (captum's GuidedGradCam): N x C x H x W.
    Only nn.ReLU modules are guided; a model using F.relu gets plain gradients there."""
    with attribution_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum narrating itself
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
        out = GuidedGradCam(model, named_layer(model, layer)).attribute(x, target=target, interpolate_mode="bilinear")
    return out.detach()


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | float = 0.0,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al.) from a baseline image to x: N x C x H x W."""
    with attribution_mode(model):
        out = IntegratedGradients(model).attribute(
            x, baselines=baseline, target=target, n_steps=n_steps, internal_batch_size=internal_batch_size
        )
    return out.detach()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a map (scaled to its own max) in the jet colormap over an H x W x C image in [0, 1]."""
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    cam = cam / cam.max() if cam.max() > 0 else cam
    heat = colormaps["jet"](cam)[..., :3]
    return (1 - alpha) * image + alpha * heat


def _display_map(attr: torch.Tensor) -> np.ndarray:
    """Any method's output as an H x W non-negative map: pixel attributions by |.| summed over channels."""
    return (attr.abs().sum(0) if attr.dim() == 3 else attr).float().cpu().numpy()


def plot_attribution_grid(
    images: np.ndarray,
    maps: dict[str, torch.Tensor],
    preds: Sequence[int],
    labels: Sequence[int] | None,
    classes: Sequence[str] | None,
    path: str | Path,
    title: str,
    *,
    max_rows: int = 16,
    names: Sequence[str] | None = None,
) -> Path:
    """A row per image: the input titled '[name] pred / true', then each method's map over the image.
    names (e.g. 'test #17') say which dataset image a row shows."""
    rows, cols = min(len(images), max_rows), 1 + len(maps)
    fig = figure(cols * 1.3, rows * 1.6 + 0.4)
    for r in range(rows):
        pred = class_name(classes, int(preds[r]))
        label = f"pred {pred}" if labels is None else f"pred {pred}\ntrue {class_name(classes, int(labels[r]))}"
        if names is not None:
            label = f"{names[r]}\n{label}"
        ax = fig.add_subplot(rows, cols, r * cols + 1)
        show_image(ax, images[r], label)
        if labels is not None and int(preds[r]) != int(labels[r]):
            ax.title.set_color("red")
        for c, (method, m) in enumerate(maps.items()):
            ax = fig.add_subplot(rows, cols, r * cols + c + 2)
            cam = _display_map(m[r])
            show_image(
                ax,
                overlay(images[r], cam) if m.dim() == 3 else cam / max(cam.max(), 1e-12),
                method if r == 0 else None,
                **({} if m.dim() == 3 else {"cmap": "hot"}),
            )
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def run_attribution(
    model: nn.Module,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    y: torch.Tensor | None = None,
    layer: str | None = None,
    methods: Sequence[str] = METHODS,
    target: int | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 32,
    ig_steps: int = 32,
    max_rows: int = 16,
    split: str | None = None,
    indices: Sequence[int] | None = None,
) -> dict:
    """Attribution maps of x (normalized N x C x H x W on the model's device) for the target class
    (default: the predicted one) at `layer` (default: see layers.default_cam_layer).

    Writes attribution.png (a grid with predicted/true class names) and attribution.npz (every
    method's maps, predictions, targets); returns {"layer", "methods", "predictions", "figures", "arrays"}.
    split and indices (the dataset indices of x's images) are recorded in the npz, the result
    ("split", "indices") and the row titles, so a map can be traced back to its image.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown attribution methods {unknown}; choose from {', '.join(METHODS)}")
    out_dir = Path(out_dir)
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        target = int(target)
    layer = layer or default_cam_layer(model, x[:1])
    named_layer(model, layer)  # fail early with the list of valid names
    fns = _method_fns(model, layer, _black(x, mean, std), ig_steps, batch_size)
    preds_t, targets_t, full = _all_maps(model, x, target, {m: fns[m] for m in methods}, batch_size)
    labels = None if y is None else y.cpu()
    whose = "the predicted class" if target is None else "the chosen class"
    fig = plot_attribution_grid(
        denormalize(x, mean, std),
        full,
        preds_t,
        labels,
        classes,
        out_dir / "attribution",
        f"attribution for {whose}, CAMs at layer {layer}",
        max_rows=max_rows,
        names=None if indices is None else [f"{split or 'image'} #{int(i)}" for i in indices],
    )
    arrays = save_arrays(
        out_dir / "attribution",
        predictions=preds_t.numpy(),
        targets=targets_t.numpy(),
        **({} if labels is None else {"labels": labels.numpy()}),
        **({} if indices is None else {"indices": np.asarray(indices, dtype=np.int64)}),
        **{m.replace("+", "p"): v.numpy() for m, v in full.items()},
    )
    return {
        "layer": layer,
        "methods": list(methods),
        "predictions": preds_t.tolist(),
        "split": split,
        "indices": None if indices is None else [int(i) for i in indices],
        "figures": [str(fig)],
        "arrays": str(arrays),
    }


def _black(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> float | torch.Tensor:
    """Integrated gradients' baseline: a black image in normalized units (0 when x is not normalized)."""
    if mean is None or std is None:
        return 0.0
    m, s = torch.as_tensor(mean, dtype=x.dtype), torch.as_tensor(std, dtype=x.dtype)
    return (-m / s).view(1, -1, 1, 1).to(x.device)


def _method_fns(model: nn.Module, layer: str, baseline, ig_steps: int, batch_size: int) -> dict[str, Callable]:
    return {
        "gradcam": lambda xb, t: gradcam(model, xb, t, layer),
        "gradcam++": lambda xb, t: gradcam_pp(model, xb, t, layer),
        "layercam": lambda xb, t: layercam(model, xb, t, layer),
        "guided_gradcam": lambda xb, t: guided_gradcam(model, xb, t, layer),
        "integrated_gradients": lambda xb, t: integrated_gradients(model, xb, t, baseline, ig_steps, batch_size),
    }


def _all_maps(model: nn.Module, x: torch.Tensor, target, fns: dict[str, Callable], batch_size: int):
    """Predictions, targets and each method's maps over x, batch by batch (on the CPU)."""
    preds, targets = [], []
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in fns}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        preds.append(predict(model, xb))
        t = _targets(model, xb, target if not isinstance(target, torch.Tensor) else target[i : i + batch_size])
        targets.append(t)
        for m, fn in fns.items():
            maps[m].append(fn(xb, t).cpu())
    return torch.cat(preds).cpu(), torch.cat(targets).cpu(), {m: torch.cat(v) for m, v in maps.items()}
