"""Checkpoints: what a run saves, and rebuilding a model from one."""

from __future__ import annotations

import copy
import json
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..run import atomic_torch_save


def save_checkpoint(path: Path, **state) -> None:
    atomic_torch_save(state, path)


def checkpoint_path(path: str | Path, which: str = "best.pt") -> Path:
    """A checkpoint file, or a run folder (then its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in (which, "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise UserError(f"run folder {p} holds no checkpoint (best.pt or last.pt)")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    return p


BUNDLE_FORMAT = "cifarlab-bundle"  # the marker `cifarlab export --format bundle` writes
BUNDLE_VERSION = 2  # 2: NAME.safetensors (weights + JSON metadata); 1: NAME.bundle.pt (torch.save)
BUNDLE_META_KEY = "cifarlab"  # the safetensors header's __metadata__ entry holding the bundle's JSON


def _refusal(message: str) -> tuple[str | None, str]:
    """(the global or class a weights_only refusal names, else None; the unpickler's own reason)."""
    inner = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in inner.splitlines() if ln.strip() and not ln.startswith("Check the documentation")]
    reason = lines[-1][:200] if lines else "not loadable with weights_only=True"
    m = re.search(r"GLOBAL (\S+?)\.?(?:\s|$)", inner) or re.search(r"but got <class '([^']+)'>", inner)
    return (m.group(1) if m else None), reason


def safe_torch_load(path: Path, map_location="cpu", what: str = "checkpoint"):
    """torch.load with weights_only=True: tensors, containers and plain values, never code.

    cifarlab's checkpoints (optimizer and scheduler states included: MultiStepLR's Counter is
    allowed since torch 2.4) and the DessiLBI authors' lenet.pth need nothing beyond torch's
    defaults, so nothing is allow-listed. A file that needs more (a pickled class, a function,
    a `__reduce__`) is refused with one line naming what it holds, before any of it runs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        held, reason = _refusal(str(e))
        if held:
            raise UserError(
                f"refusing to load {path}: it holds code or objects cifarlab does not load ({held})"
            ) from None
        raise UserError(f"cannot read {what} {path}: {reason}") from None  # random bytes, a foreign pickle, ...
    except Exception as e:  # truncated file, not a torch file, ...
        raise UserError(f"cannot read {what} {path}: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def read_bundle_file(p: Path, map_location="cpu") -> dict:
    """A NAME.safetensors bundle as the dict a checkpoint is: weights under "model", the metadata beside."""
    from safetensors import SafetensorError, safe_open

    try:  # one pass over the file: the header's metadata, then the tensors
        with safe_open(str(p), framework="pt", device=str(map_location)) as f:
            meta = (f.metadata() or {}).get(BUNDLE_META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # not a safetensors file, truncated, ...
        raise UserError(f"cannot read bundle {p}: {type(e).__name__}: {_first_line(e)}") from None
    if meta is None:
        raise UserError(f"{p} is a safetensors file but not a cifarlab bundle (no '{BUNDLE_META_KEY}' metadata)")
    try:
        bundle = json.loads(meta)
    except json.JSONDecodeError as e:
        raise UserError(f"cannot read bundle {p}: its metadata is not JSON ({e})") from None
    if not isinstance(bundle, dict):
        raise UserError(f"cannot read bundle {p}: its metadata is not a JSON object")
    return {**bundle, "model": state}


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A run's checkpoint or an exported bundle (which holds the same keys, less the training state)."""
    p = checkpoint_path(path)
    if p.suffix == ".safetensors":
        ckpt = read_bundle_file(p, map_location)
    else:
        what = "bundle" if p.name.endswith(".bundle.pt") else "checkpoint"
        ckpt = safe_torch_load(p, map_location, what)
    if isinstance(ckpt, dict) and ckpt.get("format") == BUNDLE_FORMAT:
        check_bundle(ckpt, p)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{p} is not a cifarlab checkpoint (no 'model' entry)")
    check_entries(ckpt, p)
    return ckpt


# The entries every reader uses, and the type each must have: a file that is a dict but holds, say, a
# list as its weights or a string as its config would fail deep inside a reader with a traceback.
ENTRY_TYPES = {"model": dict, "ema": dict, "config": dict, "model_options": dict, "classes": list, "model_name": str}


