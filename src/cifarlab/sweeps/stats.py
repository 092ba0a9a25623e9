"""What the sweep's tables and figures agree on: which runs count, which way a metric is better, the best configuration."""

from __future__ import annotations

FINISHED = ("done", "diverged")


def direction(metric: str) -> int:
    """+1 if higher is better (accuracies), -1 if lower is (losses, times), 0 if neither is known."""
    if "acc" in metric:
        return 1
    if any(w in metric for w in ("loss", "seconds", "time", "error")):
        return -1
    return 0


def best_config(groups: list[dict], metric: str) -> dict | None:
    scored = [g for g in groups if g.get(metric) is not None]
    if not scored or direction(metric) == 0:
        return None
    return max(scored, key=lambda g: direction(metric) * g[metric][0])
