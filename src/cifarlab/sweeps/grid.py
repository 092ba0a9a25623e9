"""Sweep files and their expansion into runs.

A sweep file names a base configuration (a train preset or YAML file), what varies, and the seeds:

    name: lr
    base: resnet18_standard          # configs/train/NAME.yaml or a path
    set: {train.epochs: 30}          # every run, before the axes
    axes:                            # full grid: dotted key -> values
      optim.lr: [0.1, 0.01]
    zip:                             # values varied together; each group is one axis
      optimizer: {optim.name: [momentum, adam], optim.lr: [0.01, 0.001], labels: [sgd, adam]}
    variants:                        # one axis "variant": name -> overrides
      no_aug: {augment.crop_padding: 0, augment.hflip: false}
    seeds: [0, 1]
    metrics: [final_test_acc, best_val_acc, best_test_acc, train_seconds]

A run's config is base <- set <- variant <- zip groups <- grid axes <- overrides <- seed, where
`overrides` holds what `--set train.epochs=5` gives on the command line (so it reaches every run,
variants included). Keys of the sweep itself (seeds, axes.optim.lr, ...) can be --set as well.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (
    Config,
    compose,
    compose_dict,
    deep_merge,
    find_preset,
    flatten,
    from_dict,
    nest,
    parse_overrides,
    preset_names,
    read_yaml,
)
from ..errors import UserError

# The final test accuracy leads: a best epoch is only honest when picked on a validation split
# (data.val_size, best_val_acc); best_test_acc is picked on the test set and says so in the tables.
DEFAULT_METRICS = ["final_test_acc", "best_val_acc", "best_test_acc", "train_seconds"]


@dataclass
class SweepConfig:
    name: str = "sweep"
    description: str = ""
    base: str = ""  # train preset name or YAML path ("" = the Config defaults)
    set: dict = field(default_factory=dict)  # overrides of the base for every run (dotted or nested keys)
    axes: dict = field(default_factory=dict)  # grid: dotted key -> list of values
    zip: dict = field(default_factory=dict)  # group -> {dotted key: values, ..., labels: [names]}
    variants: dict = field(default_factory=dict)  # name -> overrides; one axis called "variant"
    seeds: list = field(default_factory=lambda: [0])
    metrics: list = field(default_factory=lambda: list(DEFAULT_METRICS))
    overrides: dict = field(default_factory=dict)  # applied last to every run (what --set KEY=V fills)


@dataclass
class Axis:
    name: str  # a dotted key, a zip group name, or "variant"
    kind: str  # grid | zip | variant
    labels: list[str]  # one readable name per value
    settings: list[dict]  # per value: flat {dotted key: value}
    slugs: list[str] = field(default_factory=list)  # per value: its part of the run id


@dataclass
class RunSpec:
    run_id: str  # readable slug of the axis values + seed, e.g. "resvgg16-leaky_relu-sgd-s0"
    config_id: str  # the run id without the seed: runs sharing it are one configuration
    config: Config
    axes: dict[str, str]  # axis name -> label of this run's value
    values: dict[str, Any]  # dotted key -> value set by the axes
    seed: int
    index: int  # position in the expansion (tables keep this order)


# ---------------------------------------------------------------- loading


def resolve_sweep(path: str) -> Path:
    """A sweep YAML path, or a preset name looked up in configs/sweeps/."""
    try:
        return find_preset(path, "sweeps")
    except UserError:
        names = ", ".join(preset_names("sweeps")) or "none"
        raise UserError(f"sweep '{path}' is neither a file nor a preset; presets: {names}") from None


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a sweep file; --set items naming a sweep field change the sweep, all others every run."""
    p = resolve_sweep(str(path))
    data = _normalized(read_yaml(p))
    sweep_fields = {f.name for f in dataclasses.fields(SweepConfig)}
    extra: dict = {}
    for key, value in parse_overrides(overrides).items():
        if key in sweep_fields:
            data = deep_merge(data, _normalized({key: value}))
        elif key in ("seed", "out"):  # each run's seed and folder come from the sweep
            hint = "seeds=[0,1]" if key == "seed" else "the --out option"
            raise UserError(f"--set {key}=... does not apply to a sweep; use {hint}")
        else:  # a run key such as train.epochs: reaches every run, after the axes
            extra[key] = value
    data["overrides"] = deep_merge(data.get("overrides", {}), extra)
    base = data.get("base")
    if isinstance(base, str) and base.endswith((".yaml", ".yml")) and not Path(base).exists():
        beside = p.parent / base  # a base path relative to the sweep file
        if beside.exists():
            data["base"] = str(beside)
    sweep = sweep_from_dict(data)
    _note_overridden(sweep)
    return sweep


