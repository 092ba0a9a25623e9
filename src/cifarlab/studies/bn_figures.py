"""Figures of the batch-normalization study: training curves, the loss band, the probes and the proxies
(PNG + PDF in the study folder), drawn from the arrays bn_study.stack_runs builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.plotting import epoch_ticks, figure, plain_log, save_figure

COLORS = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]


def _smooth(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(v) < window:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    out[: window - 1] = c[1:window] / np.arange(1, window)  # growing window at the start
    return out


def _lr_title(lr: float, stalled: bool) -> str:
    return f"lr {lr:g}" + (" (a run stalled)" if stalled else "")


def plot_all(out_dir: Path, a: dict, rows: list[dict]) -> list[str]:
    stalled = {(r["model"], r["lr"]): r["stalled"] for r in rows}
    made = [plot_training(out_dir, a, stalled), plot_band(out_dir, a)]
    if "probe_loss" in a:
        made.append(plot_probes(out_dir, a, stalled))
    if "proxy_grad_change" in a:
        made.append(plot_proxies(out_dir, a, stalled))
    return made


def plot_training(out_dir: Path, a: dict, stalled: dict) -> str:
    M = len(a["models"])
    S = a["step_loss"].shape[-1]
    fig = figure(5 * M, 7)
    axes = fig.subplots(2, M, squeeze=False)
    epochs = np.arange(1, a["test_acc"].shape[-1] + 1)
    for m, label in enumerate(a["models"]):
        for l, lr in enumerate(a["lrs"]):
            c = COLORS[l % len(COLORS)]
            loss = a["step_loss"][m, l]
            name = f"lr {lr:g}" + (" (stalled)" if stalled[str(label), float(lr)] else "")
            axes[0, m].plot(loss, color=c, alpha=0.2, lw=0.5)
            axes[0, m].plot(_smooth(loss, max(1, S // 50)), color=c, lw=1.2, label=name)
            axes[1, m].plot(epochs, a["test_acc"][m, l], color=c, marker="o", ms=3, label=f"test, lr {lr:g}")
            axes[1, m].plot(
                epochs, a["train_acc"][m, l], color=c, ls="--", lw=1, marker="x", ms=3, label=f"train, lr {lr:g}"
            )
        axes[0, m].set(title=str(label), xlabel="step", ylabel="training loss (per step, smoothed line)")
        axes[1, m].set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
        epoch_ticks(axes[1, m])
        axes[0, m].legend(fontsize=7)
        axes[1, m].legend(fontsize=6, ncol=2)
    fig.suptitle("Training curves: same seed and data order for every run (train acc: running, during the epoch)")
    save_figure(fig, out_dir / "training_curves.png", pdf=True)
    return "training_curves"


def plot_band(out_dir: Path, a: dict) -> str:
    fig = figure(9, 5)
    ax = fig.subplots()
    steps = np.arange(a["step_loss"].shape[-1])
    for m, label in enumerate(a["models"]):
        band = a["step_loss"][m]
        c = COLORS[m % len(COLORS)]
        ax.fill_between(steps, band.min(0), band.max(0), color=c, alpha=0.45, lw=0, label=str(label))
    lrs = ", ".join(f"{lr:g}" for lr in a["lrs"])
    ax.set(
        xlabel="step",
        ylabel="training loss",
        title=f"Loss band: per step min and max of the training loss over lr in [{lrs}]",
    )
    ax.legend()
    save_figure(fig, out_dir / "loss_band.png", pdf=True)
    return "loss_band"


def _log_if_positive(ax, values: np.ndarray) -> None:
    v = values[np.isfinite(values)]
    if v.size and v.min() > 0 and v.max() / v.min() > 20:
        ax.set_yscale("log")
        plain_log(ax.yaxis)


def plot_probes(out_dir: Path, a: dict, stalled: dict) -> str:
    L = len(a["lrs"])
    fig = figure(4.2 * L, 9.5)
    axes = fig.subplots(3, L, squeeze=False)
    steps = a["probe_steps"]
    mark = dict(marker="o", ms=3) if len(steps) < 3 else {}  # a probe or two: lines alone would not show
    for l, lr in enumerate(a["lrs"]):
        for m, label in enumerate(a["models"]):
            c = COLORS[m % len(COLORS)]
            pl, pg, pb = a["probe_loss"][m, l], a["probe_grad_diff"][m, l], a["probe_beta"][m, l]
            for ax, v in ((axes[0, l], pl), (axes[1, l], pg)):
                ax.fill_between(steps, v.min(1), v.max(1), color=c, alpha=0.4, lw=0, label=str(label))
                ax.plot(steps, v.min(1), color=c, lw=0.8, **mark)  # edges: at small eta a band is thinner than a pixel
                ax.plot(steps, v.max(1), color=c, lw=0.8, **mark)
            axes[2, l].plot(steps, pb, color=c, lw=1.2, label=str(label), **mark)
        any_stalled = any(stalled[str(mm), float(lr)] for mm in a["models"])
        e = a["etas"][l]
        axes[0, l].set(
            title=f"{_lr_title(lr, any_stalled)}\neta in [{e.min():.2g}, {e.max():.2g}]",
            ylabel="loss variation: L(w - eta g)",
        )
        axes[1, l].set(ylabel="gradient predictiveness:\n||grad L(w - eta g) - g||")
        axes[2, l].set(xlabel="step", ylabel="effective beta-smoothness")
        _log_if_positive(axes[1, l], a["probe_grad_diff"][:, l])
        _log_if_positive(axes[2, l], a["probe_beta"][:, l])
        for ax in axes[:, l]:
            ax.legend(fontsize=7)
    fig.suptitle("Santurkar et al. probes along -g on the step's batch (bands: range over eta)")
    save_figure(fig, out_dir / "probes.png", pdf=True)
    return "probes"


def plot_proxies(out_dir: Path, a: dict, stalled: dict) -> str:
    L = len(a["lrs"])
    fig = figure(4.2 * L, 12)
    axes = fig.subplots(4, L, squeeze=False)
    steps = a["probe_steps"]
    panels = [
        ("proxy_grad_change", "proxy: ||g_t - g_(t-1)||"),
        ("proxy_grad_change_ratio", "proxy: ||g_t - g_(t-1)|| / ||w_t - w_(t-1)||"),
        ("ics_norm", "ICS: ||G - G'|| (mean over layers)"),
        ("ics_cos", "ICS: cos(G, G') (mean over layers)"),
    ]
    for l, lr in enumerate(a["lrs"]):
        for row, (key, ylabel) in enumerate(panels):
            ax = axes[row, l]
            for m, label in enumerate(a["models"]):
                v = a[key][m, l]
                if v.ndim == 2:
                    v = np.nanmean(v, axis=1)
                ax.plot(steps, v, color=COLORS[m % len(COLORS)], lw=1.2, marker=".", ms=3, label=str(label))
            if key != "ics_cos":
                _log_if_positive(ax, a[key][:, l])
            ax.set(ylabel=ylabel)
            ax.legend(fontsize=7)
        any_stalled = any(stalled[str(mm), float(lr)] for mm in a["models"])
        axes[0, l].set_title(_lr_title(lr, any_stalled))
        axes[-1, l].set_xlabel("step")
    fig.suptitle("Trajectory PROXIES (not the probes) and the internal covariate shift of Santurkar et al.")
    save_figure(fig, out_dir / "proxies.png", pdf=True)
    return "proxies"
