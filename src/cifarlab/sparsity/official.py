"""The DessiLBI authors' LeNet checkpoint (their lenet.pth) in our LeNet and our SLBI optimizer.

Their file is a legacy torch pickle: {'model': state_dict, 'optimizer': {'state': {id: {'name',
'z_buffer', 'gamma_buffer', 'epoch_record', 'prune_order', 'w_star', 'momentum_buffer'}},
'param_groups': [{'lr', 'kappa', 'mu', 'weight_decay', 'momentum', 'dampening', 'params'}]}},
tensors, dicts and numbers only, so it loads with weights_only=True like our own checkpoints.
Each state names its parameter, so we match by name, never by position. Their epoch_record has
the shape of the weight; ours keeps one entry per conv filter (the minimum, which is what their
prune order uses).

The official evaluation feeds MNIST through ToTensor only (pixels / 255, no mean/std).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..train.checkpoint import safe_torch_load
from ..train.slbi import SLBI
from .prune import named_states

_KEYS = ("momentum_buffer", "z_buffer", "gamma_buffer", "w_star", "prune_order", "epoch_record")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    # a file of this name that holds code is refused before any of it runs
    ckpt = safe_torch_load(path, "cpu", "DessiLBI checkpoint")
    opt = ckpt.get("optimizer") if isinstance(ckpt, dict) else None
    ok = (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("model"), dict)
        and isinstance(opt, dict)
        and isinstance(opt.get("state"), dict)
        and isinstance(opt.get("param_groups"), list)
        and len(opt["param_groups"]) == 1
    )
    if not ok:
        raise UserError(
            f"{path}: not an official DessiLBI checkpoint (expected {{'model', 'optimizer'}} with one SLBI param group)"
        )
    return ckpt


def load_official(path: str | Path) -> tuple[nn.Module, SLBI]:
    """(LeNet with the official weights, SLBI with the official state and hyperparameters)."""
    from ..models import create_model

    path = Path(path)
    ckpt = _read(path)
    model = create_model("LeNet", in_channels=1)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the DessiLBI LeNet ({str(e).splitlines()[0]})") from None
    group = ckpt["optimizer"]["param_groups"][0]
    if group.get("dampening", 0) != 0:
        raise UserError(f"{path}: SLBI with dampening {group['dampening']} is not supported (the official runs use 0)")
    states = named_states(ckpt["optimizer"])
    params = dict(model.named_parameters())
    unknown = [n for n in states if n not in params]
    if unknown:
        raise UserError(f"{path}: optimizer state for parameters LeNet does not have: {', '.join(unknown)}")
    try:
        opt = SLBI(
            list(model.named_parameters()),
            lr=float(group["lr"]),
            kappa=float(group["kappa"]),
            mu=float(group["mu"]),
            momentum=float(group["momentum"]),
            weight_decay=float(group["weight_decay"]),
            layers=[n for n, s in states.items() if "z_buffer" in s],
        )
    except KeyError as e:
        raise UserError(f"{path}: the optimizer param group lacks {e}") from None
    for name, st in states.items():
        p = params[name]
        for key in _KEYS:
            if key not in st:
                continue
            value = st[key].detach().to(p)
            per_filter = p.ndim >= 3 and key in ("prune_order", "epoch_record")
            if per_filter and key == "epoch_record" and value.shape == p.shape:
                value = value.flatten(1).amin(1)
            expect = p.shape[:1] if per_filter else p.shape
            if value.shape != expect:
                raise UserError(f"{path}: {key} of {name} has shape {tuple(value.shape)}, expected {tuple(expect)}")
            opt.state[p][key] = value
    return model, opt


def mnist_test(source: str | Path = "mnist", cache_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """MNIST test images as the official code feeds them: float (N, 1, 28, 28) in [0, 1], labels."""
    x, y, _ = official_test_set(source, cache_dir)
    return x, y


def official_test_set(source: str | Path = "mnist", cache_dir: str | Path | None = None) -> tuple[Tensor, Tensor, str]:
    """mnist_test plus the dataset's real name (fashion-mnist must not be reported as mnist)."""
    from ..data import load_dataset

    ds = load_dataset(str(source), cache_dir)
    return ds.test_x.permute(0, 3, 1, 2).float().div_(255), ds.test_y, ds.name


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent, in eval mode, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1)
        correct += int((pred == y[i : i + batch_size].to(device)).sum())
    model.train(was_training)
    return 100.0 * correct / len(y)
