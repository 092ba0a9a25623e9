"""`inspect RUN gradcam`: where the network looks, by Grad-CAM and its relatives (analysis/attribution.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cifarlab.errors import UserError

from ..registry import option, register
from .fields import IMAGES_GROUP, batch_size, layer, layer_list, n_images


@dataclass
class GradcamOptions:
    layer: str | list[str] | None = layer("the last with a map of at least 4x4")
    n_images: int = n_images(16)
    methods: str = option(
        "all", "comma list of gradcam, gradcam++, layercam, guided_gradcam, integrated_gradients, or all"
    )
    target: str | None = option(None, "class name or index", default_text="the predicted class")
    batch_size: int = batch_size()


def class_index(target: str | None, classes: list[str]) -> int | None:
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    try:
        k = int(target)
    except ValueError:
        raise UserError(f"unknown class {target!r}; classes: {', '.join(classes)}") from None
    if not 0 <= k < len(classes):
        raise UserError(f"class index {k} out of range 0..{len(classes) - 1}")
    return k


def check(o: GradcamOptions, in_all: bool) -> None:
    layers = layer_list(o.layer)
    if layers and len(layers) > 1:
        raise UserError(f"gradcam takes one --layer, got {', '.join(layers)}")


@register(
    "gradcam",
    GradcamOptions,
    describe=lambda res, classes: f"{', '.join(res['methods'])} at layer {res['layer']}",
    captions={
        r"attribution": "Where the network looks: Grad-CAM-family and gradient attribution maps over test images, "
        "titled with the predicted and true class (red: a mistake).",
        r"grad_?cam.*": "Grad-CAM class-activation maps overlaid on the input images.",
    },
    group=IMAGES_GROUP,
    in_all=True,
    check=check,
)
def gradcam(s, o: GradcamOptions, out: Path) -> dict:
    from .. import attribution

    layers = layer_list(o.layer)
    methods = attribution.METHODS if o.methods == "all" else [m.strip() for m in o.methods.split(",") if m.strip()]
    x, y = s.test(o.n_images)
    return attribution.run_attribution(
        s.model,
        x,
        out,
        y=y,
        layer=layers[0] if layers else None,
        methods=methods,
        target=class_index(o.target, s.classes),
        classes=s.classes,
        mean=s.mean,
        std=s.std,
        batch_size=min(o.batch_size, 64),
        max_rows=len(x),
        split="test",  # Session.test takes the first n test images, in file order
        indices=list(range(len(x))),
    )
