"""The report: one self-contained HTML file (and optionally Markdown + PNGs) from run, sweep and
study folders.

    report_folder("runs/pj2")                       # runs/pj2/report.html
    report_folder("runs/grid", "grid.html", markdown=True)   # + grid.md and grid_figures/
"""

from .build import report_folder
from .captions import caption_for

__all__ = ["caption_for", "report_folder"]
