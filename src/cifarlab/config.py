"""Typed experiment configuration: dataclasses hold every default, YAML and --set override them.

A config file mirrors the dataclasses below (sections data, augment, model, optim, schedule, train).
Unknown keys and wrong types are UserErrors naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


@dataclass
class DataConfig:
    source: str = "cifar10"  # cifar10 | cifar100 | cifar100-coarse | svhn | mnist | fashion-mnist | a path
    cache_dir: str = ""  # "" = $CIFARLAB_CACHE or ~/.cache/cifarlab
    val_size: int = 0  # held-out part of the training set (seeded); 0 = evaluate on test
    n_items: int = 0  # train on the first n_items images only (0 = all)
    n_test: int = 0  # evaluate on the first n_test test images only (0 = all): quick runs, not results
    normalize: str = "dataset"  # dataset (mean/std of the train split) | course (0.5/0.5) | none
    batch_size: int = 128
    eval_batch_size: int = 1000
    drop_last: bool = False
    shuffle: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class AugmentConfig:
    crop_padding: int = 0  # random crop with this padding (0 = off)
    crop_mode: str = "zero"  # zero | reflect
    translate: int = 0  # random translation by up to this many pixels (reflect padding)
    hflip: bool = False
    alternating_flip: bool = False  # flip each image on alternate epochs instead of at random
    vflip: bool = False
    rotation: float = 0.0  # max degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation strength
    cutout: int = 0  # square size in pixels (0 = off)
    cutmix: float = 0.0  # Beta(alpha, alpha); 0 = off
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    mix_prob: float = 1.0  # probability that a batch is mixed when cutmix/mixup are on


@dataclass
class ModelConfig:
    name: str = "resnet18"
    activation: str | None = None  # None = the model's own default
    width: float | None = None  # width multiplier
    dropout: float | None = None
    init: str = "default"  # default | kaiming_normal | kaiming_uniform | xavier_normal | xavier_uniform | normal
    init_std: float = 0.01  # for init: normal
    args: dict = field(default_factory=dict)  # any other option the model takes


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | momentum | nesterov | adam | adamw | rmsprop | adagrad | slbi | slbi_adam | muon
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    wd_skip_1d: bool = False  # no weight decay on biases and norm parameters
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    l1: float = 0.0  # L1 penalty added to the loss
    # Per-group lr multipliers; a multiplier scales a group's step, not its weight decay (as airbench).
    norm_lr_scale: float = 1.0  # parameters of normalization layers (BN weight/bias)
    bias_lr_scale: float = 1.0  # other biases (conv/linear; the whitening layer's)
    head_lr_scale: float = 1.0  # the weight of the last Linear layer
    args: dict = field(default_factory=dict)  # optimizer-specific extras (e.g. slbi kappa, mu; muon momentum)


@dataclass
class ScheduleConfig:
    name: str = "none"  # none | step | multistep | cosine | cosine_restarts | onecycle | linear
    warmup_epochs: float = 0.0  # linear warm-up before the schedule
    step_size: float = 30  # epochs (step)
    milestones: list = field(default_factory=list)  # epochs (multistep)
    gamma: float = 0.1
    min_lr: float = 0.0
    t0: float = 10  # epochs of the first cycle (cosine_restarts)
    t_mult: int = 1
    pct_start: float = 0.25  # onecycle
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    end_factor: float = 0.0  # linear decay to lr * end_factor


@dataclass
class TrainConfig:
    epochs: int = 10
    loss: str = "ce"  # ce | nll | mse | smooth_l1 | kl
    label_smoothing: float = 0.0
    loss_reduction: str = "mean"  # mean | sum (the batch's summed loss: lr is then per example, as airbench)
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    compile: bool = False  # torch.compile the model; compile_seconds in summary.json, not in train_seconds
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    graph: str = "auto"  # capture the training step as a CUDA graph: auto (on CUDA where the step allows) | on | off
    cudnn_benchmark: bool = False  # let cuDNN pick its fastest kernels (autotuned in the warm-up step)
    ema: float = 0.0  # EMA decay of the weights (0 = off); evaluation uses the EMA model
    lookahead_every: int = 0  # airbench's lookahead: every k steps pull the weights to a slow EMA (0 = off)
    lookahead_decay: float = 0.7737809375  # 0.95**5: the slow weights' decay, reached at the last step
    lookahead_power: float = 3.0  # decay at step t = lookahead_decay * (t / total_steps) ** power
    whiten: bool = False  # set the first conv (model.whiten, else the first Conv2d) by patch whitening, frozen
    whiten_images: int = 5000  # training images whose patches estimate the covariance
    whiten_eps: float = 5.0e-4  # added to the eigenvalues before 1/sqrt
    whiten_bias_epochs: int = -1  # train that layer's bias for this many epochs, then freeze it (-1 = always)
    tta: str = "none"  # none | flip | multiview (flip x one-pixel translations, airbench's weights)
    grad_clip: float = 0.0  # max global grad norm (0 = off)
    eval_every: int = 1  # epochs
    save_checkpoints: bool = True
    save_every: int = 0  # also keep ckpt_epochNNN.pt every this many epochs, and the start as 000 (0 = off)
    progress: bool = True  # the per-step progress bar
    log_epochs: bool = True  # one line per epoch on stdout (metrics.jsonl is written either way)
    log_tensorboard: bool = True


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    out: str = "runs"  # parent folder of run folders
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------- building from dicts


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and lightly coerce) a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off (yes/no) as booleans: train.amp=off
            return True, "on" if value else "off"
        return isinstance(value, str), value
    if tp is list or origin is list:
        if isinstance(value, tuple):
            value = list(value)
        return isinstance(value, list), value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"config: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"config: unknown key '{prefix}{key}'; allowed: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, f"{prefix}{key}.")
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise UserError(f"config: '{prefix}{key}' must be {_type_name(tp)}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_overrides(items: list[str] | None) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars/lists."""
    out: dict = {}
    for item in items or []:
        for part in _split_assignments(item):
            if "=" not in part:
                raise UserError(f"--set expects key=value, got '{part}'")
            key, raw = part.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
            node = out
            keys = key.strip().split(".")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
                if not isinstance(node, dict):
                    raise UserError(f"--set: '{key}' conflicts with an earlier override")
            node[keys[-1]] = value
    return out


