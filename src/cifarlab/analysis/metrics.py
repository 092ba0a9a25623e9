"""Where a classifier errs: confusion matrix, per-class accuracy, a grid of misclassified examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .plotting import class_name, denormalize, figure, grid_shape, save_arrays, save_figure, show_image


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, softmax confidence) per image, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    conf, pred = logits.softmax(1).max(1)  # softmax of log-softmax is the softmax too
    return pred, conf


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> np.ndarray:
    """counts[i, j] = number of images of true class i predicted as class j."""
    idx = y_true.cpu().long() * num_classes + y_pred.cpu().long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes).numpy()


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per true class; NaN for a class with no images."""
    totals = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)


def plot_confusion(cm: np.ndarray, classes: Sequence[str] | None, path: str | Path) -> Path:
    """Row-normalized colours (share of the true class), raw counts written in the cells."""
    k = len(cm)
    names = [class_name(classes, i) for i in range(k)]
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = figure(0.55 * k + 2, 0.5 * k + 1.5)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.2%})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    return save_figure(fig, path)


def plot_per_class(acc: np.ndarray, classes: Sequence[str] | None, path: str | Path) -> Path:
    names = [class_name(classes, i) for i in range(len(acc))]
    fig = figure(0.5 * len(acc) + 2, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(acc)), np.nan_to_num(acc) * 100, color="tab:blue")
    for i, a in enumerate(acc):
        ax.text(i, (0 if np.isnan(a) else a * 100) + 1, "-" if np.isnan(a) else f"{a:.0%}", ha="center", fontsize=6)
    ax.set_xticks(range(len(acc)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("per-class accuracy", fontsize=9)
    return save_figure(fig, path)


def plot_misclassified(
    images: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    classes: Sequence[str] | None,
    path: str | Path,
) -> Path:
    """Images with 'true -> predicted (confidence)' titles; the caller picks and orders them."""
    n = max(len(images), 1)
    rows, cols = grid_shape(n, 8)
    fig = figure(cols * 1.45, rows * 1.45 + 0.4)
    for i in range(len(images)):
        show_image(
            fig.add_subplot(rows, cols, i + 1),
            images[i],
            f"{class_name(classes, int(y[i]))}\n-> {class_name(classes, int(pred[i]))} {conf[i]:.0%}",
        )
    if not len(images):
        fig.add_subplot(1, 1, 1).text(0.5, 0.5, "no misclassified images", ha="center")
    fig.suptitle("misclassified (true -> predicted, confidence), most confident first", fontsize=9)
    return save_figure(fig, path)


def run_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    n_wrong: int = 32,
    batch_size: int = 512,
) -> dict:
    """Confusion matrix and per-class accuracy of the model on (x, y), plus its most confident mistakes.

    x: normalized N x C x H x W on the model's device. Writes confusion.png, per_class.png,
    misclassified.png and metrics.npz; returns accuracy, per-class accuracy and the paths.
    """
    out_dir = Path(out_dir)
    pred, conf = predict(model, x, batch_size)
    y = y.cpu().long()
    k = num_classes or (len(classes) if classes is not None else int(max(y.max(), pred.max())) + 1)
    cm = confusion_matrix(y, pred, k)
    acc = per_class_accuracy(cm)
    wrong = torch.nonzero(pred != y).flatten()
    wrong = wrong[conf[wrong].argsort(descending=True)][:n_wrong]
    figures = [
        plot_confusion(cm, classes, out_dir / "confusion"),
        plot_per_class(acc, classes, out_dir / "per_class"),
        plot_misclassified(
            denormalize(x[wrong.to(x.device)], mean, std),
            y[wrong].numpy(),
            pred[wrong].numpy(),
            conf[wrong].numpy(),
            classes,
            out_dir / "misclassified",
        ),
    ]
    arrays = save_arrays(
        out_dir / "metrics",
        confusion=cm,
        per_class_accuracy=acc,
        predictions=pred.numpy(),
        confidence=conf.numpy(),
        labels=y.numpy(),
        misclassified=wrong.numpy(),
    )
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "per_class_accuracy": acc.tolist(),
        "n_misclassified": int((pred != y).sum()),
        "figures": [str(f) for f in figures],
        "arrays": str(arrays),
    }
