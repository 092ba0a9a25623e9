"""The DessiLBI study (SPEC 4): structural sparsity found by SLBI, and what pruning by it costs.

Part 1, LeNet on MNIST: the official SLBI recipe, SGD-momentum and SLBI-Adam, each a run folder
trained through the engine (one per optimizer and seed); the SLBI runs are pruned at several
percents (conv3, then conv3 + fc1) from their final state. Part 2, VGG_A_BatchNorm on CIFAR-10
with SLBI-Adam: accuracy, a pruning-ratio sweep of one layer, and each layer pruned in turn.

A run that ends at chance (test accuracy < chance_acc: under the official recipe some seeds kill
every ReLU in the first steps) is flagged in the tables, left out of the means and not pruned.
Finished run folders are reused and interrupted ones resume, so the study can be killed and
started again with the same --out.

Outputs in the study folder: one folder per run, results.md, results.csv (one row per run),
pruning.csv (one row per pruned layer and percent), summary.json and the figures lenet_curves,
solution_path, conv3_weights, lenet_pruning, vgg_pruning (PNG).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, compose, compose_dict, deep_merge, find_preset, load_config, nest, to_dict
from ..data import load_dataset
from ..errors import UserError
from ..run import atomic_write_json, atomic_write_text, environment, make_folder, read_jsonl
from ..sparsity.evaluate import PruneTarget, load_target, prune_and_measure, tracked_layers
from ..sparsity.official import accuracy
from ..sparsity.prune import named_states, prune, recover, selection
from ..tables import acc2, csv_text, fmt, md_table
from ..train.device import pick_device
from ..train.engine import train
from ..train.pool import default_parallel, quiet, run_all
from .dessilbi_figures import plot_all
from .settings import key_settings

OPTIMIZERS = ("slbi", "momentum", "slbi_adam")
SLBI_LIKE = ("slbi", "slbi_adam")


def alias(*targets: str) -> Any:
    """A shorthand field: None (the preset's value) or a value that `_aliases` sets at each "part:key"."""
    return dataclasses.field(default=None, metadata={"alias": targets})


@dataclasses.dataclass
class DessiLBIStudyConfig:
    name: str = "dessilbi"
    cache_dir: str = ""
    device: str = "auto"
    progress: bool = True
    chance_acc: float = 0.2  # a run whose final test accuracy is below this stalled at chance
    prune_bias: bool = False  # also zero the biases of pruned conv filters
    n_test: int = 0  # evaluate (training and pruning) on the first n_test test images (0 = all)
    # Part 1: LeNet on MNIST. Every run is the train preset lenet_run.base <- lenet_run.set <- its optimizer's
    # entry of lenet_optims (over the preset's optim section; an entry that names another optimizer does not
    # inherit the preset's optimizer-specific args).
    lenet: bool = True
    lenet_data: str = "mnist"
    lenet_run: dict = dataclasses.field(default_factory=lambda: {"base": "lenet_mnist_slbi", "set": {}})
    lenet_optims: dict = dataclasses.field(
        default_factory=lambda: {
            "slbi": {},
            "momentum": {"name": "momentum"},
            # the Adam step is lr * kappa, Z moves by lr / mu
            "slbi_adam": {"name": "slbi_adam", "lr": 0.1, "args": {"kappa": 0.01, "mu": 100.0}},
        }
    )
    optimizers: list = dataclasses.field(default_factory=lambda: list(OPTIMIZERS))
    seeds: list = dataclasses.field(default_factory=lambda: [1])
    prune_sets: list = dataclasses.field(default_factory=lambda: [["conv3.weight"], ["conv3.weight", "fc1.weight"]])
    percents: list = dataclasses.field(default_factory=lambda: [10, 20, 30, 40, 50, 60, 70, 80, 90])
    prune_percent: float = 80.0  # the headline prune (first prune set) and the weights figure
    path_layer: str = "conv3.weight"  # the solution path and weights figures
    # Part 2: VGG on CIFAR-10 with SLBI-Adam: the train preset vgg_run.base <- vgg_run.set
    vgg: bool = True
    vgg_data: str = "cifar10"
    vgg_run: dict = dataclasses.field(default_factory=lambda: {"base": "vgg_a_bn_slbi_adam", "set": {}})
    vgg_seed: int = 0
    vgg_sweep_layer: str = ""  # "" = the middle conv kernel of the tracked layers
    vgg_percents: list = dataclasses.field(default_factory=lambda: [10, 20, 30, 40, 50, 60, 70, 80, 90])
    vgg_layer_percent: float = 50.0  # every tracked layer pruned in turn at this percent
    # Shorthands (None: the preset's value), each an alias of overrides above: "part:key" with part lenet
    # (every LeNet run), an optimizer of lenet_optims (its optim section) or vgg.
    epochs: int | None = alias("lenet:train.epochs")
    n_items: int | None = alias("lenet:data.n_items")  # train on the first n_items images (0 = all)
    batch_size: int | None = alias("lenet:data.batch_size")
    lr: float | None = alias("slbi:lr", "momentum:lr")  # SLBI and SGD-momentum
    momentum: float | None = alias("slbi:momentum", "momentum:momentum")
    kappa: float | None = alias("slbi:args.kappa")
    mu: float | None = alias("slbi:args.mu")
    lr_step: int | None = alias("lenet:schedule.step_size")  # epochs between lr x 0.1
    adam_lr: float | None = alias("slbi_adam:lr")
    adam_kappa: float | None = alias("slbi_adam:args.kappa")
    adam_mu: float | None = alias("slbi_adam:args.mu")
    vgg_model: str | None = alias("vgg:model.name")
    vgg_model_args: dict | None = alias("vgg:model.args")
    vgg_epochs: int | None = alias("vgg:train.epochs")
    vgg_n_items: int | None = alias("vgg:data.n_items")
    vgg_batch_size: int | None = alias("vgg:data.batch_size")
    vgg_lr: float | None = alias("vgg:optim.lr")
    vgg_kappa: float | None = alias("vgg:optim.args.kappa")
    vgg_mu: float | None = alias("vgg:optim.args.mu")
    vgg_augment: bool | None = None  # false: no augmentation (the preset's random crop and flip are dropped)


# ---------------------------------------------------------------- config


def load_study_config(path: str | None = None, overrides: list[str] | None = None) -> DessiLBIStudyConfig:
    """The preset configs/studies/dessilbi.yaml (or a named file) <- --set overrides, checked."""
    path = str(find_preset(path or "dessilbi", "studies"))
    return check_config(load_config(path, overrides, cls=DessiLBIStudyConfig))


def check_config(cfg: DessiLBIStudyConfig) -> DessiLBIStudyConfig:
    def bad(key: str, what: str) -> None:
        raise UserError(f"dessilbi: {key} must be {what}, got {getattr(cfg, key)!r}")

    def percents_ok(v) -> bool:
        return all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 100 for p in v)

    unknown = [o for o in cfg.optimizers if o not in OPTIMIZERS]
    if unknown or not cfg.optimizers or len(set(cfg.optimizers)) != len(cfg.optimizers):
        bad("optimizers", f"a non-empty list of distinct names from {', '.join(OPTIMIZERS)}")
    if (
        not cfg.seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in cfg.seeds)
        or len(set(cfg.seeds)) != len(cfg.seeds)
    ):
        bad("seeds", "a non-empty list of distinct integers")
    for key in ("epochs", "batch_size", "lr_step", "vgg_epochs", "vgg_batch_size"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            bad(key, "a positive integer")
    for key in ("n_items", "n_test", "vgg_n_items"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 0:
            bad(key, "0 or a positive integer")
    for key in ("lr", "adam_lr", "vgg_lr", "kappa", "mu", "adam_kappa", "adam_mu", "vgg_kappa", "vgg_mu"):
        if getattr(cfg, key) is not None and not getattr(cfg, key) > 0:
            bad(key, "a positive number")
    for key in ("lenet_run", "vgg_run"):
        spec = getattr(cfg, key)
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("base", ""), str)
            or set(spec) - {"base", "set"}
            or not isinstance(spec.get("set") or {}, dict)
        ):
            bad(key, "a mapping {base: PRESET, set: {...}}")
    if (
        not isinstance(cfg.lenet_optims, dict)
        or set(cfg.lenet_optims) - set(OPTIMIZERS)
        or not all(isinstance(v, dict) for v in cfg.lenet_optims.values())
    ):
        bad("lenet_optims", f"a mapping from {', '.join(OPTIMIZERS)} to overrides of the optim section")
    for key in ("percents", "vgg_percents"):
        if not getattr(cfg, key) or not percents_ok(getattr(cfg, key)):
            bad(key, "a non-empty list of numbers in [0, 100]")
    for key in ("prune_percent", "vgg_layer_percent"):
        if not percents_ok([getattr(cfg, key)]):
            bad(key, "a number in [0, 100]")
    if not cfg.prune_sets or not all(
        isinstance(s, list) and s and all(isinstance(n, str) for n in s) for s in cfg.prune_sets
    ):
        bad("prune_sets", "a non-empty list of non-empty lists of layer names, e.g. [[conv3.weight]]")
    if not 0 <= cfg.chance_acc < 1:
        bad("chance_acc", "in [0, 1)")
    if not (cfg.lenet or cfg.vgg):
        raise UserError("dessilbi: nothing to do (lenet and vgg are both false)")
    for opt in cfg.optimizers if cfg.lenet else []:  # an unknown or mistyped engine key fails here, before any run
        lenet_run_config(cfg, opt, cfg.seeds[0])
    if cfg.vgg:
        vgg_run_config(cfg)
    return cfg


