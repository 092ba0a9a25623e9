"""Markdown tables, CSV text and table numbers: the one formatter the sweeps, studies, pj2 and the report share.

Each caller keeps its own conventions (what None or a flag reads as, how many digits a number gets)
by passing them in; the table shapes are the same everywhere:

    | a | b |        md_table(rows, ["a", "b"])
    |---|---|        md_lines(head, cells, align=["---", "---:"]) for pre-formatted cells
    | 1 | x |
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from typing import Any


def g4(v: float) -> str:
    """Four significant digits: 0.01257, 98.61, 1.2e+04."""
    return f"{v:.4g}"


def acc2(v: float) -> str:
    """Two decimals for numbers of 1 and up (accuracies in %: 98.61), three significant digits below (0.0126)."""
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def fmt(v: Any, none: str = "-", true: str = "True", false: str = "False", number: Callable[[float], str] = g4) -> str:
    """One table cell: None, a flag and a float as the caller's table spells them; anything else as str()."""
    if v is None:
        return none
    if isinstance(v, bool):
        return true if v else false
    if isinstance(v, float):
        return number(v)
    return str(v)


def fmt_value(v: Any) -> str:
    """A config or JSON value as YAML-ish text: none, true, 0.001, [1, 2], {a: 1}."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {fmt_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return fmt(v, none="none", true="true", false="false")


# Column headers that say how a number was chosen: a best epoch picked on test is an optimistic number
HEADERS = {
    "final_test_acc": "final test acc",
    "best_val_acc": "best val acc (selected on val)",
    "final_val_acc": "final val acc",
    "best_test_acc": "best test acc (selected on test)",
    "params": "params",
    "macs_per_image": "FLOPs/image (multiply-adds)",
    "train_seconds": "train time (s)",
    "images_per_s": "images/s",
    "peak_memory_mb": "peak memory (MB)",
}
# What a run costs, shown beside its accuracy wherever summary.json records it
SCORECARD = ("params", "macs_per_image", "train_seconds", "images_per_s", "peak_memory_mb")
SPREAD_NOTE = (
    "≈: within seed spread of the best; the difference in mean is no larger than the larger of the two "
    "sample stds (both with n ≥ 2 seeds), so these seeds do not tell the two apart."
)


def header(metric: str) -> str:
    return HEADERS.get(metric, metric)


def giga(v: float) -> str:
    """Multiply-adds per image: 0.56 G, 41.2 M."""
    return f"{v / 1e9:.2f} G" if abs(v) >= 1e8 else f"{v / 1e6:.3g} M"


def fmt_cost(metric: str, v: float) -> str:
    """One scorecard number: params 11,173,962; MACs 0.56 G; images/s 1,234; memory (MB) 1,160; seconds 12.3."""
    if metric == "params":
        return f"{v:,.0f}"
    if metric == "macs_per_image":
        return giga(v)
    if metric in ("images_per_s", "peak_memory_mb"):
        return f"{v:,.0f}"
    return f"{v:.1f}"


def fmt_stat(metric: str, stat: tuple[float, float | None] | None) -> str:
    """A (mean, std) over seeds: accuracies in % with 2 decimals, seconds with 1, scorecard columns
    as fmt_cost (no std for params and MACs: seeds do not change them), anything else 4 digits."""
    if stat is None:
        return "-"
    mean, std = stat
    if metric in SCORECARD:
        spread = std is not None and metric not in ("params", "macs_per_image")
        return fmt_cost(metric, mean) + (f" ± {fmt_cost(metric, std)}" if spread else "")
    scale, digits = (100.0, 2) if metric.endswith("acc") else (1.0, 1 if "seconds" in metric else 4)
    if digits == 4:
        return f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else "")
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def within_spread(a: tuple[float, float | None] | None, b: tuple[float, float | None] | None) -> bool:
    """Two (mean, std) over seeds whose means differ by no more than the larger std (SPREAD_NOTE).
    False without a std on both sides (a single seed has no spread to compare against)."""
    if a is None or b is None or a[1] is None or b[1] is None:
        return False
    return abs(a[0] - b[0]) <= max(a[1], b[1])


def md_lines(head: Sequence[str], body: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> list[str]:
    """A Markdown table from cells already formatted; align holds '---' or '---:' per column."""
    sep = "|" + "|".join(align if align is not None else ["---"] * len(head)) + "|"
    return ["| " + " | ".join(head) + " |", sep] + ["| " + " | ".join(cells) + " |" for cells in body]


def md_table(
    rows: Sequence[dict], cols: Sequence[str], names: Sequence[str] | None = None, cell: Callable[[Any], str] = fmt
) -> list[str]:
    """A Markdown table of dict rows: one column per key in cols (a missing key is None), headed by names."""
    return md_lines(list(names or cols), [[cell(r.get(c)) for c in cols] for r in rows], ["---"] * len(cols))


def csv_text(rows: Sequence[dict], cols: Sequence[str] | None = None) -> str:
    """CSV of dict rows ('\\n' line ends; None is an empty cell; keys not in cols are left out).
    cols defaults to the first row's keys."""
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=list(cols if cols is not None else rows[0]), extrasaction="ignore", lineterminator="\n"
    )
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
