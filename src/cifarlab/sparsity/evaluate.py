"""Prune a trained SLBI model and measure it: the checkpoint (ours or the authors' lenet.pth), its
test data as it was trained on, and accuracy before pruning, after, and after recover().

    target = load_target("runs/lenet-slbi", data=None, device="cpu")
    res = prune_and_measure(target, ["conv3.weight"], 80)   # res["accuracy_pruned"], res["report"]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from .official import accuracy, load_official, official_test_set
from .prune import named_states, prune, recover


@dataclasses.dataclass
class PruneTarget:
    model: nn.Module
    opt: torch.optim.Optimizer  # SLBI or SLBIAdam holding the checkpoint's state
    x: Tensor  # the test images as the model was trained to see them (float NCHW, normalized)
    y: Tensor
    checkpoint: str  # the file read
    kind: str  # official | cifarlab
    data: str  # dataset name
    optimizer: str  # slbi | slbi_adam


def tracked_layers(opt_or_state) -> list[str]:
    return [n for n, st in named_states(opt_or_state).items() if "z_buffer" in st]


def has_slbi_state(state: dict | None) -> bool:
    return (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and any(isinstance(st, dict) and "z_buffer" in st for st in state["state"].values())
    )


def load_target(
    path: str | Path,
    data: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    dataset=None,
) -> PruneTarget:
    """A cifarlab checkpoint or run folder trained with slbi/slbi_adam, or the official lenet.pth.

    data: the test set source (default: the run's own source; MNIST for the official file);
    dataset: an already loaded Dataset whose test split to use instead (a study has it in memory).
    The raw weights are used, never the EMA copy: the SLBI state (prune order) belongs to them.
    """
    from ..train.checkpoint import checkpoint_path, read_checkpoint

    p = checkpoint_path(path)  # a run folder -> its best.pt (else last.pt)
    ckpt = read_checkpoint(p)
    device = torch.device(device)
    if "model_name" not in ckpt:  # not ours: the authors' format (load_official checks it)
        model, opt = load_official(p)
        x, y, name = official_test_set(data or "mnist", cache_dir)
        if x.shape[1:] != (1, 28, 28):
            raise UserError(f"the official LeNet takes 28x28 grey images; {data} has shape {tuple(x.shape[1:])}")
        return PruneTarget(model.to(device), opt, x.to(device), y.to(device), str(p), "official", name, "slbi")
    return _cifarlab_target(p, ckpt, data, device, dataset)


def _cifarlab_target(p: Path, ckpt: dict, data: str | None, device: torch.device, ds=None) -> PruneTarget:
    from ..config import OptimConfig, from_dict
    from ..models import create_model
    from ..train.checkpoint import checkpoint_data, load_state
    from ..train.optim import build_optimizer

    optim = (ckpt.get("config") or {}).get("optim") or {}
    if not has_slbi_state(ckpt.get("optimizer")):
        raise UserError(
            f"{p} has no SLBI state (trained with optimizer '{optim.get('name', '?')}'); "
            "pruning needs a run trained with slbi or slbi_adam"
        )
    model = create_model(ckpt["model_name"], **ckpt.get("model_options", {}))
    load_state(model, ckpt["model"], f"checkpoint {p}")
    model.to(device).eval()
    opt = build_optimizer(model, from_dict(OptimConfig, optim, "optim."))
    opt.load_state_dict(ckpt["optimizer"])
    ds = ds if ds is not None else checkpoint_data(ckpt, data)
    c = ds.test_x.shape[-1]
    mean = torch.tensor(ckpt.get("mean") or [0.0] * c).view(1, -1, 1, 1)
    std = torch.tensor(ckpt.get("std") or [1.0] * c).view(1, -1, 1, 1)
    x = (ds.test_x.permute(0, 3, 1, 2).float().div(255) - mean) / std
    return PruneTarget(model, opt, x.to(device), ds.test_y.to(device), str(p), "cifarlab", ds.name, optim["name"])


def check_layers(target: PruneTarget, layers: list[str]) -> None:
    tracked = tracked_layers(target.opt)
    unknown = [n for n in layers if n not in tracked]
    if unknown:
        raise UserError(f"unknown layer {', '.join(unknown)}; tracked layers: {', '.join(tracked)}")
    if not layers:
        raise UserError(f"name at least one layer to prune; tracked layers: {', '.join(tracked)}")


def prune_and_measure(
    target: PruneTarget, layers: list[str], percent: float, prune_bias: bool = False, before: float | None = None
) -> dict:
    """Accuracy (percent) before, after prune(percent, layers) and after recover(); the model ends
    as it started. `before` skips re-measuring the unpruned model in a sweep."""
    check_layers(target, layers)
    m, x, y = target.model, target.x, target.y
    if before is None:
        before = accuracy(m, x, y)
    report = prune(target.opt, m, percent, layers, prune_bias)
    try:
        after = accuracy(m, x, y)
    finally:
        recover(target.opt, m)
    recovered = accuracy(m, x, y)
    return {
        "checkpoint": target.checkpoint,
        "data": target.data,
        "n_test": int(len(y)),
        "layers": list(layers),
        "percent": percent,
        "prune_bias": prune_bias,
        "accuracy_before": before,
        "accuracy_pruned": after,
        "accuracy_recovered": recovered,
        "report": report,
    }
