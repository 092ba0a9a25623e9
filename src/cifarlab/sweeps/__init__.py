"""Sweeps: a grid of configurations x seeds from one YAML file, run here or over a Ray cluster,
tabulated as mean ± std per configuration.

    sweep = load_sweep("grid_resvgg16_24", ["train.epochs=5"])   # preset name or path; --set items
    runs = expand(sweep)                                          # RunSpec per configuration x seed
    rows = run_sweep(sweep, "runs/grid", engine="ray", gpus_per_trial=1)
    tabulate("runs/grid")                                         # results.csv, results.md, figures/
"""

from .grid import DEFAULT_METRICS, RunSpec, SweepConfig, expand, load_sweep, resolve_sweep
from .results import tabulate
from .runner import default_out, run_sweep

__all__ = [
    "DEFAULT_METRICS",
    "RunSpec",
    "SweepConfig",
    "default_out",
    "expand",
    "load_sweep",
    "resolve_sweep",
    "run_sweep",
    "tabulate",
]