def run_name(part: str, optimizer: str, seed: int) -> str:
    return f"{part}-{optimizer}-seed{seed}"


def _aliases(cfg: DessiLBIStudyConfig, part: str) -> dict:
    """The shorthands that are set, as overrides of `part` (lenet, vgg or an optimizer's optim section)."""
    out = {}
    for f in dataclasses.fields(cfg):
        for where, _, path in (t.partition(":") for t in f.metadata.get("alias", ())):
            if where == part and getattr(cfg, f.name) is not None:
                out[path] = getattr(cfg, f.name)
    return nest(out)


def _where(cfg: DessiLBIStudyConfig, name: str, seed: int, source: str) -> dict:
    """What the study, not the preset, decides: the run's name and seed, the data source and device."""
    return {
        "name": name,
        "seed": seed,
        "data": {"source": source, "cache_dir": cfg.cache_dir, "device": cfg.device},
        "train": {"progress": cfg.progress, "log_epochs": cfg.progress},
    }


def lenet_run_config(cfg: DessiLBIStudyConfig, optimizer: str, seed: int) -> Config:
    """The engine config of one LeNet run: the preset (the official recipe) <- set, with the optimizer swapped.

    The optimizer's lenet_optims entry goes over the preset's optim section; an entry naming another
    optimizer starts without the preset's args (kappa, mu belong to the optimizer they were set for)."""
    data = compose_dict(cfg.lenet_run.get("base"), cfg.lenet_run.get("set"), _aliases(cfg, "lenet"))
    over = deep_merge(dict(cfg.lenet_optims.get(optimizer) or {}), _aliases(cfg, optimizer))
    optim = dict(data.get("optim") or {})
    if over.get("name", optim.get("name")) != optim.get("name"):
        optim.pop("args", None)
    data["optim"] = deep_merge(optim, over)
    return compose(data, _where(cfg, run_name("lenet", optimizer, seed), seed, cfg.lenet_data))


