"""The Python API: what `import cifarlab` offers (re-exported there). One call per job, arrays back.

models.py     create_model, list_models, count_params
data.py       load_data, loaders
classifier.py Classifier (a network holding its normalization and class names), load
training.py   fit -> Run, sweep -> rows
analyses.py   gradcam, filters, feature_maps, landscape, hessian_eigs, hessian_trace, probes
sparsity.py   SLBI, SLBIAdam, prune, recover
studies.py    bn_study, dessilbi_study
"""

from __future__ import annotations

from ..data import Dataset
from ..errors import UserError
from ..sweeps.runner import SweepFailed
from .analyses import feature_maps, filters, gradcam, hessian_eigs, hessian_trace, landscape, probes
from .classifier import Classifier, load
from .data import load_data, loaders
from .models import count_params, create_model, list_models
from .sparsity import SLBI, SLBIAdam, prune, recover
from .studies import bn_study, dessilbi_study
from .training import Run, fit, sweep

__all__ = [
    "create_model", "list_models", "count_params",
    "load_data", "loaders", "Dataset",
    "fit", "Run", "load", "Classifier", "sweep",
    "gradcam", "filters", "feature_maps", "landscape", "hessian_eigs", "hessian_trace", "probes",
    "SLBI", "SLBIAdam", "prune", "recover",
    "bn_study", "dessilbi_study",
    "UserError", "SweepFailed",
]  # fmt: skip
