"""The figure of the pj2 study: the wall time of each part (time_per_part.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..analysis.plotting import figure, save_figure


def plot_times(path: Path, parts: Sequence, total: str) -> None:
    """One bar per part (anything with title, seconds, status); total: the summed time, as text."""
    fig = figure(8, 0.9 + 0.38 * len(parts))
    ax = fig.subplots()
    colors = {"done": "tab:blue", "skipped": "0.6", "failed": "tab:red"}
    y = list(range(len(parts)))
    ax.barh(y, [p.seconds / 60 for p in parts], color=[colors.get(p.status, "0.8") for p in parts])
    ax.set_yticks(y, [p.title if len(p.title) < 70 else p.title[:67] + "..." for p in parts], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="minutes", title=f"Time per part (total {total})")
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)