def vgg_run_config(cfg: DessiLBIStudyConfig) -> Config:
    """The engine config of the VGG run: the preset <- set <- the shorthands (vgg_augment false: no augmentation)."""
    data = compose_dict(cfg.vgg_run.get("base"), cfg.vgg_run.get("set"), _aliases(cfg, "vgg"))
    if cfg.vgg_augment is False:
        data["augment"] = {}
    name = run_name("vgg", "slbi_adam", cfg.vgg_seed)
    return compose(data, _where(cfg, name, cfg.vgg_seed, cfg.vgg_data))


def vgg_model(cfg: DessiLBIStudyConfig) -> str:
    return vgg_run_config(cfg).model.name


# ---------------------------------------------------------------- runs


# What must agree for a run folder on disk to count as the run the study asks for.
def train_or_reuse(run_cfg: Config, run_dir: Path, dataset) -> None:
    """Train into run_dir: skip a finished run, resume an interrupted one, refuse one of other settings."""
    train(run_cfg, run_dir=run_dir, resume="auto", dataset=dataset)


def run_record(run_dir: Path, part: str, optimizer: str, seed: int, chance_acc: float) -> dict:
    history = read_jsonl(run_dir / "metrics.jsonl")
    accs = [h["test_acc"] for h in history if "test_acc" in h]
    if not accs:
        raise UserError(f"{run_dir}: no test accuracy in metrics.jsonl")
    final = accs[-1]
    return {
        "part": part,
        "run": run_dir.name,
        "optimizer": optimizer,
        "seed": seed,
        "epochs": len(history),
        "final_test_acc": 100 * final,
        "best_test_acc": 100 * max(accs),
        "final_train_loss": history[-1]["train_loss"],
        "stalled": bool(final < chance_acc or not math.isfinite(history[-1]["train_loss"])),
        "history": {k: [h.get(k) for h in history] for k in ("epoch", "train_loss", "train_acc", "test_acc")},
    }


