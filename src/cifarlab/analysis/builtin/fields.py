"""Options several built-in analyses share: one definition each, so their flags agree."""

from __future__ import annotations

from ..registry import option

IMAGES_GROUP = "filters, features, gradcam"  # the --help group of the analyses that show test images


def layer(default_text: str):
    return option(
        None,
        "layer(s) by dotted name, repeatable or comma-separated",
        default_text=default_text,
        action="append",
        metavar="NAME",
    )


def layer_list(values: str | list[str] | None) -> list[str] | None:
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def n_images(default: int):
    return option(default, "test images shown")


def n(default: int | None, default_text: str | None = None):
    """--n: the images of --split (landscape, interpolate, trajectory, hessian, probes)."""
    return option(
        default,
        "images of --split, no augmentation: the first n, or n at random with --seed",
        default_text=default_text,
    )


def split():
    return option("train", "train | test images")


def bn(default: str):
    return option(default, "BN with running statistics (eval) or batch statistics (train)")


def include_biasbn():
    return option(False, "also move biases and BN parameters (default: zero in the directions)")


# documented by registry.Common (the top of --help)
def batch_size():
    return option(500)


def seed():
    return option(None)


def iters(default: int = 100):
    return option(default, "power iterations per eigenvalue")
