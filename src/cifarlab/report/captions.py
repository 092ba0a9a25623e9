"""One sentence per figure: what it shows.

A figure's caption comes from, in order: a `captions.json` ({file name: caption}) in its folder,
the first pattern that matches its file name (the captions the registered analyses declare, then
CAPTIONS: the names the studies, sweeps and sparsity code write), or a sentence made from the name itself.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

# Figures of the registered analyses take the captions their analyses declare (analysis/registry.py);
# these are the others'. (regex on the file stem, caption template filled with the named groups)
CAPTIONS: list[tuple[str, str]] = [
    # analysis/predict.py
    (
        r".+\.gradcam",
        "An input image (as the model sees it) beside its Grad-CAM map for the predicted class "
        "(cifarlab predict --gradcam).",
    ),
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


def captions() -> list[tuple[str, str]]:
    """Every (regex, template): the registered analyses' in their order, then CAPTIONS."""
    from ..analysis import registry

    return [c for a in registry.analyses() for c in a.captions] + CAPTIONS


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
    for rx, template in captions():
        m = re.match(rx + r"\Z", path.stem)  # re caches the compiled patterns
        if m:
            return template.format(**m.groupdict())
    return fallback_caption(path.stem)


def fallback_caption(stem: str) -> str:
    words = re.sub(r"[_\-.]+", " ", stem).strip()
    return f"Figure: {words}." if words else "Figure."
