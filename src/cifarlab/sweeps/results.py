"""Sweep results from the run folders alone: results.csv, results.md and figures.

Each run folder holds run.json (its axis values and seed, written by the runner) and, once trained,
the engine's summary.json and metrics.jsonl, or error.txt when it failed. `tabulate(out_dir)`
rebuilds every table and figure from those files, so an interrupted or extended sweep, and the
report, all read the same truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..config import from_dict, read_yaml
from ..errors import UserError
from ..run import atomic_write_text
from ..run import read_summary as read_summary_file
from ..tables import SCORECARD, SPREAD_NOTE, csv_text, fmt_stat, header, md_lines, within_spread
from .figures import sweep_figures
from .grid import DEFAULT_METRICS, SweepConfig, sweep_axes
from .stats import FINISHED, best_config, direction

__all__ = [
    "FINISHED",
    "best_config",
    "collect",
    "direction",
    "fmt_stat",
    "markdown",
    "read_summary",
    "read_sweep",
    "run_status",
    "summarize",
    "tabulate",
    "write_csv",
]


# The numbers a run's summary.json holds (train/engine.py): what a sweep's `metrics` may name.
SUMMARY_METRICS = (
    "final_test_acc", "final_val_acc", "best_test_acc", "best_val_acc", "final_test_acc_no_tta",
    "final_val_acc_no_tta", "final_train_loss", "epochs", "eval_seconds", "compile_seconds", "capture_seconds",
    *SCORECARD,
)  # fmt: skip


def check_metrics(metrics: list[str], summaries: list[dict] = ()) -> None:
    """A metric no summary holds would be dropped from the table without a word, and the ranking
    would fall to the next column (train_seconds): name it instead. A key some summary holds counts."""
    seen = {k for s in summaries for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    unknown = [m for m in metrics if m not in SUMMARY_METRICS and m not in seen]
    if unknown:
        raise UserError(f"sweep: unknown metric '{unknown[0]}'; choose from: {', '.join(SUMMARY_METRICS)}")


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None when it is missing or unreadable (a corrupt file: the run reruns)."""
    return read_summary_file(run_dir / "summary.json")


