"""Training from Python: `fit(config, overrides=..., model=...)` returns a `Run` with the trained model
in memory; `sweep(base, axes, seeds=...)` returns the rows of results.csv. Both go through the same
engine and run folders as `cifarlab train` and `cifarlab sweep`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..config import Config, compose, nest, to_dict
from ..data import Dataset
from ..errors import UserError
from ..run import read_jsonl
from ..train.checkpoint import CUSTOM
from .classifier import Classifier, Images, load
from .errors import speaks_python


def nested(overrides: Mapping[str, Any] | None, what: str = "overrides") -> dict:
    """{'optim.lr': 0.05, 'train': {'epochs': 1}} -> {'optim': {'lr': 0.05}, 'train': {'epochs': 1}}."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise UserError(f"{what} must be a dict such as {{'optim.lr': 0.05}}, got {type(overrides).__name__}")
    bad = [k for k in overrides if not isinstance(k, str) or not k]
    if bad:
        raise UserError(f"{what}: keys must be non-empty strings such as 'optim.lr', got {bad[0]!r}")
    return nest(dict(overrides))


def make_config(config: str | Path | Mapping[str, Any] | Config | None, overrides: Mapping[str, Any] | None) -> Config:
    """A Config from a preset name, a YAML path, a dict (nested or dotted keys) or a Config (None: the
    defaults), with `overrides` on top; the engine checks choices and ranges before it reads data."""
    base: dict | str | None
    if isinstance(config, Config):
        base = to_dict(config)
    elif isinstance(config, Mapping):
        base = nested(config, "config")
    else:
        base = None if config is None else str(config)
    return compose(base, nested(overrides), cls=Config)


@dataclass(repr=False)
class Run:
    """A finished training run: `.summary` (summary.json), `.history` (metrics.jsonl, one dict per
    epoch), `.config`, `.run_dir`, and `.model`, the trained network as a `Classifier` (EMA weights
    where kept, from best.pt as `cifarlab predict` uses them)."""

    run_dir: Path
    summary: dict
    history: list[dict]
    config: Config
    module: nn.Module | None = field(default=None, repr=False)  # the module given to fit(model=...)
    _model: Classifier | None = field(default=None, repr=False)

    @property
    def model(self) -> Classifier:
        if self._model is None:
            self._model = load(self.run_dir, model=self.module)
        return self._model

    def __repr__(self) -> str:
        split = self.summary.get("best_selected_on", "test")
        acc = self.summary.get("final_test_acc", self.summary.get(f"final_{split}_acc"))
        return f"Run({str(self.run_dir)!r}, model={self.summary.get('model')!r}, final_test_acc={acc})"

    def predict(self, images: Images) -> np.ndarray:
        """Class indices of images (arrays of uint8 or [0, 1] floats, or image files)."""
        return self.model.predict(images)


def _dataset_source(cfg: Config, data: str | Dataset | None) -> tuple[Config, Dataset | None]:
    if data is None or isinstance(data, Dataset):
        return cfg, data
    from ..data.sources import resolve_source

    cfg.data.source = resolve_source(str(data), cfg.data.source)
    return cfg, None


def train_config(
    cfg: Config,
    run_dir: str | Path | None = None,
    resume: bool | str = "auto",
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
) -> Run:
    """The engine's train() with a Run back: fit's core and what `cifarlab train` calls (whose errors
    keep the command line's words). run_dir None: a new folder under cfg.out, as the command makes."""
    from ..train.engine import train

    summary = train(cfg, run_dir=run_dir, resume=resume, dataset=dataset, model=model)
    where = Path(summary.get("run_dir") or run_dir or ".")
    return Run(where, summary, read_jsonl(where / "metrics.jsonl"), cfg, model)


@speaks_python
def fit(
    config: str | Path | Mapping[str, Any] | Config | None = "quick",
    *,
    overrides: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    out: str | Path | None = None,
    data: str | Dataset | None = None,
    resume: bool | str = "auto",
) -> Run:
    """Train one configuration and return the `Run`.

    config: a preset name (`quick`, `resnet18_standard`, ...), a YAML path, a dict or a Config;
    overrides: {'train.epochs': 1, 'optim': {'lr': 0.05}} (dotted or nested keys) on top of it.
    model: your own nn.Module to train instead of the config's model (trained in place; pick a
    config whose recipe fits it, e.g. config=None for plain SGD). data: a source (as --data) or a Dataset.
    out: the run folder; None makes a new temporary one (kept, so `run_dir` stays readable). A folder
    holding this finished run returns it again (rerunning a cell costs nothing); an interrupted one
    resumes; one of other settings is refused. resume: "auto" (that), True or False.
    """
    cfg, dataset = _dataset_source(make_config(config, overrides), data)
    if model is not None:
        if not isinstance(model, nn.Module):
            raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not hasattr(model, "cifarlab_name"):  # what its checkpoints call it (load() asks for the module)
            model.cifarlab_name = f"{CUSTOM}{type(model).__name__}"  # type: ignore[assignment]
        cfg.model.name = str(model.cifarlab_name)
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"cifarlab-{cfg.name}-"))
    try:
        return train_config(cfg, run_dir, resume, dataset, model)
    except BaseException:
        if out is None and not any(run_dir.iterdir()):  # no empty temporary folder left behind
            run_dir.rmdir()
        raise


@speaks_python
def sweep(
    base: str | Mapping[str, Any] = "",
    axes: Mapping[str, Sequence[Any]] | None = None,
    *,
    seeds: Sequence[int] = (0,),
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "sweep",
    data: str | Dataset | None = None,
    parallel: int = 1,
) -> list[dict]:
    """Every combination of `axes` x `seeds`, each a run of the engine; returns the rows of results.csv
    (one dict per run: run_id, status, the axis values, the metrics), ready for pandas.DataFrame.

    base: a preset name or YAML path, or a dict of settings; axes: {'optim.lr': [0.1, 0.01]} (dotted or
    nested keys); overrides: settings for every run, after the axes; variants: named sets of settings.
    out: the sweep folder (None: a new temporary one); finished runs in it are skipped, so rerunning
    continues. Raises SweepFailed (a UserError, with `.rows`) when a run failed.
    """
    from ..sweeps.grid import sweep_from_dict
    from ..sweeps.runner import check_failed, run_sweep

    spec: dict[str, Any] = {
        "name": name,
        "base": "" if isinstance(base, Mapping) else str(base),
        "set": nested(base, "base") if isinstance(base, Mapping) else {},
        "axes": nested(axes or {}, "axes"),
        "variants": {k: nested(v, "variants") for k, v in (variants or {}).items()},
        "seeds": [int(s) for s in seeds],
        "overrides": nested(overrides),
    }
    s = sweep_from_dict(spec)
    where = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"cifarlab-{name}-"))
    rows = run_sweep(s, where, data=data, parallel=parallel)
    check_failed(rows, where)
    return rows