def _with_test(ds, n_test: int):
    if not n_test or n_test >= len(ds.test_y):
        return ds
    return dataclasses.replace(ds, test_x=ds.test_x[:n_test], test_y=ds.test_y[:n_test])


# ---------------------------------------------------------------- pruning


def prune_rows(
    target: PruneTarget, run: dict, layer_sets: list[list[str]], percents: list, prune_bias: bool, before: float
) -> list[dict]:
    """Long format: one row per (layer set, percent, layer) with that layer's removed fraction."""
    rows = []
    for layers in layer_sets:
        for pct in percents:
            res = prune_and_measure(target, layers, float(pct), prune_bias, before=before)
            for layer, r in res["report"]["layers"].items():
                rows.append(
                    {
                        "part": run["part"],
                        "run": run["run"],
                        "optimizer": run["optimizer"],
                        "seed": run["seed"],
                        "layer_set": "+".join(layers),
                        "percent": float(pct),
                        "layer": layer,
                        "unit": r["kind"],
                        "removed": r["removed"],
                        "total": r["total"],
                        "fraction": r["fraction"],
                        "accuracy_before": before,
                        "accuracy_pruned": res["accuracy_pruned"],
                        "accuracy_recovered": res["accuracy_recovered"],
                    }
                )
    return rows


def weights_before_after(target: PruneTarget, layer: str, percent: float, prune_bias: bool) -> dict:
    """The layer's weights as they are and as prune(percent) leaves them (the model is recovered)."""
    w = dict(target.model.named_parameters())[layer]
    before = w.detach().cpu().clone()
    report = prune(target.opt, target.model, percent, [layer], prune_bias)
    after = w.detach().cpu().clone()
    recover(target.opt, target.model)
    return {"before": before.numpy(), "after": after.numpy(), "report": report["layers"][layer]}


def solution_path(target: PruneTarget, layer: str) -> np.ndarray | None:
    """||Gamma|| per filter (conv) or output row (FC), a row every path_every steps and at each epoch end."""
    path = named_states(target.opt).get(layer, {}).get("gamma_path")
    return None if path is None else path.cpu().numpy()


def path_epochs(target: PruneTarget, layer: str) -> np.ndarray | None:
    """The fractional epoch of each solution-path row (its step, placed between the steps at which the
    epochs ended); None for a path recorded once per epoch, without steps (an older run)."""
    st = named_states(target.opt).get(layer, {})
    if "path_steps" not in st or "epoch_steps" not in st:
        return None
    steps, ends = st["path_steps"].cpu().double().numpy(), st["epoch_steps"].cpu().double().numpy()
    if not len(ends) or np.isnan(steps).any() or np.isnan(ends).any():
        return None
    return np.interp(steps, np.concatenate([[0.0], ends]), np.arange(len(ends) + 1, dtype=float))


def kept_at(target: PruneTarget, layer: str, percent: float) -> np.ndarray:
    """Which filters (conv) / output rows (FC) keep a weight when the layer is pruned at percent."""
    w = dict(target.model.named_parameters())[layer]
    prune(target.opt, target.model, percent, [layer])
    kept = (w.detach().flatten(1).abs().sum(1) > 0).cpu().numpy()
    recover(target.opt, target.model)
    return kept


# ---------------------------------------------------------------- the study


