"""Typed experiment configuration: dataclasses hold every default, YAML and --set override them.

A config file mirrors the dataclasses below (sections data, augment, model, optim, schedule, train).
`compose(base, *overrides)` puts every config together (train runs, sweeps, studies). Unknown keys and
wrong types are UserErrors naming the key and what is allowed; a field declares its choices (Literal)
and its range (`ranged`), and `check` tests them all in one pass.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


def ranged(default: Any, allowed: str, *, items: bool = False) -> Any:
    """A number field and its range: ">= 1", "> 0" (and finite) or an interval "[0, 1)"; items: the
    range holds for every element of a list field. The one validation pass, `check`, reads it."""
    m = re.fullmatch(r"(>=?) *(-?[\d.]+)|([\[(]) *(-?[\d.]+), *(-?[\d.]+) *([\])])", allowed)
    if m is None:
        raise ValueError(f"bad range {allowed!r}")
    if m[1]:
        bounds = (float(m[2]), None, m[1] == ">=", True)
    else:
        bounds = (float(m[4]), float(m[5]), m[3] == "[", m[6] == "]")
    make = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(**make, metadata={"range": bounds, "allowed": allowed, "items": items})


@dataclass
class DataConfig:
    source: str = "cifar10"  # cifar10 | cifar100 | cifar100-coarse | svhn | mnist | fashion-mnist | a path
    cache_dir: str = ""  # "" = $CIFARLAB_CACHE or ~/.cache/cifarlab
    val_size: int = ranged(0, ">= 0")  # held-out part of the training set (seeded); 0 = evaluate on test
    n_items: int = ranged(0, ">= 0")  # train on the first n_items images only (0 = all)
    n_test: int = ranged(0, ">= 0")  # evaluate on the first n_test test images only (0 = all): quick runs, not results
    normalize: Literal["dataset", "course", "none"] = "dataset"  # dataset: mean/std of the train split; course: 0.5/0.5
    batch_size: int = ranged(128, ">= 1")
    eval_batch_size: int = ranged(1000, ">= 1")
    drop_last: bool = False
    shuffle: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class AugmentConfig:
    crop_padding: int = ranged(0, ">= 0")  # random crop with this padding (0 = off)
    crop_mode: Literal["zero", "reflect"] = "zero"
    translate: int = ranged(0, ">= 0")  # random translation by up to this many pixels (reflect padding)
    hflip: bool = False
    alternating_flip: bool = False  # flip each image on alternate epochs instead of at random
    vflip: bool = False
    rotation: float = ranged(0.0, ">= 0")  # max degrees
    color_jitter: float = ranged(0.0, ">= 0")  # brightness/contrast/saturation strength
    cutout: int = ranged(0, ">= 0")  # square size in pixels (0 = off)
    cutmix: float = ranged(0.0, ">= 0")  # Beta(alpha, alpha); 0 = off
    mixup: float = ranged(0.0, ">= 0")  # Beta(alpha, alpha); 0 = off
    mix_prob: float = ranged(1.0, "[0, 1]")  # probability that a batch is mixed when cutmix/mixup are on


# Names with a registry of their own are checked against it, not against a copy here: the model,
# optimizer and schedule by train.engine.validate before any data is read, activation and init by
# create_model.
@dataclass
class ModelConfig:
    name: str = "resnet18"  # `cifarlab models` lists them
    activation: str | None = None  # None = the model's own default
    width: float | None = None  # width multiplier
    dropout: float | None = None
    init: str = "default"  # default | kaiming_normal | kaiming_uniform | xavier_normal | xavier_uniform | normal
    init_std: float = 0.01  # for init: normal
    args: dict = field(default_factory=dict)  # any other option the model takes


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | momentum | nesterov | adam | adamw | rmsprop | adagrad | slbi | slbi_adam | muon
    lr: float = ranged(0.1, "> 0")
    momentum: float = ranged(0.9, "[0, 1)")
    weight_decay: float = ranged(0.0, ">= 0")
    wd_skip_1d: bool = False  # no weight decay on biases and norm parameters
    betas: list = ranged([0.9, 0.999], "[0, 1)", items=True)
    eps: float = ranged(1e-8, ">= 0")
    l1: float = ranged(0.0, ">= 0")  # L1 penalty added to the loss
    # Per-group lr multipliers; a multiplier scales a group's step, not its weight decay (as airbench).
    norm_lr_scale: float = 1.0  # parameters of normalization layers (BN weight/bias)
    bias_lr_scale: float = 1.0  # other biases (conv/linear; the whitening layer's)
    head_lr_scale: float = 1.0  # the weight of the last Linear layer
    args: dict = field(default_factory=dict)  # optimizer-specific extras (e.g. slbi kappa, mu; muon momentum)


@dataclass
class ScheduleConfig:
    name: str = "none"  # none | step | multistep | cosine | cosine_restarts | onecycle | linear
    warmup_epochs: float = ranged(0.0, ">= 0")  # linear warm-up before the schedule
    step_size: float = 30  # epochs (step)
    milestones: list = ranged([], "> 0", items=True)  # epochs (multistep)
    gamma: float = ranged(0.1, "> 0")
    min_lr: float = ranged(0.0, ">= 0")
    t0: float = 10  # epochs of the first cycle (cosine_restarts)
    t_mult: int = ranged(1, ">= 1")
    pct_start: float = 0.25  # onecycle
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    end_factor: float = 0.0  # linear decay to lr * end_factor


@dataclass
class TrainConfig:
    epochs: int = ranged(10, ">= 1")
    loss: Literal["ce", "nll", "mse", "smooth_l1", "kl"] = "ce"
    label_smoothing: float = ranged(0.0, "[0, 1)")
    loss_reduction: Literal["mean", "sum"] = "mean"  # sum: the batch's summed loss (lr per example, as airbench)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA
    compile: bool = False  # torch.compile the model; compile_seconds in summary.json, not in train_seconds
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    graph: Literal["auto", "on", "off"] = "auto"  # the training step as a CUDA graph (auto: on CUDA where it can)
    cudnn_benchmark: bool = False  # let cuDNN pick its fastest kernels (autotuned in the warm-up step)
    ema: float = ranged(0.0, "[0, 1)")  # EMA decay of the weights (0 = off); evaluation uses the EMA model
    lookahead_every: int = ranged(0, ">= 0")  # airbench's lookahead: every k steps pull to a slow EMA (0 = off)
    lookahead_decay: float = 0.7737809375  # 0.95**5: the slow weights' decay, reached at the last step
    lookahead_power: float = 3.0  # decay at step t = lookahead_decay * (t / total_steps) ** power
    whiten: bool = False  # set the first conv (model.whiten, else the first Conv2d) by patch whitening, frozen
    whiten_images: int = ranged(5000, ">= 1")  # training images whose patches estimate the covariance
    whiten_eps: float = 5.0e-4  # added to the eigenvalues before 1/sqrt
    whiten_bias_epochs: int = ranged(-1, ">= -1")  # train that bias this many epochs, then freeze it (-1 = always)
    tta: Literal["none", "flip", "multiview"] = "none"  # multiview: flip x one-pixel translations (airbench's)
    grad_clip: float = ranged(0.0, ">= 0")  # max global grad norm (0 = off)
    eval_every: int = ranged(1, ">= 1")  # epochs
    save_checkpoints: bool = True
    save_every: int = ranged(0, ">= 0")  # also keep ckpt_epochNNN.pt every this many epochs and the start (0 = off)
    progress: bool = True  # the per-step progress bar
    log_epochs: bool = True  # one line per epoch on stdout (metrics.jsonl is written either way)
    log_tensorboard: bool = True


@dataclass
class Config:
    name: str = "run"
    seed: int = ranged(0, "[0, 18446744073709551616)")  # 64 bits: what torch's and numpy's generators take
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
    if origin is Literal:  # the type of its values here; which values, `check` says
        return _type_ok(value, type(typing.get_args(tp)[0]))
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
    if typing.get_origin(tp) is Literal:
        return _type_name(type(typing.get_args(tp)[0]))
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
                value = safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as e:
                if "duplicate key" in str(e):
                    raise UserError(f"--set {key}: {str(e).splitlines()[0]}") from None
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


def nest(d: dict) -> dict:
    """Dotted and nested spellings of the same keys as one nested form:
    {'a.b': 1, 'a': {'c.d': 2}} -> {'a': {'b': 1, 'c': {'d': 2}}}."""
    out: dict = {}
    for key, value in d.items():
        if isinstance(value, dict):
            value = nest(value)
        *parents, last = str(key).split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"config: key '{key}' conflicts with another value set for '{k}'")
        if isinstance(node.get(last), dict) and isinstance(value, dict):
            node[last] = deep_merge(node[last], value)
        else:
            node[last] = value
    return out


def flatten(d: dict, prefix: str = "", *, whole: tuple = ()) -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; an empty mapping, and the mappings under the keys in `whole`
    (e.g. a model's `args`), stay values."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in whole:
            out.update(flatten(v, f"{prefix}{k}.", whole=whole))
        else:
            out[f"{prefix}{k}"] = v
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice in one mapping (PyYAML would keep the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then an override is no duplicate
                continue
            key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def safe_load(text: str):
    """yaml.safe_load, with duplicate keys an error."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  a SafeLoader: builds plain data only


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"config file {p} is not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return data


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


