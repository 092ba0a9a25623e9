"""`cifarlab pj2`: the whole Project 2 study in one command, ending in one report.

    cifarlab pj2 [--scale smoke|standard|full] [--data SRC] [--out DIR] [--set key=value ...]

Task 1 (CIFAR-10): the best model (a strong ResNet-18 recipe), its analyses (filters, feature maps,
Grad-CAM, errors, loss landscape), the reports' recipes and the ablation sweeps of SPEC.md
section 5. Task 2: the batch-normalization study. Task 3: the DessiLBI study (LeNet on MNIST with
pruning, VGG-BN on CIFAR-10 with SLBI-Adam). Every part is the library's own code (the engine, the
sweep runner, `cifarlab inspect`, the studies); this module only sets them up at a scale's settings
(configs/studies/pj2_<scale>.yaml), shows the progress and writes the summary and the report.

A part that is already complete is skipped and the engine and the sweep runner resume what was
interrupted, so a killed pj2 goes on where it stopped when started again with the same --out.

    OUT/task1_cifar10/best_model/          run folder, and analysis/<name>/ of each analysis
    OUT/task1_cifar10/recipes/<name>/      run folders: the reports' recipes at this scale
    OUT/task1_cifar10/sweeps/<sweep>/      sweep folders: the ablation tables
    OUT/task2_batchnorm/  OUT/task3_dessilbi/
    OUT/pj2.yaml results.md results.csv summary.json time_per_part.png report.html
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..analysis import registry
from ..config import (
    Config,
    check_same_run,
    compose,
    find_preset,
    flatten,
    load_config,
    nest,
    save_config,
    to_dict,
)
from ..errors import UserError
from ..run import atomic_write_json, atomic_write_text, environment, make_folder
from ..tables import SPREAD_NOTE, fmt_stat, md_table, within_spread
from .settings import key_settings

SCALES = ("smoke", "standard", "full")
PARTS = ("best", "analyses", "recipes", "sweeps", "bn", "dessilbi")
# pj2's own names for inspect options (configs/studies/pj2_*.yaml): key -> {analysis: its option}
ANALYSIS_KEYS = {
    "feature_images": {"features": "n_images"},
    "gradcam_images": {"gradcam": "n_images"},
    "gradcam_methods": {"gradcam": "methods"},
    "landscape_grid": {"landscape": "grid"},
    "landscape_n": {"landscape": "n", "hessian": "n"},
}


# keys of a run's config that may differ from a finished run without making it another experiment
@dataclass
class AnalysesConfig:
    names: list = field(default_factory=lambda: [a.name for a in registry.in_all()])
    feature_images: int = 2  # test images whose feature maps are drawn (a figure per stage each)
    gradcam_images: int = 16  # test images in the Grad-CAM figure
    gradcam_methods: str = "all"  # or a comma list: gradcam, gradcam++, layercam, guided_gradcam, integrated_gradients
    landscape_grid: str = "-1:1:21"  # min:max:num per axis of the 2D landscape
    landscape_n: int = 2000  # the first n training images (no augmentation) for the landscape and Hessian
    batch_size: int = 500
    options: dict = field(default_factory=dict)  # {analysis: {option: value}}: any of its inspect options


@dataclass
class PJ2Config:
    name: str = "pj2"
    scale: str = "standard"
    data: str = "cifar10"  # CIFAR-10 source for Tasks 1-3 (--data); a name or a path
    mnist: str = "mnist"  # MNIST source for the LeNet part of Task 3
    cache_dir: str = ""
    device: str = "auto"
    n_test: int = 0  # Task 1 runs evaluate on the first n_test test images (0 = all)
    parts: list = field(default_factory=lambda: list(PARTS))
    common: dict = field(default_factory=dict)  # overrides of every Task 1 training run
    best: dict = field(default_factory=lambda: {"base": "resnet18_standard", "set": {}})  # {base, set}
    recipes: dict = field(default_factory=dict)  # name -> {base: preset, set: overrides, reported: % on CIFAR-10}
    sweeps: dict = field(default_factory=dict)  # sweep preset -> overrides (sweep keys: seeds, axes.KEY; run keys)
    sweep_engine: str = "local"  # local | ray (every GPU of this machine or of a Ray cluster)
    analyses: AnalysesConfig = field(default_factory=AnalysesConfig)
    bn: dict = field(default_factory=dict)  # overrides of configs/studies/bn.yaml
    dessilbi: dict = field(default_factory=dict)  # overrides of configs/studies/dessilbi.yaml
    eta: dict = field(
        default_factory=dict
    )  # estimated seconds per part (best, analyses, recipes, sweeps, bn, dessilbi)


# ---------------------------------------------------------------- config


def load_pj2_config(scale: str = "standard", path: str | None = None, overrides: list[str] | None = None) -> PJ2Config:
    """configs/studies/pj2_<scale>.yaml (or the file at `path`) <- --set overrides, checked."""
    if path is None:
        if scale not in SCALES:
            raise UserError(f"unknown scale '{scale}'; choose from: {', '.join(SCALES)}")
        path = str(find_preset(f"pj2_{scale}", "studies"))
    return check_config(load_config(path, overrides, cls=PJ2Config))


def check_config(cfg: PJ2Config) -> PJ2Config:
    def bad(key: str, what: str) -> None:
        raise UserError(f"pj2: {key} must be {what}, got {getattr(cfg, key)!r}")

    if cfg.scale not in SCALES:
        bad("scale", " | ".join(SCALES))
    if not cfg.parts or any(p not in PARTS for p in cfg.parts):
        bad("parts", f"a non-empty list of: {', '.join(PARTS)}")
    if cfg.n_test < 0:
        bad("n_test", "0 or a positive integer")
    if cfg.sweep_engine not in ("local", "ray"):
        bad("sweep_engine", "local or ray")
    for name, spec in [("best", cfg.best)] + [(f"recipes.{k}", v) for k, v in cfg.recipes.items()]:
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("base", ""), str)
            or set(spec) - {"base", "set", "reported"}
            or not isinstance(spec.get("set") or {}, dict)
        ):
            raise UserError(f"pj2: {name} must be a mapping {{base: PRESET, set: {{...}}}}, got {spec!r}")
    for name, spec in cfg.sweeps.items():
        if not isinstance(spec, dict):
            raise UserError(
                f"pj2: sweeps.{name} must be a mapping of overrides (seeds, train.epochs, ...), got {spec!r}"
            )
    check_analyses(cfg.analyses)
    # a path is recorded in one spelling, so a second start with ../data or ./data finds its runs again
    from ..data.sources import NAMES

    canonical = {
        k: str(Path(v).resolve())
        for k, v in (("data", cfg.data), ("mnist", cfg.mnist))
        if v.strip().lower() not in NAMES and Path(v).exists()
    }
    return dataclasses.replace(cfg, **canonical)


def run_config(spec: dict, cfg: PJ2Config, name: str) -> Config:
    """The engine config of one Task 1 run: preset <- common <- the run's own set <- data and name."""
    where = {"name": name, "data": {"source": cfg.data, "cache_dir": cfg.cache_dir, "device": cfg.device}}
    return compose(spec.get("base"), cfg.common, spec.get("set"), where)


