"""Sweep figures: the primary metric per axis value, the best runs' curves, run time per configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..run import atomic_write, read_jsonl
from .stats import FINISHED, best_config, direction


def _figure(width: float, height: float) -> Figure:
    """Constrained layout leaves room for titles and labels (objects, not pyplot: no global state)."""
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    """PNG at 120 dpi via a temporary name; bbox tight so no title or label is cut at the edge."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    return path


def epoch_ticks(ax) -> None:
    """Integer epoch ticks (min_n_ticks=1: one epoch would otherwise get 0.945, 0.960, ...). The same
    line as analysis.plotting.epoch_ticks: sweep may not import analysis (import-linter layers)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, min_n_ticks=1))


def sweep_figures(
    out_dir: Path, rows: list[dict], groups: list[dict], axis_names: list[str], metrics: list[str]
) -> list[Path]:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    primary = next((m for m in metrics if direction(m)), metrics[0])
    written = []
    if axis_names and any(r[primary] is not None for r in rows):
        written.append(_save(per_axis_figure(rows, axis_names, primary), fig_dir / "metric_by_axis.png"))
    ranked = [g for g in groups if g.get(primary) is not None]
    if ranked and best_config(groups, primary) is not None:
        ranked.sort(key=lambda g: -direction(primary) * g[primary][0])
        fig = curves_figure(out_dir, rows, ranked[:5], axis_names, primary)
        if fig is not None:
            written.append(_save(fig, fig_dir / "curves.png"))
    seconds = _seconds(out_dir, rows)
    if seconds:
        written.append(_run_time(fig_dir / "run_time.png", groups, seconds, axis_names))
    return [p for p in written if p is not None]


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, f"{metric} (%)") if metric.endswith("acc") else (1.0, metric)


def short(axis: str) -> str:
    """optim.lr -> lr: the last part of a dotted key names the axis in a legend."""
    return axis.split(".")[-1]


def _label(g: dict, axis_names: list[str]) -> str:
    """'lr = 0.3' (', '-joined for several axes), or the config id when the sweep has no axes."""
    return ", ".join(f"{short(a)} = {g[a]}" for a in axis_names) or g["config_id"]


def per_axis_figure(rows: list[dict], axis_names: list[str], metric: str) -> Figure:
    """One panel per axis: the metric over all finished runs with each value (other axes pooled)."""
    scale, ylabel = _scale(metric)
    n = len(axis_names)
    fig = _figure(max(4.8, 3.2 * n), 3.8)
    axs = fig.subplots(1, n, squeeze=False, sharey=True)
    for ax, name in zip(axs[0], axis_names):
        labels = list(dict.fromkeys(r[name] for r in rows))
        vals = [
            [r[metric] * scale for r in rows if r[name] == lab and r["status"] in FINISHED and r[metric] is not None]
            for lab in labels
        ]
        means = [np.mean(v) if v else np.nan for v in vals]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
        x = np.arange(len(labels))
        ax.errorbar(x, means, yerr=stds, fmt="o", capsize=4)
        ax.set_xticks(
            x,
            labels,
            rotation=30 if max(len(s) for s in labels) > 6 else 0,
            ha="right" if max(len(s) for s in labels) > 6 else "center",
        )
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axs[0][0].set_ylabel(ylabel)
    # two short lines: one line ran off a one-panel figure
    fig.suptitle(f"{metric}\nmean ± std over the runs with each value", fontsize=10)
    return fig


def curves_figure(
    out_dir: Path, rows: list[dict], best: list[dict], axis_names: list[str], metric: str
) -> Figure | None:
    """Eval accuracy per epoch of the best configurations: mean over seeds, band = min..max."""
    split = "val" if "val" in metric else "test"
    key = f"{split}_acc"
    fig = _figure(6.4, 4.0)
    ax = fig.subplots()
    drawn = 0
    for g in best:
        curves = []
        for r in rows:
            if r["config_id"] == g["config_id"] and r["status"] in FINISHED:
                recs = [h for h in read_jsonl(out_dir / r["run_id"] / "metrics.jsonl") if key in h]
                if recs:
                    curves.append({h["epoch"]: h[key] * 100 for h in recs})
        if not curves:
            continue
        epochs = sorted(set.intersection(*[set(c) for c in curves]))
        if not epochs:
            continue
        y = np.array([[c[e] for e in epochs] for c in curves])
        (line,) = ax.plot(
            epochs,
            y.mean(0),
            marker="." if len(epochs) < 30 else None,
            label=f"{_label(g, axis_names)} (n={len(curves)})",
        )
        if len(curves) > 1:
            ax.fill_between(epochs, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    epoch_ticks(ax)
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_title(f"best {drawn} configurations by {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _seconds(out_dir: Path, rows: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        p = out_dir / r["run_id"] / "summary.json"
        if r["status"] in FINISHED and p.is_file():
            s = json.loads(p.read_text()).get("train_seconds")
            if isinstance(s, (int, float)):
                out.setdefault(r["config_id"], []).append(float(s))
    return out


def _run_time(path: Path, groups: list[dict], seconds: dict[str, list[float]], axis_names: list[str]) -> Path:
    gs = [g for g in groups if g["config_id"] in seconds]
    means = [np.mean(seconds[g["config_id"]]) for g in gs]
    stds = [np.std(seconds[g["config_id"]], ddof=1) if len(seconds[g["config_id"]]) > 1 else 0.0 for g in gs]
    fig = _figure(6.4, 1.2 + 0.3 * len(gs))
    ax = fig.subplots()
    y = np.arange(len(gs))
    ax.barh(y, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_yticks(y, [_label(g, axis_names) for g in gs], fontsize=8)
    ax.invert_yaxis()  # first configuration on top, as in the table
    ax.set_xlabel("training time (s), mean ± std over seeds")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