def _split_assignments(item: str) -> list[str]:
    # "--set a=1 b=2" arrives as one string when quoted; split on spaces outside brackets
    parts, depth, cur = [], 0, ""
    for ch in item:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == " " and depth == 0:
            if cur:
                parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("args",):
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return data


def resolve_preset(path: str) -> Path:
    """A config path, or a preset name such as 'quick' looked up in configs/train/."""
    p = Path(path)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    for root in preset_dirs():
        for cand in (root / "train" / f"{path}.yaml", root / f"{path}.yaml"):
            if cand.is_file():
                return cand
    return p


def find_preset(name: str, kind: str) -> Path:
    """A YAML path, or a preset name looked up in configs/<kind>/ (train, sweeps, studies)."""
    p = Path(name)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    for root in preset_dirs():
        if (root / kind / f"{name}.yaml").is_file():
            return root / kind / f"{name}.yaml"
    names = ", ".join(preset_names(kind)) or "none"
    raise UserError(f"config '{name}' not found (a YAML path or a preset in configs/{kind}/; presets: {names})")


def preset_names(kind: str) -> list[str]:
    return sorted({q.stem for root in preset_dirs() for q in (root / kind).glob("*.yaml")})


def preset_dirs() -> list[Path]:
    """A configs/ folder in the working directory (the user's own presets) first, then the package's."""
    from importlib.resources import files

    shipped = Path(str(files("cifarlab") / "configs"))
    return [d for d in (Path.cwd() / "configs", shipped) if d.is_dir()]


