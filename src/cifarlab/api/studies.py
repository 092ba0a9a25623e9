"""The studies from Python, with zoo names or your own modules: `bn_study(models=[...])`,
`dessilbi_study(...)`. Each writes its study folder (as the commands do) and returns its summary
with the arrays."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..config import compose_dict, from_dict
from ..data import Dataset
from ..errors import UserError
from ..models import register
from ..train.checkpoint import CUSTOM
from .errors import speaks_python
from .training import nested

ModelEntry = str | Mapping[str, Any] | nn.Module | tuple[str, nn.Module]


def _factory(module: nn.Module):
    """A zoo factory handing out copies of `module` (the same initial weights for every run)."""

    def make(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        m = copy.deepcopy(module)
        if not hasattr(m, "stage_names"):
            m.stage_names = []  # type: ignore[assignment]  # the zoo's contract; a foreign module names no stages
        return m

    return make


def model_entries(models: Sequence[ModelEntry]) -> tuple[list[Any], bool]:
    """The study config's `models` list: zoo names and mappings pass; a module (or (label, module))
    is registered in the zoo as custom:<label> for this process. Returns (entries, any custom)."""
    out: list[Any] = []
    custom = False
    for entry in models:
        label, module = entry if isinstance(entry, tuple) else (None, entry)
        if not isinstance(module, nn.Module):
            out.append(module)
            continue
        label = label or type(module).__name__
        name = f"{CUSTOM}{label}"
        if any(isinstance(e, dict) and e.get("name") == name for e in out):
            raise UserError(f"models: two modules named {label!r}; pass (label, module) pairs to tell them apart")
        register(name)(_factory(module))  # a rerun re-registers the same name: the newest module wins
        out.append({"name": name, "label": label})
        custom = True
    return out, custom


def _settings(kind: str, config: str | None, settings: Mapping[str, Any]) -> dict:
    return compose_dict(config or kind, nested(settings, "settings"), kind="studies")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@speaks_python
def bn_study(
    models: Sequence[ModelEntry] | None = None,
    *,
    config: str | None = None,
    out: str | Path | None = None,
    data: str | Dataset | None = None,
    parallel: int | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """The batch-normalization study: every model at every learning rate, the loss band, Santurkar
    et al.'s probes. models: zoo names ("VGG_A"), mappings ({"name": ..., "label": ...}), your own
    nn.Modules or (label, module) pairs; settings: the study's keys (epochs=2, lrs=[1e-3], n_items=512,
    probe_every=10, ...) over the preset `config` (default "bn"). out: the study folder (None: a new
    temporary one). Returns summary.json's dict with "arrays" (arrays.npz) and "out"."""
    from ..studies.bn_study import BNStudyConfig, run_bn_study

    data_dict = _settings("bn", config, settings)
    custom = False
    if models is not None:
        data_dict["models"], custom = model_entries(models)
    if isinstance(data, str):
        data_dict["data"] = data
    cfg = from_dict(BNStudyConfig, data_dict)
    where = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="cifarlab-bn-study-"))
    # your modules live in this process only: their runs cannot go to other processes
    summary = run_bn_study(
        cfg, where, dataset=data if isinstance(data, Dataset) else None, parallel=1 if custom else parallel
    )
    return {**summary, "out": str(where), "arrays": _arrays(where / "arrays.npz")}


@speaks_python
def dessilbi_study(
    *,
    config: str | None = None,
    out: str | Path | None = None,
    data: str | Dataset | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """The DessiLBI study: LeNet on MNIST with SLBI, SGD-momentum and SLBI-Adam, pruning, and (vgg=True)
    VGG_A_BatchNorm with SLBI-Adam. settings: the study's keys (epochs=1, n_items=512, vgg=False,
    percents=[50, 80], ...) over the preset `config` (default "dessilbi"); data: the LeNet part's
    source or Dataset. Returns summary.json's dict with "out"."""
    from ..studies.dessilbi_study import DessiLBIStudyConfig, check_config, run_dessilbi_study

    data_dict = _settings("dessilbi", config, settings)
    if isinstance(data, str):
        data_dict["lenet_data"] = data
    cfg = check_config(from_dict(DessiLBIStudyConfig, data_dict))
    where = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="cifarlab-dessilbi-"))
    summary = run_dessilbi_study(cfg, where, lenet_dataset=data if isinstance(data, Dataset) else None)
    return {**summary, "out": str(where)}
