"""The analyses cifarlab ships, each registered by its module (analysis/registry.py).

Thin modules: each declares its options and how `inspect` runs it; the work is done in
analysis/filters.py, landscape.py, ..., which they import only when they run.
"""

import importlib

# imported in this order, the order `cifarlab inspect` lists them (and `all` runs them)
MODULES = ("filters", "features", "gradcam", "metrics", "landscape", "hessian", "probes")

for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