def run_dessilbi_study(cfg: DessiLBIStudyConfig, out_dir: str | Path, lenet_dataset=None, vgg_dataset=None) -> dict:
    """Train (or reuse) every run, prune, and write tables, figures and summary.json into out_dir.

    lenet_dataset / vgg_dataset: Datasets to use instead of loading lenet_data / vgg_data."""
    cfg = check_config(cfg)
    out_dir = make_folder(out_dir)
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    runs, prune_table, figures, extra = [], [], [], {}
    num_classes = 10  # MNIST and CIFAR-10; the datasets below say so
    if cfg.lenet:
        ds = lenet_dataset if lenet_dataset is not None else load_dataset(cfg.lenet_data, cfg.cache_dir or None)
        ds = _with_test(ds, cfg.n_test)
        num_classes = ds.num_classes
        _lenet_part(cfg, out_dir, ds, device, runs, prune_table, extra)
    if cfg.vgg:
        ds = vgg_dataset if vgg_dataset is not None else load_dataset(cfg.vgg_data, cfg.cache_dir or None)
        ds = _with_test(ds, cfg.n_test)
        num_classes = ds.num_classes
        _vgg_part(cfg, out_dir, ds, device, runs, prune_table, extra)
    seconds = time.perf_counter() - t0

    figures += plot_all(out_dir, cfg, runs, prune_table, extra)
    headline = headlines(cfg, runs, prune_table)
    write_tables(out_dir, cfg, runs, prune_table, headline, num_classes)
    summary = {
        "study": "dessilbi",
        "config": to_dict(cfg),
        "settings": key_settings(cfg),
        "seconds": seconds,
        "headline": headline,
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
        "optimizer_means": optimizer_means(runs),
        "prune_costs": prune_costs(headline),
        "pruning": prune_table,
        "figures": figures,
        "selection": extra.get("selection", {}),
        "env": environment(device),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _say(cfg: DessiLBIStudyConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[dessilbi] {msg}", flush=True)


def _train_lenet_runs(cfg, cfgs: list[Config], out_dir: Path, ds) -> None:
    """Train (or reuse) the LeNet runs: independent seeds and optimizers, so --parallel of them at once."""
    n = default_parallel(cfg.device)
    if n <= 1:
        for i, run_cfg in enumerate(cfgs):
            _say(cfg, f"LeNet run {i + 1}/{len(cfgs)}: {run_cfg.name}")
            train_or_reuse(run_cfg, out_dir / run_cfg.name, ds)
        return
    _say(cfg, f"{len(cfgs)} LeNet runs, {min(n, len(cfgs))} at a time")
    jobs = [(quiet(c), out_dir / c.name) for c in cfgs]
    for done, (i, _) in enumerate(run_all(_train_job, jobs, n, ds), 1):
        _say(cfg, f"LeNet run {done}/{len(cfgs)} done: {cfgs[i].name}")


def _train_job(ds, run_cfg: Config, run_dir: Path) -> None:
    train_or_reuse(run_cfg, run_dir, ds)


def _lenet_part(cfg, out_dir, ds, device, runs, prune_table, extra) -> None:
    plan = [(o, s) for o in cfg.optimizers for s in cfg.seeds]
    cfgs = [lenet_run_config(cfg, o, s) for o, s in plan]
    _train_lenet_runs(cfg, cfgs, out_dir, ds)
    for (opt_name, seed), run_cfg in zip(plan, cfgs):
        run = run_record(out_dir / run_cfg.name, "lenet", opt_name, seed, cfg.chance_acc)
        run["model"] = run_cfg.model.name  # every run names its model (the report's overview row per model)
        runs.append(run)
        if run["stalled"]:
            _say(cfg, f"{run['run']} stalled at chance (test accuracy {run['final_test_acc']:.2f}%): not pruned")
            continue
        if opt_name not in SLBI_LIKE:
            continue
        target = load_target(out_dir / run_cfg.name / "last.pt", device=device, dataset=ds)
        _check_layers(target, sorted({n for s in cfg.prune_sets for n in s} | {cfg.path_layer}))
        before = accuracy(target.model, target.x, target.y)
        run["accuracy_unpruned"] = before
        run["selected"] = {k: v["fraction"] for k, v in selection(target.opt).items()}
        extra.setdefault("selection", {})[run["run"]] = selection(target.opt)
        _say(cfg, f"pruning {run['run']} (test accuracy {before:.2f}%)")
        prune_table += prune_rows(target, run, cfg.prune_sets, cfg.percents, cfg.prune_bias, before)
        if cfg.prune_percent not in cfg.percents:  # the headline needs it
            prune_table += prune_rows(target, run, cfg.prune_sets[:1], [cfg.prune_percent], cfg.prune_bias, before)
        first_of_kind = not any(k[0] == opt_name for k in extra.get("paths", {}))
        if first_of_kind:  # one seed per optimizer in the path and weights figures
            extra.setdefault("paths", {})[(opt_name, run["run"])] = {
                "path": solution_path(target, cfg.path_layer),
                "x": path_epochs(target, cfg.path_layer),
                "kept": kept_at(target, cfg.path_layer, cfg.prune_percent),
            }
            if opt_name == "slbi" or "weights" not in extra:
                extra["weights"] = {
                    "run": run["run"],
                    **weights_before_after(target, cfg.path_layer, cfg.prune_percent, cfg.prune_bias),
                }


def _check_layers(target: PruneTarget, layers: list[str]) -> None:
    tracked = tracked_layers(target.opt)
    unknown = [n for n in layers if n not in tracked]
    if unknown:
        raise UserError(
            f"dessilbi: unknown layer {', '.join(unknown)} (prune_sets/path_layer); "
            f"tracked layers: {', '.join(tracked)}"
        )


def _vgg_part(cfg, out_dir, ds, device, runs, prune_table, extra) -> None:
    run_cfg = vgg_run_config(cfg)
    _say(cfg, f"VGG run: {run_cfg.name} ({run_cfg.model.name})")
    train_or_reuse(run_cfg, out_dir / run_cfg.name, ds)
    run = run_record(out_dir / run_cfg.name, "vgg", "slbi_adam", cfg.vgg_seed, cfg.chance_acc)
    run["model"] = run_cfg.model.name
    runs.append(run)
    if run["stalled"]:
        _say(cfg, f"{run['run']} stalled at chance (test accuracy {run['final_test_acc']:.2f}%): not pruned")
        return
    target = load_target(out_dir / run_cfg.name / "last.pt", device=device, dataset=ds)
    tracked = tracked_layers(target.opt)
    params = dict(target.model.named_parameters())
    convs = [n for n in tracked if params[n].ndim >= 3]
    layer = cfg.vgg_sweep_layer or (convs[len(convs) // 2] if convs else tracked[len(tracked) // 2])
    _check_layers(target, [layer])
    before = accuracy(target.model, target.x, target.y)
    run["accuracy_unpruned"] = before
    run["selected"] = {k: v["fraction"] for k, v in selection(target.opt).items()}
    extra.setdefault("selection", {})[run["run"]] = selection(target.opt)
    _say(cfg, f"pruning {run['run']} (test accuracy {before:.2f}%): sweep of {layer}, then each layer in turn")
    sweep = prune_rows(target, run, [[layer]], cfg.vgg_percents, cfg.prune_bias, before)
    each = prune_rows(target, run, [[n] for n in tracked], [cfg.vgg_layer_percent], cfg.prune_bias, before)
    for r in sweep:
        r["experiment"] = "sweep"
    for r in each:
        r["experiment"] = "each_layer"
    prune_table += sweep + each
    extra["vgg"] = {
        "layer": layer,
        "run": run["run"],
        "model": run["model"],
        "path": solution_path(target, layer),
        "x": path_epochs(target, layer),
        "kept": kept_at(target, layer, cfg.vgg_layer_percent),
    }


# ---------------------------------------------------------------- tables


def optimizer_means(runs: list[dict]) -> list[dict]:
    """Mean and std of the final test accuracy per (part, optimizer) over the runs that did not stall."""
    out = []
    for part, opt in dict.fromkeys((r["part"], r["optimizer"]) for r in runs):
        mine = [r for r in runs if r["part"] == part and r["optimizer"] == opt]
        ok = [r["final_test_acc"] for r in mine if not r["stalled"]]
        out.append(
            {
                "part": part,
                "optimizer": opt,
                "runs": len(mine),
                "stalled": len(mine) - len(ok),
                "mean_test_acc": float(np.mean(ok)) if ok else None,
                "std_test_acc": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,  # sample std, as the sweeps
            }
        )
    return out


def headlines(cfg: DessiLBIStudyConfig, runs: list[dict], rows: list[dict]) -> list[dict]:
    """Per pruned LeNet run: accuracy before and after the first prune set at prune_percent."""
    out = []
    key = "+".join(cfg.prune_sets[0])
    for run in runs:
        if run["part"] != "lenet":
            continue
        hit = [
            r for r in rows if r["run"] == run["run"] and r["layer_set"] == key and r["percent"] == cfg.prune_percent
        ]
        h = {
            "run": run["run"],
            "optimizer": run["optimizer"],
            "seed": run["seed"],
            "stalled": run["stalled"],
            "final_test_acc": run["final_test_acc"],
            "layers": key,
            "percent": cfg.prune_percent,
        }
        if hit:
            h.update(
                {
                    "accuracy_pruned": hit[0]["accuracy_pruned"],
                    "cost_points": hit[0]["accuracy_before"] - hit[0]["accuracy_pruned"],
                    "removed": {r["layer"]: f"{r['removed']}/{r['total']}" for r in hit},
                }
            )
            within = [
                r["percent"]
                for r in rows
                if r["run"] == run["run"]
                and r["layer_set"] == key
                and r["accuracy_before"] - r["accuracy_pruned"] <= 1.0
            ]
            h["max_percent_within_1pt"] = max(within) if within else None
        out.append(h)
    return out


def prune_costs(headline: list[dict]) -> list[dict]:
    """The headline prune's cost over seeds, per optimizer: the spread between runs is large (on an
    H100, 15 seeds of the official recipe cost 0.57 to 7.0 points at conv3 80), so one run says little."""
    out = []
    for opt in dict.fromkeys(h["optimizer"] for h in headline):
        costs = [h["cost_points"] for h in headline if h["optimizer"] == opt and "cost_points" in h]
        if costs:
            out.append(
                {
                    "optimizer": opt,
                    "runs": len(costs),
                    "median_cost": float(np.median(costs)),
                    "mean_cost": float(np.mean(costs)),
                    "min_cost": min(costs),
                    "max_cost": max(costs),
                    "within_1pt": sum(c <= 1.0 for c in costs),
                }
            )
    return out


def _fmt(v) -> str:
    return fmt(v, none="n/a", true="STALLED", false="", number=acc2)  # accuracies 98.61; losses 0.0126


def _md_table(rows: list[dict], cols: list[str], names: list[str] | None = None) -> list[str]:
    return md_table(rows, cols, names, cell=_fmt)


RUN_COLS = [
    "part",
    "run",
    "optimizer",
    "seed",
    "epochs",
    "final_test_acc",
    "best_test_acc",
    "final_train_loss",
    "stalled",
    "accuracy_unpruned",
]
PRUNE_COLS = [
    "part",
    "run",
    "optimizer",
    "seed",
    "experiment",
    "layer_set",
    "percent",
    "layer",
    "unit",
    "removed",
    "total",
    "fraction",
    "accuracy_before",
    "accuracy_pruned",
    "accuracy_recovered",
]


def stall_note(chance_acc: float, num_classes: int) -> str:
    """What STALLED means: below the chance_acc threshold, which is not chance itself (100/num_classes %)."""
    chance = f"chance is 100/{num_classes} = {100 / num_classes:g}%"
    if chance_acc <= 0:
        return f"- STALLED: never flagged here (chance_acc 0: every run is pruned and averaged; {chance})."
    return (
        f"- STALLED: final test accuracy below chance_acc = {100 * chance_acc:g}% ({chance}); under the official "
        "recipe some seeds kill every ReLU in the first steps. Stalled runs are left out of the means and not pruned."
    )


def write_tables(
    out_dir: Path,
    cfg: DessiLBIStudyConfig,
    runs: list[dict],
    rows: list[dict],
    headline: list[dict],
    num_classes: int = 10,
) -> None:
    atomic_write_text(out_dir / "results.csv", csv_text(runs, RUN_COLS))
    atomic_write_text(out_dir / "pruning.csv", csv_text(rows, PRUNE_COLS))
    lines = [f"# DessiLBI study ({cfg.name})", "", "Accuracies are test accuracies in percent.", ""]
    lines += ["## Runs", ""] + _md_table(runs, RUN_COLS[:-1] + ["accuracy_unpruned"])
    lines += ["", "## Per optimizer (runs that did not stall)", ""]
    lines += _md_table(optimizer_means(runs), ["part", "optimizer", "runs", "stalled", "mean_test_acc", "std_test_acc"])
    if headline:
        lines += _headline_lines(cfg, headline)
    lenet_rows = [r for r in rows if r["part"] == "lenet"]
    if lenet_rows:
        lines += ["", "## LeNet: accuracy after pruning, and what was actually removed", ""]
        lines += _wide_prune_table(lenet_rows)
    vgg_rows = [r for r in rows if r["part"] == "vgg"]
    if vgg_rows:
        sweep = [r for r in vgg_rows if r.get("experiment") == "sweep"]
        each = [r for r in vgg_rows if r.get("experiment") == "each_layer"]
        cols = ["unit", "removed", "total", "removed_pct", "accuracy_pruned", "drop"]
        names = ["unit", "removed", "total", "removed (%)", "accuracy", "drop (points)"]
        lines += ["", f"## {vgg_model(cfg)} (SLBI-Adam): pruning-ratio sweep of {sweep[0]['layer']}", ""]
        lines += _md_table([_pct(r) for r in sweep], ["percent"] + cols, ["percent"] + names)
        lines += ["", f"## {vgg_model(cfg)} (SLBI-Adam): each layer pruned alone at {cfg.vgg_layer_percent:g}", ""]
        lines += _md_table([_pct(r) for r in each], ["layer"] + cols, ["layer"] + names)
    lines += [
        "",
        stall_note(cfg.chance_acc, num_classes),
        "- Pruning (official toolbox): score = filter norm (conv) or |w| (FC) minus the epoch Gamma first selected "
        "it (2000 if never); the layer loses what scores below the numpy percentile at `percent`. Scores tie (every "
        "never-selected FC weight scores about -2000), so `fraction` (what was actually removed) can exceed the "
        "nominal percent.",
        f"- Pruned from each run's final state (last.pt); biases {'zeroed too' if cfg.prune_bias else 'kept'}; "
        "recover() restores the weights (accuracy_recovered must equal accuracy_before).",
    ]
    if vgg_rows:
        lines.append(
            "- With BatchNorm after a pruned conv, the filter's channel becomes the constant BN output of "
            "a zero input (from the running statistics), not zero."
        )
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")


def _headline_lines(cfg: DessiLBIStudyConfig, headline: list[dict]) -> list[str]:
    """The LeNet prune at cfg.prune_percent: per run, then its cost over the seeds."""
    lines = ["", f"## LeNet: pruning {headline[0]['layers']} at {cfg.prune_percent:g}", ""]
    hl = [
        {**h, "removed": ", ".join(f"{k} {v}" for k, v in h.get("removed", {}).items()) or "not pruned"}
        for h in headline
    ]
    lines += _md_table(
        hl,
        [
            "run",
            "optimizer",
            "seed",
            "final_test_acc",
            "accuracy_pruned",
            "cost_points",
            "removed",
            "max_percent_within_1pt",
            "stalled",
        ],
        [
            "run",
            "optimizer",
            "seed",
            "test acc",
            "pruned acc",
            "cost (points)",
            "removed",
            "largest percent costing <= 1 point",
            "stalled",
        ],
    )
    costs = prune_costs(headline)
    if costs and max(c["runs"] for c in costs) > 1:
        lines += ["", "Cost of that prune over the seeds (points):", ""]
        lines += _md_table(
            costs,
            ["optimizer", "runs", "median_cost", "mean_cost", "min_cost", "max_cost", "within_1pt"],
            ["optimizer", "pruned runs", "median", "mean", "min", "max", "runs costing <= 1"],
        )
    return lines


def _pct(r: dict) -> dict:
    return {**r, "removed_pct": 100 * r["fraction"], "drop": r["accuracy_before"] - r["accuracy_pruned"]}


def _wide_prune_table(rows: list[dict]) -> list[str]:
    """One line per (run, layer set, percent) with the removed fraction of each layer."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        g = groups.setdefault(
            (r["run"], r["layer_set"], r["percent"]),
            {
                "run": r["run"],
                "layer_set": r["layer_set"],
                "percent": r["percent"],
                "accuracy_pruned": r["accuracy_pruned"],
                "drop": r["accuracy_before"] - r["accuracy_pruned"],
                "removed": [],
            },
        )
        g["removed"].append(f"{r['layer']} {r['removed']:,}/{r['total']:,} ({100 * r['fraction']:.1f}%)")
    wide = [{**g, "removed": "; ".join(g["removed"])} for g in groups.values()]
    return _md_table(
        wide,
        ["run", "layer_set", "percent", "removed", "accuracy_pruned", "drop"],
        ["run", "layers", "percent", "removed (actual)", "accuracy", "drop (points)"],
    )