def check_entries(ckpt: dict, p: Path) -> None:
    for key, kind in ENTRY_TYPES.items():
        value = ckpt.get(key)
        if value is not None and not isinstance(value, kind):
            raise UserError(
                f"{p} is not a cifarlab checkpoint: its '{key}' entry is a {type(value).__name__}, not a {kind.__name__}"
            )
    for key in ("model", "ema"):
        bad = [k for k, v in (ckpt.get(key) or {}).items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise UserError(f"{p} is not a cifarlab checkpoint: its '{key}' entry holds a non-tensor at {bad[0]!r}")


def check_bundle(bundle: dict, p: Path) -> None:
    """A bundle of a newer cifarlab may hold what this one cannot read: say so instead of guessing."""
    version = bundle.get("version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise UserError(f"{p} is a cifarlab bundle of version {version!r}; this cifarlab reads up to {BUNDLE_VERSION}")
    missing = [k for k in ("model", "model_name", "image_shape", "mean", "std") if not bundle.get(k)]
    if missing:
        raise UserError(f"{p} is an incomplete cifarlab bundle (no {', '.join(missing)})")


def _listed(names: list[str], first: int = 3, sep: str = ", ") -> str:
    return sep.join(names[:first]) + (f"{sep}..." if len(names) > first else "")


def state_mismatch(model: nn.Module, state: dict) -> str:
    """Missing and unexpected keys and shape mismatches of state against model, in one phrase ("" if none)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)}, model {list(v.shape)}"
        for k, v in own.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) > 1)} ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch{'es' * (len(shapes) > 1)} ({_listed(shapes, 2, '; ')})")
    return ", ".join(parts)


def load_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """load_state_dict with a one-line error naming what differs when the architectures differ."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # torch's message spans many lines and starts with the least useful one: list the keys instead
        detail = state_mismatch(model, state) or str(e).splitlines()[0][:200]
        name = getattr(model, "cifarlab_name", type(model).__name__)
        raise UserError(f"{source} does not fit model {name}: {detail}") from None


CUSTOM = "custom:"  # the model_name prefix of a module given to fit(model=...): no factory rebuilds it


def load_model(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True, model: nn.Module | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained with; EMA weights when the run kept them. model: the
    module to load the weights into instead (a copy; yours is left as it is), as a run of your own
    module (fit(model=...)) needs: no name in the zoo rebuilds it."""
    from ..models import create_model

    where = checkpoint_path(path)
    ckpt = read_checkpoint(where)
    name = ckpt.get("model_name")
    if model is not None:
        model = copy.deepcopy(model)
    elif not name:
        raise UserError(f"{where} does not say which model it holds (no 'model_name')")
    elif str(name).startswith(CUSTOM):
        own = name[len(CUSTOM) :]
        raise UserError(
            f"{where} holds your own module ({own}), which cannot be rebuilt from its name: "
            f"pass one, cifarlab.load(path, model={own}(...))"
        )
    else:
        model = create_model(name, **ckpt.get("model_options", {}))
    load_state(model, state_of(ckpt) if use_ema else ckpt["model"], f"checkpoint {where}")
    return model.to(device).eval(), ckpt


# ---------------------------------------------------------------- what the analyses read off a checkpoint


def state_of(ckpt: dict) -> dict:
    """The weights load_model uses: the EMA copy when the run kept one."""
    return ckpt["ema"] if ckpt.get("ema") else ckpt["model"]


def checkpoint_stats(ckpt: dict, channels: int) -> tuple[list[float], list[float]]:
    """The normalization the model was trained with (the engine stores it in every checkpoint)."""
    mean, std = ckpt.get("mean"), ckpt.get("std")
    if not mean or not std:
        mode = ckpt.get("config", {}).get("data", {}).get("normalize", "dataset")
        if mode == "course":
            return [0.5] * channels, [0.5] * channels
        if mode == "none":
            return [0.0] * channels, [1.0] * channels
        raise UserError("the checkpoint does not store its normalization (mean/std); retrain with this version")
    return list(mean), list(std)


def checkpoint_data(ckpt: dict, source: str | None):
    """The test split for a checkpoint: `source`, else the source it was trained on; checks the fit."""
    from ..data import load_dataset

    cfg = ckpt.get("config", {})
    src = source or cfg.get("data", {}).get("source")
    if not src:
        raise UserError("the checkpoint does not record its data source; pass --data")
    ds = load_dataset(src, cfg.get("data", {}).get("cache_dir") or None, classes=ckpt.get("classes"))
    opts = ckpt.get("model_options", {})
    if opts.get("in_channels") not in (None, ds.test_x.shape[-1]):
        raise UserError(
            f"the checkpoint's model takes {opts['in_channels']}-channel images, "
            f"but {ds.name} has {ds.test_x.shape[-1]}"
        )
    if opts.get("num_classes") not in (None, len(ds.classes)):
        raise UserError(
            f"the checkpoint's model has {opts['num_classes']} classes, but {ds.name} has {len(ds.classes)}"
        )
    return ds


def input_shape(ckpt: dict, source: str | None = None) -> tuple[int, int, int]:
    """(H, W, C) the checkpoint's model takes: stored by the engine, else read off its dataset."""
    shape = ckpt.get("image_shape")
    if shape:
        return tuple(int(v) for v in shape)
    # older checkpoints: ask the data (slower, needs it present)
    return tuple(int(v) for v in checkpoint_data(ckpt, source).test_x.shape[1:])