def compose(base: str | Path | dict | None, *overrides: dict | None, cls: type = Config, kind: str = "train") -> Any:
    """The one way a config is put together: the class defaults <- base <- each override in turn.

    base is a YAML path, a preset name in configs/<kind>/, a dict or None; an override is a dict
    with dotted or nested keys (`parse_overrides` turns --set items into one). Returns a `cls` with
    unknown keys and wrong types refused; choices and ranges are `check`'s."""
    return from_dict(cls, compose_dict(base, *overrides, kind=kind))


def compose_dict(base: str | Path | dict | None, *overrides: dict | None, kind: str = "train") -> dict:
    """compose's dict before it becomes a dataclass, for callers that build many configs on one base."""
    if isinstance(base, dict):
        data = base
    else:
        data = read_yaml(find_preset(str(base), kind)) if base else {}
    for over in overrides:
        data = deep_merge(data, nest(over or {}))
    return data


def load_config(path: str | None = None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Defaults <- YAML file or preset <- --set overrides."""
    return compose(path, parse_overrides(overrides), cls=cls)


def choices(cls: type, name: str) -> tuple:
    """The values a Literal field of dataclass `cls` allows: the one list of them."""
    return _choices(typing.get_type_hints(cls)[name])


def check(cfg: Any, prefix: str = "") -> None:
    """The one validation pass: every field's Literal choices and declared range (see `ranged`), in
    nested sections too, before any data is read or any file is written. Names that belong to a
    registry (models, optimizers, schedules) are checked by the engine, which knows the registries."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{key}.")
            continue
        choices = _choices(hints[f.name])
        if choices and value not in choices:
            raise UserError(f"unknown {key} '{value}'; choose from: {', '.join(map(str, choices))}")
        if "range" in f.metadata:
            values = enumerate(value) if f.metadata["items"] else [(None, value)]
            for i, v in values:
                _check_range(key if i is None else f"{key}[{i}]", v, f.metadata)