def sweep_overrides(cfg: PJ2Config, spec: dict) -> list[str]:
    """--set items of one sweep: the common run overrides, the sweep's own, and the data source."""
    items = {
        **flatten(nest(cfg.common)),
        **flatten(nest(spec)),
        "data.source": cfg.data,
        "data.cache_dir": cfg.cache_dir,
        "data.device": cfg.device,
    }
    return [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in items.items()]


def study_config(cls: type, preset: str, overrides: dict, forced: dict) -> Any:
    """A study's preset YAML (configs/studies/<preset>.yaml) <- pj2's overrides <- forced data settings."""
    return compose(preset, overrides, forced, cls=cls, kind="studies")


def bn_config(cfg: PJ2Config):
    from .bn_study import BNStudyConfig
    from .bn_study import check_config as check_bn

    return check_bn(
        study_config(BNStudyConfig, "bn", cfg.bn, {"data": cfg.data, "cache_dir": cfg.cache_dir, "device": cfg.device})
    )


def dessilbi_config(cfg: PJ2Config):
    from .dessilbi_study import DessiLBIStudyConfig
    from .dessilbi_study import check_config as check_dessilbi

    forced = {"lenet_data": cfg.mnist, "vgg_data": cfg.data, "cache_dir": cfg.cache_dir, "device": cfg.device}
    return check_dessilbi(study_config(DessiLBIStudyConfig, "dessilbi", cfg.dessilbi, forced))


# ---------------------------------------------------------------- folders and completeness