def load_config(path: str | None = None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Defaults <- YAML file <- --set overrides; returns a validated dataclass."""
    data = read_yaml(resolve_preset(path)) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


# Settings that may change between starts of the same run without making it another run.
TTA_MODES = ("none", "flip", "multiview")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_choices(cfg: Config) -> None:
    """The settings with a fixed set of values; the registry names (models, optimizers, ...) are
    checked by the engine, which knows the registries."""
    for value, allowed, key in [
        (cfg.train.tta, TTA_MODES, "train.tta"),
        (cfg.train.loss_reduction, ("mean", "sum"), "train.loss_reduction"),
        (cfg.train.compile_mode, COMPILE_MODES, "train.compile_mode"),
        (cfg.train.amp, ("auto", "bf16", "fp16", "off"), "train.amp"),
        (cfg.train.graph, ("auto", "on", "off"), "train.graph"),
        (cfg.data.normalize, ("dataset", "course", "none"), "data.normalize"),
    ]:
        if value not in allowed:
            raise UserError(f"unknown {key} '{value}'; choose from: {', '.join(allowed)}")
    check_ranges(cfg)


# (key, lowest, highest, lowest allowed?, highest allowed?): None = no bound on that side
RANGES = [
    ("train.epochs", 1, None, True, True),
    ("train.eval_every", 1, None, True, True),
    ("train.save_every", 0, None, True, True),
    ("train.label_smoothing", 0, 1, True, False),
    ("train.ema", 0, 1, True, False),
    ("train.grad_clip", 0, None, True, True),
    ("train.lookahead_every", 0, None, True, True),
    ("train.whiten_images", 1, None, True, True),
    ("train.whiten_bias_epochs", -1, None, True, True),
    ("data.n_items", 0, None, True, True),
    ("data.val_size", 0, None, True, True),
    ("data.n_test", 0, None, True, True),
    ("data.batch_size", 1, None, True, True),
    ("data.eval_batch_size", 1, None, True, True),
    ("optim.lr", 0, None, False, True),
    ("optim.weight_decay", 0, None, True, True),
    ("optim.momentum", 0, 1, True, False),
    ("optim.eps", 0, None, True, True),
    ("optim.l1", 0, None, True, True),
    ("augment.crop_padding", 0, None, True, True),
    ("augment.translate", 0, None, True, True),
    ("augment.cutout", 0, None, True, True),
    ("augment.rotation", 0, None, True, True),
    ("augment.color_jitter", 0, None, True, True),
    ("augment.cutmix", 0, None, True, True),
    ("augment.mixup", 0, None, True, True),
    ("augment.mix_prob", 0, 1, True, True),
    ("schedule.warmup_epochs", 0, None, True, True),
    ("schedule.min_lr", 0, None, True, True),
    ("schedule.gamma", 0, None, False, True),
    ("schedule.t_mult", 1, None, True, True),
]


def _allowed(lo, hi, lo_in: bool, hi_in: bool) -> str:
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}" + ("" if lo_in else " and finite")
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def check_ranges(cfg: Config) -> None:
    """Numbers out of their range (epochs=0, lr=-1, eval_every=0, ...) fail here, naming key, value and range,
    before any data is read or any file is written."""
    import math

    for key, lo, hi, lo_in, hi_in in RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        bad = isinstance(value, float) and not math.isfinite(value)
        bad = bad or (value < lo if lo_in else value <= lo)
        bad = bad or (hi is not None and (value > hi if hi_in else value >= hi))
        if bad:
            raise UserError(f"{key}={value!r} is out of range; allowed: {_allowed(lo, hi, lo_in, hi_in)}")
    for i, b in enumerate(cfg.optim.betas):
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 <= b < 1:
            raise UserError(f"optim.betas[{i}]={b!r} is out of range; allowed: in [0, 1)")


# How a run executes, not what it computes: a resume may change these.
RUN_NEUTRAL_KEYS = (
    "name", "out", "train.progress", "train.log_epochs", "train.graph", "data.device", "data.cache_dir"
)  # fmt: skip


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; model/optim `args` stay whole."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "args":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(run_dir: str | Path, cfg: Config) -> None:
    """A run folder being resumed or reused must hold this very configuration, else two runs would mix."""
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return
    old = flatten(yaml.safe_load(p.read_text()) or {})
    new = flatten(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RUN_NEUTRAL_KEYS]
    if diff:
        k = diff[0]
        raise UserError(
            f"{run_dir} holds a run with other settings ({k}: {old.get(k)!r} there, {new.get(k)!r} now); "
            "use another --out or delete that folder"
        )


def save_config(cfg: Any, path: str | Path) -> None:
    from .run import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