def sweep_from_dict(data: dict) -> SweepConfig:
    """A checked SweepConfig from a sweep file's mapping (what load_sweep reads, or the Python API builds)."""
    sweep = from_dict(SweepConfig, _normalized(data))
    _check(sweep)
    return sweep


def _note_overridden(sweep: SweepConfig) -> None:
    """One line per sweep naming the variant values that --set replaces (the override wins everywhere)."""
    forced = set(flatten(sweep.overrides))
    hit = {name: sorted(forced & set(spec)) for name, spec in sweep.variants.items()}
    keys = sorted({k for ks in hit.values() for k in ks})
    if keys:
        own = "; ".join(
            f"{name} ({', '.join(f'{k}={sweep.variants[name][k]!r}' for k in ks)})" for name, ks in hit.items() if ks
        )
        print(
            f"cifarlab: note: sweep {sweep.name}: --set {', '.join(keys)} replaces the variants' own values: {own}",
            file=sys.stderr,
        )


def _normalized(data: dict) -> dict:
    """Dotted and nested spellings of the same keys become one form: nested for settings,
    flat dotted keys for the axes (so `--set axes.optim.lr=[..]` replaces the `optim.lr` axis)."""
    out = dict(data)
    for key in ("set", "overrides"):
        if isinstance(out.get(key), dict):
            out[key] = nest(out[key])
    if isinstance(out.get("axes"), dict):
        out["axes"] = flatten(out["axes"])
    if isinstance(out.get("zip"), dict):
        out["zip"] = {g: flatten(v) if isinstance(v, dict) else v for g, v in out["zip"].items()}
    if isinstance(out.get("variants"), dict):
        out["variants"] = {k: flatten(v) if isinstance(v, dict) else v for k, v in out["variants"].items()}
    return out


def _check(s: SweepConfig) -> None:
    if not s.name or not re.fullmatch(r"[A-Za-z0-9._+-]+", s.name):
        raise UserError(f"sweep: name must be letters, digits and ._+- (it names the folder), got '{s.name}'")
    if not s.seeds or any(not isinstance(x, int) or isinstance(x, bool) for x in s.seeds):
        raise UserError(f"sweep: seeds must be a non-empty list of integers, got {s.seeds!r}")
    if len(set(s.seeds)) != len(s.seeds):
        raise UserError(f"sweep: seeds lists a seed twice: {s.seeds}")
    if not s.metrics or any(not isinstance(m, str) for m in s.metrics):
        raise UserError(f"sweep: metrics must be a non-empty list of summary keys, got {s.metrics!r}")
    for key, values in s.axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep: axes.{key} must be a non-empty list of values, got {values!r}")
    for group, spec in s.zip.items():
        if not isinstance(spec, dict) or not [k for k in spec if k != "labels"]:
            raise UserError(f"sweep: zip.{group} must map dotted keys to lists of values")
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in spec.items()}
        if len(set(lengths.values())) != 1 or -1 in lengths.values() or 0 in lengths.values():
            raise UserError(f"sweep: zip.{group} needs non-empty lists of one length, got lengths {lengths}")
    for name, spec in s.variants.items():
        if not isinstance(name, str):  # YAML reads a bare off/on/yes/no/1 as a bool or number
            raise UserError(f"sweep: variant name {name!r} must be a string; quote it")
        if not isinstance(spec, dict):
            raise UserError(f"sweep: variants.{name} must be a mapping of overrides, got {spec!r}")
    varied = set(s.axes) | {k for spec in s.zip.values() for k in spec if k != "labels"}
    clash = sorted(varied & set(flatten(s.overrides)))
    if clash:
        raise UserError(
            f"sweep: --set {clash[0]} would make the axis {clash[0]} constant; "
            f"change its values with --set axes.{clash[0]}=[...] (or zip.GROUP.{clash[0]}=[...])"
        )