def _choices(tp: Any) -> tuple:
    """The allowed values of a Literal field (also inside `Literal[...] | None`); () for any other type."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(c for arg in typing.get_args(tp) for c in _choices(arg))
    return ()


def _check_range(key: str, value: Any, meta: Any) -> None:
    lo, hi, lo_in, hi_in = meta["range"]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    bad = not number or (isinstance(value, float) and not math.isfinite(value))
    bad = bad or (value < lo if lo_in else value <= lo)
    bad = bad or (hi is not None and (value > hi if hi_in else value >= hi))
    if bad:
        allowed = meta["allowed"]
        allowed = f"in {allowed}" if hi is not None else allowed + ("" if lo_in else " and finite")
        raise UserError(f"{key}={value!r} is out of range; allowed: {allowed}")


TTA_MODES = choices(TrainConfig, "tta")
COMPILE_MODES = choices(TrainConfig, "compile_mode")


# How a run executes, not what it computes: a resume may change these.
RUN_NEUTRAL_KEYS = (
    "name", "out", "train.progress", "train.log_epochs", "train.graph", "data.device", "data.cache_dir"
)  # fmt: skip


def check_same_run(run_dir: str | Path, cfg: Config) -> None:
    """A run folder being resumed or reused must hold this very configuration, else two runs would mix."""
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return
    old = flatten(read_yaml(p), whole=("args",))
    new = flatten(yaml.safe_load(yaml.safe_dump(to_dict(cfg))), whole=("args",))
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
