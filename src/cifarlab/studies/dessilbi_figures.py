"""Figures of the DessiLBI study (PNG in the study folder): LeNet training curves, the solution path of
Gamma, a layer's weights before and after pruning, LeNet's accuracy against what pruning removed, and
the VGG part (curves, pruning-ratio sweep, each layer pruned alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..analysis.plotting import epoch_ticks, figure, plain_log, save_figure

COLORS = {"slbi": "tab:red", "momentum": "tab:blue", "slbi_adam": "tab:green"}
LABELS = {"slbi": "SLBI", "momentum": "SGD-momentum", "slbi_adam": "SLBI-Adam"}
STYLES = ["-", "--", ":", "-."]
FIGURES = ("lenet_curves", "solution_path", "conv3_weights", "lenet_pruning", "vgg_pruning")


def plot_all(out_dir: Path, cfg, runs, rows, extra) -> list[str]:
    made = []
    lenet = [r for r in runs if r["part"] == "lenet"]
    if lenet:
        made.append(plot_curves(out_dir, lenet))
    if extra.get("paths") or extra.get("vgg", {}).get("path") is not None:
        made.append(plot_paths(out_dir, cfg, extra))
    if "weights" in extra:
        made.append(plot_weights(out_dir, cfg, extra["weights"]))
    if any(r["part"] == "lenet" for r in rows):
        made.append(plot_lenet_pruning(out_dir, [r for r in rows if r["part"] == "lenet"], lenet))
    vgg = [r for r in runs if r["part"] == "vgg"]
    if vgg:
        made.append(plot_vgg(out_dir, cfg, vgg[0], [r for r in rows if r["part"] == "vgg"]))
    for name in FIGURES:  # a figure of an earlier pass that this one could not draw would mislead
        if name not in made:
            (out_dir / f"{name}.png").unlink(missing_ok=True)
    return made


def _run_label(r: dict) -> str:
    return f"{LABELS[r['optimizer']]} seed {r['seed']}" + (" (STALLED)" if r["stalled"] else "")


def plot_curves(out_dir: Path, runs: list[dict]) -> str:
    fig = figure(11, 4.2)
    ax_acc, ax_loss = fig.subplots(1, 2)
    seeds = sorted({r["seed"] for r in runs})
    for r in runs:
        h = r["history"]
        style = dict(
            color=COLORS[r["optimizer"]],
            ls=STYLES[seeds.index(r["seed"]) % len(STYLES)],
            marker=".",
            alpha=0.45 if r["stalled"] else 1.0,
        )
        ax_acc.plot(
            h["epoch"], [100 * a if a is not None else np.nan for a in h["test_acc"]], label=_run_label(r), **style
        )
        ax_loss.plot(h["epoch"], h["train_loss"], label=_run_label(r), **style)
    top = [100 * max(a for a in r["history"]["test_acc"] if a is not None) for r in runs if not r["stalled"]]
    if top:  # zoom on the trained runs; a stalled one is in the legend and the loss panel
        ax_acc.set_ylim(min(top) - 3, 100)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="LeNet on MNIST: test accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training loss (NLL)", yscale="log", title="training loss")
    plain_log(ax_loss.yaxis)
    for ax in (ax_acc, ax_loss):
        epoch_ticks(ax)
    ax_acc.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    save_figure(fig, out_dir / "lenet_curves.png")
    return "lenet_curves"


def _path_panel(ax, v: dict, color: str, title: str, kept_what: str) -> None:
    """One line per filter over v["x"] (fractional epochs: the path has a row every path_every steps
    and at each epoch end); without x (an older run, one row per epoch) over the epoch numbers."""
    path, kept = v["path"], v["kept"]
    x = np.asarray(v["x"]) if v.get("x") is not None else np.arange(1, path.shape[0] + 1)
    for i in np.nonzero(~kept)[0]:
        ax.plot(x, path[:, i], color="0.6", lw=0.6, alpha=0.6)
    for i in np.nonzero(kept)[0]:
        ax.plot(x, path[:, i], color=color, lw=1.1, alpha=0.9)
    if path.shape[0] == 1:  # one point: lines have no length, show the points
        ax.scatter(np.full(path.shape[1], x[0]), path[0], c=np.where(kept, color, "0.6"), s=8)
    ax.plot([], [], color=color, label=f"{int(kept.sum())} {kept_what}")
    ax.plot([], [], color="0.6", label=f"{int((~kept).sum())} pruned")
    if not np.any(path):  # a short run: say why the lines are flat rather than leave an empty-looking panel
        ax.text(0.5, 0.6, "Gamma still zero: no filter selected yet", ha="center", transform=ax.transAxes)
    ax.set(xlabel="epoch", ylabel="||Gamma|| per filter", title=title)
    _fraction_ticks(ax, float(np.max(x)) if len(x) else 1.0)
    ax.legend(fontsize=8)


def _fraction_ticks(ax, last: float) -> None:
    """Integer epochs for a long run; for a run of a couple of epochs, a few plain fractional ticks
    (0, 0.25, 0.5, ...) so that the steps within an epoch can be read."""
    if last > 3:
        epoch_ticks(ax)
        return
    ax.set_xlim(0, max(last, 1e-9))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))


def plot_paths(out_dir: Path, cfg, extra: dict) -> str:
    panels = [
        (LABELS[o] + f" ({run}), {cfg.path_layer}", v, COLORS[o], cfg.prune_percent)
        for (o, run), v in extra.get("paths", {}).items()
        if v["path"] is not None
    ]
    vgg = extra.get("vgg")
    if vgg and vgg.get("path") is not None:
        panels.append((f"{vgg['model']} SLBI-Adam, {vgg['layer']}", vgg, "tab:purple", cfg.vgg_layer_percent))
    fig = figure(5.2 * max(1, len(panels)), 4.2)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    for ax, (title, v, color, pct) in zip(axes, panels):
        _path_panel(ax, v, color, title, f"kept at {pct:g}% pruning")
    fig.suptitle(
        "Solution path: norm of Gamma per filter during training (coloured: the filters that pruning "
        "keeps; grey: the ones it removes)",
        fontsize=10,
    )
    save_figure(fig, out_dir / "solution_path.png")
    return "solution_path"


def plot_weights(out_dir: Path, cfg, w: dict) -> str:
    before, after = w["before"].reshape(len(w["before"]), -1), w["after"].reshape(len(w["after"]), -1)
    lim = float(np.percentile(np.abs(before), 99.5)) or 1.0  # a few large weights would wash the rest out
    fig = figure(11, 5.5)
    axes = fig.subplots(1, 2, sharey=True)
    r = w["report"]
    for ax, m, title in (
        (axes[0], before, "before pruning"),
        (
            axes[1],
            after,
            f"after pruning at {cfg.prune_percent:g}%: {r['removed']} of {r['total']} {r['kind']} removed",
        ),
    ):
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set(title=title, xlabel="weight within the filter (input channel x kernel, flattened)")
    axes[0].set_ylabel("filter (output channel)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(f"{cfg.path_layer} of {w['run']}: pruned filters become zero rows", fontsize=10)
    save_figure(fig, out_dir / "conv3_weights.png")
    return "conv3_weights"


def _label_percents(ax, pts: list[tuple[float, float, float]], color: str) -> None:
    """Nominal percent beside each point; points that coincide (ties) share one label, e.g. '10-80'."""
    groups: dict[tuple, list[float]] = {}
    for pct, x, y in pts:
        groups.setdefault((round(100 * x, 1), round(y, 2)), []).append(pct)
    for (x, y), pcts in groups.items():
        text = f"{min(pcts):g}" if len(pcts) == 1 else f"{min(pcts):g}-{max(pcts):g}"
        ax.annotate(text, (x, y), fontsize=6, color=color, textcoords="offset points", xytext=(3, -8))


def plot_lenet_pruning(out_dir: Path, rows: list[dict], runs: list[dict]) -> str:
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig = figure(5.6 * len(layers), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(layers)))
    sets = list(dict.fromkeys(r["layer_set"] for r in rows))
    markers = ["o", "s", "^", "D"]
    for ax, layer in zip(axes, layers):
        for run in dict.fromkeys(r["run"] for r in rows):
            for k, ls in enumerate(sets):
                # in the order of the nominal percent: ties can make the removed fraction jump or stand still
                pts = sorted(
                    (r["percent"], r["fraction"], r["accuracy_pruned"])
                    for r in rows
                    if r["run"] == run and r["layer_set"] == ls and r["layer"] == layer
                )
                if not pts:
                    continue
                color = COLORS[next(r["optimizer"] for r in rows if r["run"] == run)]
                _, x, y = zip(*pts)
                ax.plot(
                    100 * np.array(x),
                    y,
                    color=color,
                    marker=markers[k % len(markers)],
                    ls=STYLES[k % len(STYLES)],
                    ms=4,
                    label=f"{run}: prune {ls}",
                )
                if k == len(sets) - 1 or layer not in sets[-1].split("+"):
                    _label_percents(ax, pts, color)
        for run in runs:
            if run.get("accuracy_unpruned") is not None:
                ax.axhline(run["accuracy_unpruned"], color=COLORS[run["optimizer"]], lw=0.7, ls=":")
        ax.set(
            xlabel=f"fraction of {layer} actually removed (%)",
            ylabel="test accuracy after pruning (%)",
            title=f"{layer}",
        )
        ax.legend(fontsize=7)
    fig.suptitle(
        "LeNet: accuracy against the fraction actually removed (labels: nominal percent; dotted: unpruned accuracy)",
        fontsize=10,
    )
    save_figure(fig, out_dir / "lenet_pruning.png")
    return "lenet_pruning"


def _percent(values: list) -> np.ndarray:
    return np.array([100 * a if a is not None else np.nan for a in values], dtype=float)


def vgg_note(run: dict) -> str:
    """Why the VGG run has no pruning panels (run_record always finds a test accuracy to draw)."""
    if run["stalled"]:
        return (
            f"No pruning curve: {run['model']} stalled at chance (final test accuracy "
            f"{run['final_test_acc']:.2f}%), so it was not pruned."
        )
    return f"No pruning curve: no pruning rows for {run['model']}."


def plot_vgg(out_dir: Path, cfg, run: dict, rows: list[dict]) -> str:
    if rows:
        fig = figure(16, 4.6)
        ax_curve, ax_sweep, ax_each = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
    else:  # a stalled run is not pruned: say so where the pruning panels would be, not empty axes
        fig = figure(11, 4.6)
        ax_curve, ax_note = fig.subplots(1, 2)
        ax_note.axis("off")
        ax_note.text(0.5, 0.5, vgg_note(run), ha="center", va="center", wrap=True, transform=ax_note.transAxes)
    h = run["history"]
    ax_curve.plot(h["epoch"], _percent(h["test_acc"]), marker=".", color="tab:purple", label="test")
    ax_curve.plot(
        h["epoch"], _percent(h["train_acc"]), marker=".", color="tab:purple", ls="--", label="train (running)"
    )
    ax_curve.set(
        xlabel="epoch",
        ylabel="accuracy (%)",
        title=f"{run['model']}, SLBI-Adam" + (" (STALLED)" if run["stalled"] else ""),
    )
    epoch_ticks(ax_curve)
    ax_curve.legend(fontsize=8)
    if not rows:
        save_figure(fig, out_dir / "vgg_pruning.png")
        return "vgg_pruning"
    sweep = sorted((r for r in rows if r.get("experiment") == "sweep"), key=lambda r: r["percent"])
    each = [r for r in rows if r.get("experiment") == "each_layer"]
    before = run.get("accuracy_unpruned")
    if sweep:
        ax_sweep.plot(
            [100 * r["fraction"] for r in sweep], [r["accuracy_pruned"] for r in sweep], marker="o", color="tab:purple"
        )
        for r in sweep:
            ax_sweep.annotate(
                f"{r['percent']:g}",
                (100 * r["fraction"], r["accuracy_pruned"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
        ax_sweep.axhline(before, color="0.4", ls=":", lw=0.8, label=f"unpruned {before:.2f}%")
        ax_sweep.set(
            xlabel=f"fraction of {sweep[0]['layer']} removed (%) (labels: percent)",
            ylabel="test accuracy (%)",
            title=f"pruning-ratio sweep of {sweep[0]['layer']}",
        )
        ax_sweep.legend(fontsize=8)
    if each:
        x = np.arange(len(each))
        ax_each.bar(
            x,
            [r["accuracy_pruned"] for r in each],
            color=["tab:purple" if r["unit"] == "filters" else "tab:olive" for r in each],
        )
        for i, r in enumerate(each):
            ax_each.annotate(
                f"{100 * r['fraction']:.0f}%",
                (i, r["accuracy_pruned"]),
                ha="center",
                fontsize=6,
                textcoords="offset points",
                xytext=(0, 2),
            )
        ax_each.axhline(before, color="0.4", ls=":", lw=0.8)
        ax_each.set_xticks(x, [r["layer"].removesuffix(".weight") for r in each], rotation=45, ha="right", fontsize=7)
        ax_each.set(
            ylabel="test accuracy (%)",
            title=f"each layer pruned alone at {cfg.vgg_layer_percent:g}% "
            "(labels: fraction removed; olive: FC weights)",
        )
    save_figure(fig, out_dir / "vgg_pruning.png")
    return "vgg_pruning"