# ---------------------------------------------------------------- expansion


def sweep_axes(s: SweepConfig) -> list[Axis]:
    """Grid axes in file order, then zip groups, then the variants."""
    axes = [Axis(key, "grid", [fmt(v) for v in values], [{key: v} for v in values]) for key, values in s.axes.items()]
    for group, spec in s.zip.items():
        keys = [k for k in spec if k != "labels"]
        n = len(spec[keys[0]])
        settings = [{k: spec[k][i] for k in keys} for i in range(n)]
        labels = spec.get("labels") or ["_".join(_part(k, st[k]) for k in keys) for st in settings]
        axes.append(Axis(group, "zip", [str(x) for x in labels], settings))
    if s.variants:
        axes.append(Axis("variant", "variant", list(s.variants), [flatten(v) for v in s.variants.values()]))
    for ax in axes:
        if len(set(ax.labels)) != len(ax.labels):
            raise UserError(f"sweep: axis {ax.name} lists the same value twice: {ax.labels}")
    return axes


def fmt(v: Any) -> str:
    """A value as a short readable label: 0.0005 -> '0.0005', [8, 16] -> '8x16', None -> 'none'."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(fmt(x) for x in v) or "empty"
    if isinstance(v, dict):
        return "_".join(f"{k}{fmt(x)}" for k, x in v.items())
    return str(v)


def _part(key: str, value: Any) -> str:
    """A string value names itself (relu); a number needs its key (lr0.01)."""
    return fmt(value) if isinstance(value, str) else f"{key.split('.')[-1]}{fmt(value)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def _assign_slugs(axes: list[Axis]) -> None:
    """Short slugs where they keep configurations apart, key-prefixed slugs where they do not."""
    for ax in axes:
        if ax.kind == "grid":
            ax.slugs = [_slug(_part(ax.name, st[ax.name])) for st in ax.settings]
        else:
            ax.slugs = [_slug(label) for label in ax.labels]  # variant names and zip labels
    combos = list(itertools.product(*[ax.slugs for ax in axes]))
    if len(set(combos)) == len(combos) and all(len(set(ax.slugs)) == len(ax.slugs) for ax in axes):
        return
    for ax in axes:  # e.g. two string values that sanitize alike: spell the key out everywhere
        if ax.kind == "grid":
            ax.slugs = [_slug(f"{ax.name.split('.')[-1]}-{label}") for label in ax.labels]
        if len(set(ax.slugs)) != len(ax.slugs):
            raise UserError(f"sweep: the values of axis {ax.name} give the same run id: {ax.labels}")


def expand(s: SweepConfig) -> list[RunSpec]:
    """Every configuration x seed, each with its validated cifarlab Config and a stable run id."""
    axes = sweep_axes(s)
    _assign_slugs(axes)
    base = compose_dict(s.base, s.set)
    runs: list[RunSpec] = []
    seen: dict[str, tuple] = {}
    for combo in itertools.product(*[range(len(ax.labels)) for ax in axes]):
        # variants first, then zip groups, then grid axes: the more specific setting wins
        chosen = [ax.settings[i] for ax, i in sorted(zip(axes, combo), key=lambda t: _precedence(t[0]))]
        values = {k: v for setting in chosen for k, v in setting.items()}
        data = compose_dict(base, *chosen, s.overrides)
        config_id = "-".join(ax.slugs[i] for ax, i in zip(axes, combo)) or "base"
        if config_id in seen:
            raise UserError(f"sweep: two configurations get the run id '{config_id}'; rename a label")
        seen[config_id] = combo
        labels = {ax.name: ax.labels[i] for ax, i in zip(axes, combo)}
        for seed in s.seeds:
            run_id = f"{config_id}-s{seed}"
            cfg = compose(data, {"seed": seed, "name": f"{s.name}-{run_id}"})
            runs.append(RunSpec(run_id, config_id, cfg, labels, values, seed, len(runs)))
    return runs


def _precedence(ax: Axis) -> int:
    return {"variant": 0, "zip": 1, "grid": 2}[ax.kind]