def folders(out: Path) -> dict[str, Path]:
    task1 = out / "task1_cifar10"
    return {
        "best": task1 / "best_model",
        "analyses": task1 / "best_model" / "analysis",
        "recipes": task1 / "recipes",
        "sweeps": task1 / "sweeps",
        "bn": out / "task2_batchnorm",
        "dessilbi": out / "task3_dessilbi",
    }


def same_study(out_dir: Path, study_cfg: Any) -> bool:
    """A study folder is complete for this config when its summary.json records that config."""
    p = out_dir / "summary.json"
    if not p.is_file():
        return False
    try:
        saved = json.loads(p.read_text()).get("config")
    except (OSError, json.JSONDecodeError):
        return False
    return saved == json.loads(json.dumps(to_dict(study_cfg)))


def sweep_runs_done(sweep, out_dir: Path) -> tuple[int, int]:
    """(finished runs, runs) of a sweep folder."""
    from ..sweeps import expand

    specs = expand(sweep)
    return sum((out_dir / s.run_id / "summary.json").is_file() for s in specs), len(specs)


# ---------------------------------------------------------------- the parts


@dataclass
class Part:
    key: str  # best | analyses | recipe:NAME | sweep:NAME | bn | dessilbi
    title: str
    eta: float  # estimated seconds (the scale's reference machine)
    complete: bool  # already complete before this start: skipped
    run: Callable[[], None]
    status: str = "pending"  # done | skipped | failed
    seconds: float = 0.0
    error: str = ""
    trace: str = ""


class Datasets:
    """Each data source is read once, when a part first needs it; Task 1 runs see n_test test images."""

    def __init__(self, cfg: PJ2Config):
        self.cfg, self.cache = cfg, {}

    def get(self, source: str, n_test: int = 0):
        from ..data import load_dataset

        if source not in self.cache:
            self.cache[source] = load_dataset(source, self.cfg.cache_dir or None)
        ds = self.cache[source]
        if n_test and n_test < len(ds.test_y):
            ds = dataclasses.replace(ds, test_x=ds.test_x[:n_test], test_y=ds.test_y[:n_test])
        return ds


def train_run(run_cfg: Config, run_dir: Path, dataset) -> None:
    """Train into run_dir: skip a finished run, resume an interrupted one, refuse one of other settings."""
    from ..train.engine import train

    train(run_cfg, run_dir=run_dir, resume="auto", dataset=dataset)


def analysis_names() -> tuple[str, ...]:
    """The analyses pj2 can run on its best model: the registered ones that need only a checkpoint and its data."""
    return tuple(a.name for a in registry.analyses() if not a.needs)


