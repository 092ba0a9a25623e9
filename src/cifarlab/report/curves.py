"""Training curves of a run, drawn from its metrics.jsonl: loss and accuracy per epoch (and the
learning rate when a schedule changed it)."""

from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..analysis.plotting import epoch_ticks, plain_log


def _series(history: list[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    pts = [
        (h["epoch"], h[key] * scale) for h in history if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(history: list[dict], split: str = "test") -> bytes | None:
    """A PNG (bytes) with loss and accuracy per epoch, or None when there is nothing to draw."""
    fig = curves_figure(history, split)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def curves_figure(history: list[dict], split: str = "test") -> Figure | None:
    """The Figure training_curves draws (tests read its axes)."""
    if not any(isinstance(h.get("train_loss"), (int, float)) for h in history):
        return None
    lrs = {h.get("lr") for h in history if h.get("lr") is not None}
    panels = 3 if len(lrs) > 1 else 2
    fig = Figure(figsize=(3.6 * panels, 3.0), layout="constrained")  # not pyplot: no global state
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    marker = "o" if len(history) <= 30 else None
    for ax, metric, scale, ylabel in ((axes[0], "loss", 1.0, "loss"), (axes[1], "acc", 100.0, "accuracy (%)")):
        for key, label, style in ((f"train_{metric}", "train", "-"), (f"{split}_{metric}", split, "--")):
            x, y = _series(history, key, scale)
            if x:
                ax.plot(x, y, style, marker=marker, ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        epoch_ticks(ax)
        ax.legend(fontsize=8)
    y = _series(history, "train_loss")[1]
    if y and min(y) > 0 and max(y) / min(y) > 30:  # a loss that falls by decades reads better on a log axis
        axes[0].set_yscale("log")
        plain_log(axes[0].yaxis)
    if panels == 3:
        x, lr = _series(history, "lr")
        axes[2].plot(x, lr, color="tab:gray", marker=marker, ms=3)
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("learning rate (end of epoch)")
        axes[2].grid(alpha=0.3)
        epoch_ticks(axes[2])
    return fig
