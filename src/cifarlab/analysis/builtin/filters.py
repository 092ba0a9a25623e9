"""`inspect RUN filters`: the convolution kernels as pictures (analysis/filters.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import option, register
from .fields import IMAGES_GROUP, layer, layer_list


@dataclass
class FiltersOptions:
    layer: str | list[str] | None = layer("one per stage")
    kernel_mode: str = option("mean", "filters of deeper layers: mean (over inputs) | first")


@register(
    "filters",
    FiltersOptions,
    describe=lambda res, classes: f"{len(res['figures'])} figures",
    captions={
        r"filters_first": "First-layer convolution kernels as RGB images, each filter min-max normalized on its own.",
        r"kernels_(?P<layer>.+)": "Kernels of layer {layer} as heatmaps on one zero-centred colour scale "
        "(red positive, blue negative).",
    },
    group=IMAGES_GROUP,
    in_all=True,
)
def filters(s, o: FiltersOptions, out: Path) -> dict:
    from ..filters import run_filters

    return run_filters(s.model, out, layer_list(o.layer), o.kernel_mode)