def check_analyses(a: AnalysesConfig) -> None:
    names = analysis_names()
    for key, given in (("names", a.names), ("options", a.options)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise UserError(f"pj2: unknown analysis {unknown[0]!r} in analyses.{key}; choose from: {', '.join(names)}")
    for name, options in a.options.items():
        allowed = registry.get(name).option_names()
        bad = [k for k in options or {} if k not in allowed] if isinstance(options, dict) else [options]
        if bad:
            raise UserError(f"pj2: analyses.options.{name} takes {', '.join(allowed) or 'no options'}; got {bad[0]!r}")


def run_analysis(run_dir: Path, name: str, out: Path, a: AnalysesConfig, device: str) -> None:
    """One `cifarlab inspect RUN NAME` with this scale's options; writes out/result.json last."""
    from ..analysis.inspect import inspect

    options: dict[str, Any] = {"device": device, "batch_size": a.batch_size}
    options.update({opts[name]: getattr(a, key) for key, opts in ANALYSIS_KEYS.items() if name in opts})
    options.update(a.options.get(name) or {})
    inspect(run_dir, name, out, echo=True, **options)


def plan(cfg: PJ2Config, out: Path, data: Datasets) -> list[Part]:
    """The parts this config asks for, in PARTS order, each knowing whether it is already complete."""
    f, parts = folders(out), []
    for key in PARTS:
        if key in cfg.parts:
            parts += PLANNERS[key](cfg, f, data)
    return parts


def _share(eta: dict, group: str, k: float, n: float) -> float:
    """A group's estimate split over its members: k of its n (runs, for sweeps)."""
    return float(eta.get(group, 0.0)) * k / max(n, 1.0)


def _finished(run_dir: Path, run_cfg: Config) -> bool:
    check_same_run(run_dir, run_cfg)  # before anything runs: a finished run of other settings is an error
    return (run_dir / "summary.json").is_file()


def _train_part(
    cfg: PJ2Config, data: Datasets, key: str, what: str, run_cfg: Config, run_dir: Path, eta: float
) -> Part:
    """A Task 1 training run as a part: complete once its summary.json is written."""
    return Part(
        key,
        f"Task 1: {what} ({run_cfg.model.name}, {run_cfg.train.epochs} epochs)",
        eta,
        _finished(run_dir, run_cfg),
        lambda: train_run(run_cfg, run_dir, data.get(cfg.data, cfg.n_test)),
    )


def _best_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    run_cfg = run_config(cfg.best, cfg, "best_model")
    return [_train_part(cfg, data, "best", "best model", run_cfg, f["best"], float(cfg.eta.get("best", 0)))]


def _analyses_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    names = list(cfg.analyses.names)

    def analyses() -> None:
        if not (f["best"] / "best.pt").is_file():
            raise UserError(
                f"the analyses need the best model's checkpoint {f['best'] / 'best.pt'}; "
                "train it first (parts: [best, ...])"
            )
        for n in names:  # an analysis with its result.json was finished by an earlier start
            if not (f["analyses"] / n / "result.json").is_file():
                run_analysis(f["best"], n, f["analyses"] / n, cfg.analyses, cfg.device)

    return [
        Part(
            "analyses",
            f"Task 1: analyses of the best model ({', '.join(names)})",
            float(cfg.eta.get("analyses", 0)),
            all((f["analyses"] / n / "result.json").is_file() for n in names),
            analyses,
        )
    ]


def _recipe_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    parts = []
    for name, spec in cfg.recipes.items():
        run_cfg = run_config(spec, cfg, name)
        eta = float(cfg.eta.get(f"recipe:{name}", _share(cfg.eta, "recipes", 1, len(cfg.recipes))))
        parts.append(
            _train_part(cfg, data, f"recipe:{name}", f"the reports' recipe {name}", run_cfg, f["recipes"] / name, eta)
        )
    return parts


def _sweep_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    from ..sweeps import load_sweep

    sweeps = {name: load_sweep(name, sweep_overrides(cfg, spec)) for name, spec in cfg.sweeps.items()}
    counts = {name: sweep_runs_done(s, f["sweeps"] / s.name) for name, s in sweeps.items()}
    total = sum(n for _, n in counts.values())  # a sweep's share of the estimate goes by its runs
    parts = []
    for name, sweep in sweeps.items():
        done, n = counts[name]
        parts.append(
            Part(
                f"sweep:{name}",
                f"Task 1: ablation sweep {name} ({n} runs)",
                float(cfg.eta.get(f"sweep:{name}", _share(cfg.eta, "sweeps", n, total))),
                done == n,
                lambda s=sweep: _run_sweep(s, f["sweeps"] / s.name, cfg, data),
            )
        )
    return parts


def _bn_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    from .bn_study import run_bn_study

    bn_cfg = bn_config(cfg)
    return [
        Part(
            "bn",
            f"Task 2: batch-normalization study ({len(bn_cfg.models)} models x "
            f"{len(bn_cfg.lrs)} learning rates, {bn_cfg.epochs} epochs)",
            float(cfg.eta.get("bn", 0)),
            same_study(f["bn"], bn_cfg),
            lambda: run_bn_study(bn_cfg, f["bn"], dataset=data.get(cfg.data)),
        )
    ]


def _dessilbi_parts(cfg: PJ2Config, f: dict[str, Path], data: Datasets) -> list[Part]:
    from .dessilbi_study import lenet_run_config, run_dessilbi_study, vgg_run_config

    d_cfg = dessilbi_config(cfg)
    lenet_epochs = lenet_run_config(d_cfg, d_cfg.optimizers[0], d_cfg.seeds[0]).train.epochs
    vgg_run = vgg_run_config(d_cfg) if d_cfg.vgg else None
    return [
        Part(
            "dessilbi",
            f"Task 3: DessiLBI study (LeNet/MNIST {lenet_epochs} epochs"
            + (f", {vgg_run.model.name}/CIFAR-10 {vgg_run.train.epochs} epochs)" if vgg_run else ")"),
            float(cfg.eta.get("dessilbi", 0)),
            same_study(f["dessilbi"], d_cfg),
            lambda: run_dessilbi_study(
                d_cfg,
                f["dessilbi"],
                lenet_dataset=data.get(cfg.mnist) if d_cfg.lenet else None,
                vgg_dataset=data.get(cfg.data) if d_cfg.vgg else None,
            ),
        )
    ]


# the parts of each PARTS key, planned in PARTS order
PLANNERS: dict[str, Callable[[PJ2Config, dict[str, Path], Datasets], list[Part]]] = {
    "best": _best_parts,
    "analyses": _analyses_parts,
    "recipes": _recipe_parts,
    "sweeps": _sweep_parts,
    "bn": _bn_parts,
    "dessilbi": _dessilbi_parts,
}


def _run_sweep(sweep, out_dir: Path, cfg: PJ2Config, data: Datasets) -> None:
    from ..sweeps import run_sweep

    rows = run_sweep(sweep, out_dir, engine=cfg.sweep_engine, data=data.get(cfg.data, cfg.n_test))
    failed = [r["run_id"] for r in rows if r["status"] == "failed"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) of sweep {sweep.name} failed: {', '.join(failed)} (see error.txt in {out_dir})"
        )


