"""`inspect RUN features`: feature maps of test images, stage by stage (analysis/features.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import register
from .fields import IMAGES_GROUP, layer, layer_list, n_images


@dataclass
class FeaturesOptions:
    layer: str | list[str] | None = layer("one per stage")
    n_images: int = n_images(4)


@register(
    "features",
    FeaturesOptions,
    describe=lambda res, classes: f"{len(res['figures'])} figures",
    captions={
        r"features_(?P<i>\d+)_(?P<j>\d+)_(?P<layer>.+)": "Test image {i} and the first channels of the output of "
        "{layer}, each channel on its own scale.",
        r"features_(?P<i>\d+)": "Feature maps of every stage for test image {i}: a row per stage, input on the left.",
    },
    group=IMAGES_GROUP,
    in_all=True,
)
def features(s, o: FeaturesOptions, out: Path) -> dict:
    from ..features import run_features

    x, _ = s.test(o.n_images)
    return run_features(s.model, x, out, layer_list(o.layer), mean=s.mean, std=s.std, max_images=len(x))