def summary_corrupt(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() and read_summary(run_dir) is None


def run_status(run_dir: Path) -> str:
    """done | diverged (finished, loss went non-finite) | failed | partial | pending."""
    summary = read_summary(run_dir)
    if summary is not None:
        return "diverged" if summary.get("diverged") else "done"
    if (run_dir / "error.txt").is_file():
        return "failed"
    if (run_dir / "last.pt").is_file():
        return "partial"  # interrupted: the next `cifarlab sweep` resumes it
    return "pending"


def read_sweep(out_dir: Path) -> SweepConfig | None:
    p = out_dir / "sweep.yaml"
    return from_dict(SweepConfig, read_yaml(p)) if p.is_file() else None


def collect(out_dir: str | Path, metrics: list[str] | None = None) -> tuple[list[dict], list[str], list[str]]:
    """One row per run folder (in expansion order); also the axis names and the metrics."""
    out_dir = Path(out_dir)
    infos = []
    for p in sorted(out_dir.glob("*/run.json")):
        try:
            infos.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a folder that is not one of ours
    if not infos:
        raise UserError(f"{out_dir} holds no sweep runs (no */run.json)")
    sweep = read_sweep(out_dir)
    metrics = list(metrics or (sweep.metrics if sweep else DEFAULT_METRICS))
    # the scorecard (what a run cost) follows the accuracies; markdown drops a column no run has
    metrics = [m for m in metrics if m not in SCORECARD] + list(SCORECARD)
    axis_names = [ax.name for ax in sweep_axes(sweep)] if sweep else list(infos[0]["axes"])
    rows, summaries = [], []
    for info in sorted(infos, key=lambda i: i.get("index", 0)):
        run_dir = out_dir / info["run_id"]
        status = run_status(run_dir)
        row: dict[str, Any] = {"run_id": info["run_id"], "config_id": info["config_id"]}
        row.update({a: info["axes"].get(a, "") for a in axis_names})
        row.update({"seed": info["seed"], "status": status})
        summary = (read_summary(run_dir) or {}) if status in FINISHED else {}
        summaries.append(summary)
        for m in metrics:
            v = summary.get(m)
            # an int (params, MACs) stays one: results.csv then reads 176402, not 176402.0
            row[m] = v if isinstance(v, int) and not isinstance(v, bool) else float(v) if isinstance(v, float) else None
        row["error"] = _first_line(run_dir / "error.txt") if status == "failed" else ""
        rows.append(row)
    check_metrics(metrics, summaries)
    return rows, axis_names, metrics


def _first_line(p: Path) -> str:
    lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed"


def summarize(rows: list[dict], axis_names: list[str], metrics: list[str]) -> list[dict]:
    """One entry per configuration: its axis labels, n finished, n failed, (mean, std) per metric."""
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(
            r["config_id"],
            {
                "config_id": r["config_id"],
                **{a: r[a] for a in axis_names},
                "n": 0,
                "diverged": 0,
                "failed": 0,
                "values": {m: [] for m in metrics},
            },
        )
        if r["status"] in FINISHED:  # a diverged run is a result of its configuration: it counts, and is marked
            g["n"] += 1
            g["diverged"] += r["status"] == "diverged"
            for m in metrics:
                if r[m] is not None and math.isfinite(r[m]):
                    g["values"][m].append(r[m])
        elif r["status"] == "failed":
            g["failed"] += 1
    out = []
    for g in groups.values():
        vals = g.pop("values")
        for m in metrics:
            v = np.array(vals[m], dtype=float)
            # sample std over seeds (ddof=1); a single seed has no spread to show
            g[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None) if len(v) else None
        out.append(g)
    return out


def markdown(name: str, rows: list[dict], groups: list[dict], axis_names: list[str], metrics: list[str]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "diverged", "failed", "partial", "pending")}
    seeds = sorted({r["seed"] for r in rows})
    state = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [
        f"# Sweep {name}",
        "",
        f"{len(rows)} runs ({state}); {len(groups)} configurations x seeds {seeds}. "
        "Each cell is the mean ± sample std over the finished seeds (n); accuracies in %, "
        "times in seconds; the best of each column is in bold. Beside the accuracies, what a run cost: "
        "parameters, FLOPs per image (multiply-adds), training time, images/s and peak memory.",
        "",
    ]
    # a column no run has (best_val_acc without a val split) is left out
    metrics = [m for m in metrics if any(g[m] is not None for g in groups)] or metrics
    show_failed = any(g["failed"] for g in groups)
    show_diverged = any(g.get("diverged") for g in groups)
    head = (
        axis_names
        + ["n"]
        + (["diverged"] if show_diverged else [])
        + (["failed"] if show_failed else [])
        + [header(m) for m in metrics]
    )
    best = {m: best_config(groups, m) for m in metrics}
    primary = next((m for m in metrics if direction(m)), None)
    compare = primary is not None and best[primary] is not None and len(groups) > 1
    if compare:
        head.append(f"vs best ({header(primary)})")
    body = []
    for g in groups:
        cells = (
            [str(g[a]) for a in axis_names]
            + [str(g["n"])]
            + ([str(g["diverged"])] if show_diverged else [])
            + ([str(g["failed"])] if show_failed else [])
        )
        for m in metrics:
            cell = fmt_stat(m, g[m])
            if best[m] is not None and g[m] is not None and g[m][0] == best[m][m][0]:
                cell = f"**{cell}**"
            cells.append(cell)
        if compare:
            cells.append(vs_best(primary, g, best[primary]))
        body.append(cells)
    lines += md_lines(head, body, ["---"] * len(axis_names) + ["---:"] * (len(head) - len(axis_names)))
    if compare and any(within_spread(g[primary], best[primary][primary]) for g in groups if g is not best[primary]):
        lines += ["", SPREAD_NOTE]
    if primary and best[primary] is not None:
        b = best[primary]
        lines += [
            "",
            f"Best by {primary}: **{_describe(b, axis_names)}** ({fmt_stat(primary, b[primary])}, n={b['n']}).",
        ]
        lines += _runner_up(groups, b, axis_names, primary)
    if show_diverged:
        lines += [
            "",
            "Diverged runs (a non-finite loss) count in n and in mean ± std: they are what their "
            "configuration gave; the diverged column says how many there are.",
        ]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs (see error.txt in each folder):"]
        lines += [f"- `{r['run_id']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _describe(g: dict, axis_names: list[str]) -> str:
    return ", ".join(f"{a}={g[a]}" for a in axis_names) or g["config_id"]


def vs_best(metric: str, g: dict, best: dict) -> str:
    """A configuration against the best by metric: its difference in mean (points for accuracies),
    marked when it is within the seed spread (tables.within_spread)."""
    if g is best:
        return "best"
    if g[metric] is None:
        return "-"
    scale = 100.0 if metric.endswith("acc") else 1.0
    diff = f"{(g[metric][0] - best[metric][0]) * scale:+.2f}"
    return diff + (" (≈ within seed spread)" if within_spread(g[metric], best[metric]) else "")


def _runner_up(groups: list[dict], best: dict, axis_names: list[str], metric: str) -> list[str]:
    """A line naming the runner-up when the seeds cannot tell it from the best."""
    others = [g for g in groups if g is not best and g[metric] is not None]
    if not others:
        return []
    second = max(others, key=lambda g: direction(metric) * g[metric][0])
    if not within_spread(second[metric], best[metric]):
        return []
    return [
        "",
        f"Runner-up {_describe(second, axis_names)} ({fmt_stat(metric, second[metric])}, n={second['n']}) "
        "is ≈ within seed spread of the best: these seeds do not separate the two.",
    ]


def write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, csv_text(rows, [c for c in rows[0] if c != "config_id"]))


def tabulate(out_dir: str | Path, metrics: list[str] | None = None, figures: bool = True) -> list[dict]:
    """Rebuild results.csv, results.md and figures/ of a sweep folder; returns the per-run rows."""
    out_dir = Path(out_dir)
    rows, axis_names, metrics = collect(out_dir, metrics)
    groups = summarize(rows, axis_names, metrics)
    sweep = read_sweep(out_dir)
    write_csv(out_dir / "results.csv", rows)
    atomic_write_text(
        out_dir / "results.md", markdown(sweep.name if sweep else out_dir.name, rows, groups, axis_names, metrics)
    )
    if figures:
        sweep_figures(out_dir, rows, groups, axis_names, metrics)
    return rows