# ---------------------------------------------------------------- progress


def clock(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One line per part: which is running, the time so far and the time left, estimated from the parts'
    weights (eta seconds) scaled by how fast the finished parts went against their estimates."""

    def __init__(self, parts: list[Part], label: str):
        self.parts, self.label, self.t0 = parts, label, time.perf_counter()

    def left(self, start: int) -> float:
        ran = [p for p in self.parts if p.status in ("done", "failed")]
        est = sum(p.eta for p in ran)
        rate = sum(p.seconds for p in ran) / est if est > 0 and ran else 1.0
        return rate * sum(p.eta for p in self.parts[start:] if not p.complete)

    def say(self, i: int, msg: str, left_from: int) -> None:
        elapsed = time.perf_counter() - self.t0
        print(
            f"[{self.label} {i + 1}/{len(self.parts)}] {msg}  (elapsed {clock(elapsed)}, "
            f"about {clock(self.left(left_from))} left)",
            flush=True,
        )


def run_parts(parts: list[Part], label: str) -> None:
    """Run every part not already complete; a part that crashes is recorded and the others go on
    (a UserError - bad config or data - stops at once: every later part would fail the same way)."""
    prog = Progress(parts, label)
    for i, part in enumerate(parts):
        if part.complete:
            part.status = "skipped"
            prog.say(i, f"{part.title}: already complete, skipped", i + 1)
            continue
        prog.say(i, f"{part.title}: running", i)
        t0 = time.perf_counter()
        try:
            part.run()
            part.status = "done"
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug or out of memory in one part: the rest of the study still runs
            part.status, part.error = "failed", f"{type(e).__name__}: {e}"
            part.trace = traceback.format_exc()
            print(f"[{label}] {part.title} FAILED: {part.error}", flush=True)
        part.seconds = time.perf_counter() - t0
        prog.say(i, f"{part.title}: {part.status} in {clock(part.seconds)}", i + 1)


# ---------------------------------------------------------------- the study


def run_pj2(cfg: PJ2Config, out_dir: str | Path) -> dict:
    """Run (or resume) every part, then write results.md, results.csv, summary.json and report.html."""
    from ..report import report_folder
    from ..train.device import pick_device

    cfg = check_config(cfg)
    out = make_folder(out_dir)
    save_config(cfg, out / "pj2.yaml")
    t0 = time.perf_counter()
    parts = plan(cfg, out, Datasets(cfg))
    run_parts(parts, f"pj2 {cfg.scale}")
    previous = _previous_parts(out)
    for p in parts:  # a skipped part keeps the time it took when it ran
        if p.status == "skipped" and p.key in previous:
            p.seconds = float(previous[p.key].get("seconds") or 0.0)
    summary = write_results(cfg, out, parts, pick_device(cfg.device), time.perf_counter() - t0)
    report = report_folder(out)
    print(f"[pj2 {cfg.scale}] report: {report}", flush=True)
    failed = [p for p in parts if p.status == "failed"]
    if failed:
        errors = "\n\n".join(f"{p.title}\n{p.trace}" for p in failed)
        atomic_write_text(out / "errors.txt", errors)
        raise UserError(
            f"pj2: {len(failed)} part(s) failed ({', '.join(p.key for p in failed)}); "
            f"the report holds the rest; tracebacks in {out / 'errors.txt'}"
        )
    (out / "errors.txt").unlink(missing_ok=True)
    return summary


def _previous_parts(out: Path) -> dict[str, dict]:
    try:
        old = json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {p["part"]: p for p in old.get("parts", []) if isinstance(p, dict) and "part" in p}


# ---------------------------------------------------------------- results


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def pct(v: Any, digits: int = 2) -> str:
    return (
        f"{100 * v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "-"
    )


def best_model_row(run_dir: Path) -> dict | None:
    s = _json(run_dir / "summary.json")
    if not s:
        return None
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    return {
        "model": s.get("model"),
        "epochs": s.get("epochs"),
        "tta": (cfg.get("train") or {}).get("tta", "none"),
        "test_acc": s.get("final_test_acc"),
        "test_acc_no_tta": s.get("final_test_acc_no_tta"),
        "params": s.get("params"),
        "train_seconds": s.get("train_seconds"),
        "dataset": s.get("dataset"),
    }


def sweep_row(name: str, out_dir: Path) -> dict | None:
    from ..sweeps.results import best_config, collect, direction, summarize

    if not (out_dir / "sweep.yaml").is_file():
        return None
    try:
        rows, axes, metrics = collect(out_dir)
    except UserError:
        return None
    groups = summarize(rows, axes, metrics)
    primary = next((m for m in metrics if direction(m)), metrics[0])
    best = best_config(groups, primary)
    desc = (", ".join(f"{a}={best[a]}" for a in axes) or best["config_id"]) if best else "-"
    return {
        "sweep": name,
        "runs": len(rows),
        "done": sum(r["status"] in ("done", "diverged") for r in rows),
        "metric": primary,
        "best": desc,
        "value": f"{fmt_stat(primary, best[primary])} (n={best['n']})" if best else "-",
    }


def bn_rows(out_dir: Path) -> list[dict]:
    runs = [r for r in _json(out_dir / "summary.json").get("runs", []) if isinstance(r, dict)]
    out = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        ok = [r for r in mine if not r.get("stalled")]
        mean = lambda k: sum(r[k] for r in ok) / len(ok) if ok and all(k in r for r in ok) else None  # noqa: E731, B023 (called in this iteration)
        top = max(mine, key=lambda r: r["final_test_acc"])  # the lr with the best final accuracy
        out.append(
            {
                "model": model,
                "final_test_acc": top["final_test_acc"],
                "lr": top["lr"],
                "best_test_acc": max(r["best_test_acc"] for r in mine),
                "runs": len(mine),
                "stalled": len(mine) - len(ok),
                "loss_variation_width": mean("loss_variation_width"),
                "beta_smooth_mean": mean("beta_smooth_mean"),
            }
        )
    return out


def dessilbi_rows(out_dir: Path) -> list[dict]:
    s = _json(out_dir / "summary.json")
    heads = {h["run"]: h for h in s.get("headline", []) if isinstance(h, dict)}
    out = []
    for r in s.get("runs", []):
        h = heads.get(r.get("run"), {})
        out.append(
            {
                "run": r.get("run"),
                "model": r.get("model", "LeNet"),
                "optimizer": r.get("optimizer"),
                "test_acc": r.get("final_test_acc"),
                "stalled": r.get("stalled"),
                "pruned": f"{h['layers']} at {h['percent']:g}%" if "accuracy_pruned" in h else "",
                "pruned_acc": h.get("accuracy_pruned"),
                "removed": ", ".join(h.get("removed", {}).values()),
            }
        )
    return out


def mean_std(values: list[float]) -> tuple[float, float | None] | None:
    """Mean and sample std over seeds (no std for one seed), as the sweep tables give them."""
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def _pm(stat: tuple[float, float | None] | None) -> str:
    """A (mean, std) of percentages: '98.61 ± 0.12', or '98.61' for one seed."""
    if stat is None:
        return "-"
    return f"{stat[0]:.2f}" + (f" ± {stat[1]:.2f}" if stat[1] is not None else "")


def dessilbi_groups(rows: list[dict]) -> list[dict]:
    """The DessiLBI runs per (model, optimizer) over their seeds: final test accuracy mean ± std (stalled
    runs left out, as the study does) and each group against its model's best (≈ within seed spread)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["optimizer"]), []).append(r)
    out = []
    for (model, opt), mine in groups.items():
        ok = [r for r in mine if not r["stalled"]]
        out.append(
            {
                "model": model,
                "optimizer": opt,
                "n": len(mine),
                "acc": mean_std([r["test_acc"] for r in ok if r["test_acc"] is not None]),
                "pruned": next((r["pruned"] for r in mine if r["pruned"]), ""),
                "pruned_acc": _pm(mean_std([r["pruned_acc"] for r in ok if r["pruned_acc"] is not None])),
                "removed": mine[0]["removed"] if len(mine) == 1 else "per run in the study's section",
                "stalled": sum(bool(r["stalled"]) for r in mine),
            }
        )
    for g in out:
        rivals = [h for h in out if h["model"] == g["model"] and h["acc"] is not None]
        top = max(rivals, key=lambda h: h["acc"][0]) if rivals else None
        g["test_acc"] = _pm(g["acc"])
        g["vs_best"] = _vs(g, top, len(rivals))
    return out


def _vs(g: dict, top: dict | None, rivals: int) -> str:
    if rivals < 2 or g["acc"] is None or top is None:
        return ""
    if g is top:
        return "best"
    return f"{g['acc'][0] - top['acc'][0]:+.2f}" + (
        " (≈ within seed spread)" if within_spread(g["acc"], top["acc"]) else ""
    )


# a table's columns: row key -> header
BEST_COLUMNS = {
    "model": "model",
    "epochs": "epochs",
    "tta": "test-time augmentation",
    "acc": "test accuracy",
    "acc_no_tta": "without TTA",
    "params": "parameters",
    "time": "training time",
}
RECIPE_COLUMNS = {
    "run": "run",
    "model": "model",
    "epochs": "epochs here",
    "acc": "test accuracy",
    "reported": "reported (real CIFAR-10, full schedule)",
    "time": "training time",
}
SWEEP_COLUMNS = {
    "sweep": "sweep",
    "done": "finished runs",
    "runs": "runs",
    "best": "best configuration",
    "metric": "by",
    "value": "value (%)",
}
BN_COLUMNS = {
    "model": "model",
    "final_test_acc": "final test accuracy (best lr, chosen on test)",
    "lr": "at lr",
    "best_test_acc": "best epoch over lrs (chosen on test)",
    "runs": "runs",
    "stalled": "stalled",
    "loss_variation_width": "loss-variation width (mean)",
    "beta_smooth_mean": "effective beta-smoothness (mean)",
}
DESSILBI_COLUMNS = {
    "model": "model",
    "optimizer": "optimizer",
    "n": "seeds",
    "test_acc": "final test accuracy",
    "vs_best": "vs the model's best",
    "pruned": "pruned",
    "pruned_acc": "accuracy after pruning",
    "removed": "removed",
    "stalled": "stalled runs",
}
TIME_COLUMNS = {"title": "part", "status": "status", "time": "time"}


def _section(title: str, rows: list[dict], columns: dict[str, str]) -> list[str]:
    """A '## title' section of results.md holding one table."""
    return ["", f"## {title}", ""] + md_table(rows, list(columns), list(columns.values()))


@dataclass
class Results:
    """What the study's folders hold, row by row, for results.md and summary.json."""

    best: dict | None
    recipes: list[dict]
    sweeps: list[dict]
    bn: list[dict]
    dessilbi: list[dict]


def collect_results(cfg: PJ2Config, f: dict[str, Path]) -> Results:
    best = best_model_row(f["best"])
    recipes = []
    for name, spec in cfg.recipes.items():
        r = best_model_row(f["recipes"] / name)
        if r:
            recipes.append({"run": name, **r, "reported": spec.get("reported")})
    return Results(
        best=best,
        recipes=recipes,
        sweeps=[r for r in (sweep_row(n, f["sweeps"] / n) for n in cfg.sweeps) if r],
        bn=bn_rows(f["bn"]),
        dessilbi=dessilbi_rows(f["dessilbi"]),
    )


def _intro_lines(cfg: PJ2Config, best: dict | None) -> list[str]:
    lines = [
        f"# Project 2 study, {cfg.scale} scale",
        "",
        f"CIFAR-10 source: `{cfg.data}`; MNIST source: `{cfg.mnist}`. Accuracies are test accuracies in %.",
    ]
    if "jpeg" in Path(cfg.data).name.lower() or (best or {}).get("dataset") == "cifar10-jpeg":
        lines.append(
            "The CIFAR-10 images are the re-encoded JPEG copy: it costs about 3 points against real CIFAR-10, "
            "so compare methods side by side here and never quote these numbers as CIFAR-10 numbers."
        )
    return lines


def _task_lines(res: Results) -> list[str]:
    """The sections of the parts that have results, Task 1 to Task 3."""
    lines = []
    if res.best:
        b = res.best
        row = {
            **b,
            "acc": pct(b["test_acc"]),
            "acc_no_tta": pct(b["test_acc_no_tta"]),
            "time": clock(b["train_seconds"] or 0),
            "params": f"{b['params']:,}" if isinstance(b["params"], int) else "-",
        }
        lines += _section("Task 1: the best model", [row], BEST_COLUMNS)
    if res.recipes:
        rows = [{**a, "acc": pct(a["test_acc"]), "time": clock(a["train_seconds"] or 0)} for a in res.recipes]
        lines += _section("Task 1: the reports' recipes at this scale", rows, RECIPE_COLUMNS)
    if res.sweeps:
        lines += _section("Task 1: ablation sweeps (tables in each sweep's section)", res.sweeps, SWEEP_COLUMNS)
    if res.bn:
        rows = [
            {**r, "final_test_acc": pct(r["final_test_acc"]), "best_test_acc": pct(r["best_test_acc"])} for r in res.bn
        ]
        lines += _section("Task 2: batch normalization", rows, BN_COLUMNS)
    if res.dessilbi:
        groups = dessilbi_groups(res.dessilbi)
        lines += _section("Task 3: DessiLBI", groups, DESSILBI_COLUMNS)
        if any("≈" in g["vs_best"] for g in groups):
            lines += ["", SPREAD_NOTE]
    return lines


def _time_lines(parts: list[Part], part_rows: list[dict], seconds: float) -> list[str]:
    lines = _section("Time per part", [{**r, "time": clock(r["seconds"])} for r in part_rows], TIME_COLUMNS)
    return lines + [
        "",
        f"Total: {clock(sum(p.seconds for p in parts))} (this start: {clock(seconds)}); "
        "'skipped' parts were complete from an earlier start and show the time they took then.",
    ]


def _write_times(out: Path, parts: list[Part], part_rows: list[dict]) -> None:
    """results.csv and time_per_part.png (with its caption): the time each part took."""
    atomic_write_text(
        out / "results.csv",
        "part,title,status,seconds\n"
        + "".join(f'{r["part"]},"{r["title"]}",{r["status"]},{r["seconds"]}\n' for r in part_rows),
    )
    from .pj2_figures import plot_times

    plot_times(out / "time_per_part.png", parts, clock(sum(p.seconds for p in parts)))
    atomic_write_json(
        out / "captions.json",
        {
            "time_per_part.png": "Wall time of each part of the study (grey: complete from an earlier start, "
            "red: failed)."
        },
    )


def _headline(cfg: PJ2Config, res: Results) -> dict[str, Any]:
    """The first scalars of summary.json: they become the report's headline cards."""
    best = res.best
    head: dict[str, Any] = {"study": "pj2", "scale": cfg.scale, "dataset": (best or {}).get("dataset") or cfg.data}
    if best:
        head.update({"best_model": best["model"], "best_model_test_acc": best["test_acc"]})
        if best["test_acc_no_tta"] is not None:
            head["best_model_no_tta_test_acc"] = best["test_acc_no_tta"]
    for r in res.bn:
        head[f"{r['model']}_final_test_acc"] = r["final_test_acc"]
    for r in res.dessilbi:  # the study's rows are in %, the headline in fractions like the others
        if r["test_acc"] is not None and r["optimizer"] == "slbi":
            head[f"{r['run']}_test_acc"] = r["test_acc"] / 100
            if r["pruned_acc"] is not None:
                head[f"{r['run']}_pruned_acc"] = r["pruned_acc"] / 100
    return head


def write_results(cfg: PJ2Config, out: Path, parts: list[Part], device, seconds: float) -> dict:
    """results.md, results.csv, time_per_part.png and summary.json of the study folder."""
    res = collect_results(cfg, folders(out))
    part_rows = [{"part": p.key, "title": p.title, "status": p.status, "seconds": round(p.seconds, 1)} for p in parts]
    lines = _intro_lines(cfg, res.best) + _task_lines(res) + _time_lines(parts, part_rows, seconds)
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    _write_times(out, parts, part_rows)
    summary = _headline(cfg, res)
    summary.update(
        {
            "config": to_dict(cfg),
            "settings": key_settings(cfg, against_defaults=False),
            "seconds": sum(p.seconds for p in parts),
            "parts": part_rows,
            "best_model_run": res.best,
            "recipes": res.recipes,
            "sweeps": res.sweeps,
            "bn": res.bn,
            "dessilbi": res.dessilbi,
            "env": environment(device),
        }
    )
    atomic_write_json(out / "summary.json", summary)
    return summary
