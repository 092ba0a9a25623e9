"""One sentence per figure: what it shows.

A figure's caption comes from, in order: a `captions.json` ({file name: caption}) in its folder,
the first pattern of CAPTIONS that matches its file name (the names the analyses, studies, sweeps
and sparsity code write), or a sentence made from the name itself.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

# (regex on the file stem, caption template filled with the named groups)
CAPTIONS: list[tuple[str, str]] = [
    # analysis/filters.py
    (r"filters_first", "First-layer convolution kernels as RGB images, each filter min-max normalized on its own."),
    (
        r"kernels_(?P<layer>.+)",
        "Kernels of layer {layer} as heatmaps on one zero-centred colour scale (red positive, blue negative).",
    ),
    # analysis/features.py
    (
        r"features_(?P<i>\d+)_(?P<j>\d+)_(?P<layer>.+)",
        "Test image {i} and the first channels of the output of {layer}, each channel on its own scale.",
    ),
    (r"features_(?P<i>\d+)", "Feature maps of every stage for test image {i}: a row per stage, input on the left."),
    # analysis/attribution.py
    (
        r"attribution",
        "Where the network looks: Grad-CAM-family and gradient attribution maps over test images, "
        "titled with the predicted and true class (red: a mistake).",
    ),
    (
        r".+\.gradcam",
        "An input image (as the model sees it) beside its Grad-CAM map for the predicted class "
        "(cifarlab predict --gradcam).",
    ),
    (r"grad_?cam.*", "Grad-CAM class-activation maps overlaid on the input images."),
    # analysis/metrics.py
    (r"confusion", "Confusion matrix on the test set: colours are the share of each true class, cells the counts."),
    (r"per_class", "Test accuracy for each class."),
    (r"misclassified", "The test images the model gets wrong with the highest confidence (true -> predicted)."),
    # analysis/hessian.py
    (
        r"hessian_grid",
        "Top Hessian eigenvalue on a coarse grid of the loss-landscape directions: where the loss surface is sharpest.",
    ),
    (r"hessian.*", "Hessian spectrum of the training loss at the trained weights."),
    # analysis/landscape.py (prefixes landscape, interpolation, trajectory)
    (
        r"landscape_1d",
        "Loss (solid) and accuracy (dashed) along one random filter-normalized direction through the trained weights.",
    ),
    (
        r"landscape_contour",
        "Contour lines of the loss on the plane of two random filter-normalized directions "
        "around the trained weights (centre).",
    ),
    (
        r"landscape_contourf",
        "Filled contour of the loss around the trained weights on two random "
        "filter-normalized directions (log colour scale).",
    ),
    (
        r"landscape_heatmap",
        "Heatmap of the loss around the trained weights on two random filter-normalized directions.",
    ),
    (
        r"landscape_surface",
        "The loss landscape around the trained weights as a 3D surface (clipped at a high percentile).",
    ),
    (
        r"landscape_slice_d(?P<k>\d)",
        "Loss and accuracy along direction d{k} alone: the central slice of the 2D landscape.",
    ),
    (
        r"interpolation_1d",
        "Loss and accuracy on the straight line between two checkpoints (t=0: the first, t=1: the second).",
    ),
    (r"interpolation_.*", "Loss between two checkpoints along the straight line joining them."),
    (
        r"trajectory_contourf?",
        "The training trajectory (black, star: the end) projected on its top-2 PCA "
        "directions, over the loss contours of that plane.",
    ),
    (r"trajectory_heatmap", "The loss on the plane of the trajectory's top-2 PCA directions, trajectory drawn on top."),
    (r"trajectory_surface", "The loss on the plane of the training trajectory's top-2 PCA directions as a 3D surface."),
    (r"trajectory_slice_d(?P<k>\d)", "Loss and accuracy along PCA direction {k} of the training trajectory."),
    # studies/bn_study.py
    (
        r"training_curves",
        "Training curves: the training loss per step and the train/test accuracy per epoch of "
        "each model and learning rate.",
    ),
    (
        r"loss_band",
        "Loss band: for each model, the per-step min and max of the training loss over the "
        "learning rates; a narrower band means training is less sensitive to the learning rate.",
    ),
    (
        r"probes",
        "Santurkar et al. probes along the gradient step: loss variation, gradient predictiveness "
        "(ranges over the step size) and effective beta-smoothness, per model and learning rate.",
    ),
    (
        r"proxies",
        "Cheap trajectory proxies (gradient change between steps, not the probes) and the internal "
        "covariate shift measure, per model and learning rate.",
    ),
    # sweep/figures.py
    (
        r"metric_by_axis",
        "The sweep's primary metric for each value of each axis, mean ± std over the runs that "
        "share it (other axes pooled).",
    ),
    (r"curves", "Evaluation accuracy per epoch of the best configurations of the sweep (band: min..max over seeds)."),
    (r"run_time", "Training time of each configuration of the sweep, mean ± std over seeds."),
    # sparsity (DessiLBI study, pruning)
    (
        r"sparsity.*",
        "Sparsity of the DessiLBI shadow Gamma per layer over training: the share of weights or "
        "filters it has selected.",
    ),
    (
        r"prun\w*_?acc\w*|accuracy_vs_prun\w*",
        "Test accuracy after pruning each layer at each percentage, against the fraction of weights actually removed.",
    ),
    (r"prun.*", "Accuracy and removed fraction when the network is pruned by the DessiLBI scores."),
    (r"gamma.*", "The sparse shadow Gamma of DessiLBI: which weights or filters it selects."),
    (
        r"solution_path",
        "The DessiLBI solution path: the norm of Gamma per filter over training, in fractional epochs "
        "(a point every path_every steps); coloured: the filters pruning keeps, grey: the ones it removes.",
    ),
    (
        r"path.*|reg(ularization)?_path.*",
        "The DessiLBI regularization path: when each weight or filter first enters Gamma.",
    ),
    (r"weights?_(?P<layer>.+)", "The weights of {layer}."),
]

_COMPILED = [(re.compile(p + r"\Z"), t) for p, t in CAPTIONS]


@lru_cache(maxsize=256)
def _folder_captions(folder: Path) -> dict[str, str]:
    p = folder / "captions.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a broken captions file should not sink the report; fall back to the table
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def caption_for(path: str | Path) -> str:
    """The one-sentence caption of the figure file at `path`."""
    path = Path(path)
    own = _folder_captions(path.parent.resolve())
    for key in (path.name, path.stem):
        if key in own:
            return own[key]
    for rx, template in _COMPILED:
        m = rx.match(path.stem)
        if m:
            return template.format(**m.groupdict())
    return fallback_caption(path.stem)


def fallback_caption(stem: str) -> str:
    words = re.sub(r"[_\-.]+", " ", stem).strip()
    return f"Figure: {words}." if words else "Figure."
