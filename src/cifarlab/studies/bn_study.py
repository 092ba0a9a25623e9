"""The batch-normalization study (SPEC 3): VGG_A vs VGG_A_BatchNorm at several learning rates.

Every run starts from the same seed (same init for a given model) and sees the same data order.
It records the training loss of every step, train/test accuracy per epoch, and every
`probe_every` steps, on the step's own batch and before its update, the Santurkar et al. probes
(loss variation, gradient predictiveness, effective beta-smoothness along -g_t; see
analysis/bn_probe.py) plus, when `proxies` is on, the trajectory proxies and the ICS measure.

Outputs in out_dir: arrays.npz, results.csv, results.md, summary.json and the figures
training_curves, loss_band, probes, proxies (PNG + PDF).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.bn_probe import grad_change_proxy, ics_measure, model_grads, probe_step, trainable_params
from ..analysis.plotting import save_arrays
from ..config import check_same_run, read_yaml, save_config, to_dict
from ..data import DeviceLoader, load_dataset, normalization, subset
from ..errors import UserError
from ..models import count_params, create_model
from ..run import atomic_write_json, atomic_write_text, check_folder, environment, make_folder, read_summary
from ..tables import csv_text, fmt, md_table
from ..train.device import autocast, pick_device, use_channels_last
from ..train.engine import evaluate
from ..train.pool import default_parallel, run_all
from .bn_figures import plot_all
from .settings import key_settings

CHANCE_MARGIN = 0.05  # a run whose final training loss is within this of ln(classes) stalled at chance
LOSS_TARGET = 0.5  # "steps to reach training loss 0.5" uses a trailing mean over SMOOTH steps
SMOOTH = 20


@dataclasses.dataclass
class BNStudyConfig:
    name: str = "bn-study"
    data: str = "cifar10"  # dataset name or path (the CLI's data source overrides it)
    cache_dir: str = ""
    n_items: int = 0  # train on the first n_items images (0 = all)
    n_test: int = 0  # evaluate on the first n_test test images (0 = all)
    epochs: int = 20
    batch_size: int = 128
    eval_batch_size: int = 1000
    # model names, or mappings {name: ..., label: ..., <create_model options>}
    models: list = dataclasses.field(default_factory=lambda: ["VGG_A", "VGG_A_BatchNorm"])
    lrs: list = dataclasses.field(default_factory=lambda: [1e-3, 2e-3, 1e-4, 5e-4])
    optimizer: str = "adam"  # adam | sgd (with `momentum`)
    momentum: float = 0.9
    seed: int = 0
    probe_every: int = 50  # steps (0 = no probes)
    eta_range: list = dataclasses.field(default_factory=lambda: [0.05, 0.4])  # x eta_scale
    n_etas: int = 8
    eta_scale: float = 0.0  # the training step scale; 0 = each run's lr
    probe_method: str = "auto"  # auto (vmap, loop if vmap fails) | vmap | loop
    proxies: bool = True  # the trajectory proxies and the ICS measure at each probe step
    normalize: str = "course"  # course (0.5/0.5) | dataset | none
    device: str = "auto"
    amp: str = "auto"  # training forward/backward: auto = bf16 on CUDA; probes always run in fp32
    channels_last: str = "auto"
    progress: bool = True


# ---------------------------------------------------------------- config checks


def model_specs(cfg: BNStudyConfig) -> list[dict]:
    """[{label, name, options}] from cfg.models; labels must be unique (they name the arrays)."""
    specs = []
    for m in cfg.models:
        if isinstance(m, str):
            specs.append({"label": m, "name": m, "options": {}})
        elif isinstance(m, dict) and isinstance(m.get("name"), str):
            opts = {k: v for k, v in m.items() if k not in ("name", "label")}
            default = m["name"] + ("(" + ",".join(f"{k}={v}" for k, v in opts.items()) + ")" if opts else "")
            specs.append({"label": str(m.get("label", default)), "name": m["name"], "options": opts})
        else:
            raise UserError(f"models: each entry must be a model name or a mapping with 'name', got {m!r}")
    labels = [s["label"] for s in specs]
    if not specs or len(set(labels)) != len(labels):
        raise UserError(f"models must be a non-empty list of distinct models (labels {labels})")
    return specs


def _number(v):
    # YAML 1.1 reads 1e-3 (no dot) as a string: accept it as the number it spells
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def check_config(cfg: BNStudyConfig) -> BNStudyConfig:
    """A checked copy of cfg (numbers written as strings, like 1e-3, become floats)."""
    cfg = dataclasses.replace(cfg, lrs=[_number(v) for v in cfg.lrs], eta_range=[_number(v) for v in cfg.eta_range])

    def bad(key: str, what: str) -> None:
        raise UserError(f"bn-study: {key} must be {what}, got {getattr(cfg, key)!r}")

    if not cfg.lrs or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in cfg.lrs):
        bad("lrs", "a non-empty list of positive numbers")
    if cfg.optimizer not in ("adam", "sgd"):
        bad("optimizer", "adam or sgd")
    for key in ("epochs", "batch_size", "eval_batch_size", "n_etas"):
        if getattr(cfg, key) < 1:
            bad(key, "a positive integer")
    for key in ("n_items", "n_test", "probe_every"):
        if getattr(cfg, key) < 0:
            bad(key, "0 or a positive integer")
    lo_hi = cfg.eta_range
    if len(lo_hi) != 2 or any(not isinstance(v, (int, float)) or v <= 0 for v in lo_hi) or lo_hi[0] > lo_hi[1]:
        bad("eta_range", "[low, high] with 0 < low <= high")
    if cfg.eta_scale < 0:
        bad("eta_scale", ">= 0 (0 = each run's lr)")
    if cfg.probe_method not in ("auto", "vmap", "loop"):
        bad("probe_method", "auto, vmap or loop")
    if cfg.normalize not in ("course", "dataset", "none"):
        bad("normalize", "course, dataset or none")
    model_specs(cfg)
    return cfg


def eta_grid(cfg: BNStudyConfig, lr: float) -> np.ndarray:
    return np.linspace(cfg.eta_range[0], cfg.eta_range[1], cfg.n_etas) * (cfg.eta_scale or lr)


# ---------------------------------------------------------------- one run


def _optimizer(model: torch.nn.Module, cfg: BNStudyConfig, lr: float, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, fused=device.type == "cuda")
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clone(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: v.detach().clone() for n, v in d.items()}


def train_run(spec: dict, lr: float, cfg: BNStudyConfig, data: dict, device: torch.device, tag: str) -> dict:
    """Train one model at one lr; returns numpy arrays of its trajectory and probes."""
    channels_last = use_channels_last(device, cfg.channels_last)
    amp_ctx = autocast(device, cfg.amp)
    torch.manual_seed(cfg.seed)  # the same init for every lr
    model = create_model(
        spec["name"], num_classes=data["num_classes"], in_channels=data["in_channels"], **spec["options"]
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, cfg, lr, device)
    kw = dict(device=device, mean=data["mean"], std=data["std"], channels_last=channels_last, seed=cfg.seed)
    loader = DeviceLoader(data["train_x"], data["train_y"], cfg.batch_size, shuffle=True, drop_last=False, **kw)
    test_loader = DeviceLoader(
        data["test_x"], data["test_y"], cfg.eval_batch_size, shuffle=False, drop_last=False, **kw
    )
    spe, every = len(loader), cfg.probe_every
    step_loss = torch.full((cfg.epochs * spe,), float("nan"), device=device)
    rec = {"etas": eta_grid(cfg, lr), "probes": [], "proxies": [], "ics": [], "prev": None, "seconds": 0.0}
    train_acc, test_acc, test_loss = [], [], []
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        loader.set_epoch(epoch)
        correct = torch.zeros((), device=device)
        t_epoch = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            t = epoch * spe + i
            probing = every > 0 and t % every == 0
            w_t = _probe_before_step(model, x, y, cfg, rec) if probing else None
            with amp_ctx:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.proxies and probing:
                _proxy_after_backward(model, w_t, rec)
            if cfg.proxies and every and (t + 1) % every == 0:  # keep g_t, w_t for the next step's proxy
                rec["prev"] = (model_grads(model), _clone(trainable_params(model)))
            opt.step()
            if cfg.proxies and probing:
                _ics_after_step(model, x, y, w_t, cfg, rec)
            step_loss[t] = loss.detach().float()  # stays on the device: no sync per step
            correct += (logits.detach().argmax(1) == y).sum()
        losses = step_loss[epoch * spe : (epoch + 1) * spe].cpu()  # one sync per epoch
        train_acc.append(correct.item() / len(data["train_y"]))
        ev = evaluate(model, test_loader, F.cross_entropy, "none", amp_ctx)
        test_acc.append(ev["acc"])
        test_loss.append(ev["loss"])
        if cfg.progress:
            print(
                f"  [{tag}] epoch {epoch + 1}/{cfg.epochs}  train loss {float(losses.mean()):.4f} "
                f"acc {train_acc[-1]:.4f}  test acc {test_acc[-1]:.4f}  "
                f"{time.perf_counter() - t_epoch:.1f}s",
                flush=True,
            )
    out = {
        "step_loss": step_loss.cpu().numpy(),
        "train_acc": np.array(train_acc),
        "test_acc": np.array(test_acc),
        "test_loss": np.array(test_loss),
        "etas": rec["etas"],
        "seconds": time.perf_counter() - t_start,
        "probe_seconds": rec["seconds"],
        "params": count_params(model),
    }
    return {**out, **_pack_probes(rec)}


def _probe_before_step(model, x, y, cfg: BNStudyConfig, rec: dict):
    """The Santurkar probes on the step's batch before its update; returns w_t for the proxies/ICS."""
    _sync(x.device)  # so the probe's clock does not include queued training kernels
    t0 = time.perf_counter()
    rec["probes"].append(probe_step(model, F.cross_entropy, x, y, list(rec["etas"]), method=cfg.probe_method))
    w_t = _clone(trainable_params(model)) if cfg.proxies else None
    rec["seconds"] += time.perf_counter() - t0
    return w_t


def _proxy_after_backward(model, w_t, rec: dict) -> None:
    """||g_t - g_{t-1}|| and its ratio to ||w_t - w_{t-1}|| from the training gradients (proxies)."""
    t0 = time.perf_counter()
    if rec["prev"] is None:  # step 0: no previous step
        rec["proxies"].append([math.nan, math.nan])
    else:
        g_prev, w_prev = rec["prev"]
        p = grad_change_proxy(g_prev, model_grads(model), w_prev, w_t)
        rec["proxies"].append([float(p["grad_change"]), float(p["grad_change_ratio"])])
    rec["prev"] = None
    rec["seconds"] += time.perf_counter() - t0


def _ics_after_step(model, x, y, w_t, cfg: BNStudyConfig, rec: dict) -> None:
    """ICS between w_t and the weights the optimizer step just produced, on the same batch."""
    t0 = time.perf_counter()
    rec["ics"].append(ics_measure(model, F.cross_entropy, x, y, w_t, trainable_params(model), method=cfg.probe_method))
    rec["seconds"] += time.perf_counter() - t0


def _pack_probes(rec: dict) -> dict:
    probes, ics = rec["probes"], rec["ics"]
    out: dict = {"probe_method": probes[0]["method"] if probes else None}
    if probes:
        out.update(
            {
                "probe_loss": np.stack([p["loss"] for p in probes]),
                "probe_grad_diff": np.stack([p["grad_diff"] for p in probes]),
                "probe_beta": np.array([p["beta_smooth"] for p in probes]),
                "probe_loss_t": np.array([p["loss_t"] for p in probes]),
                "probe_grad_norm": np.array([p["grad_norm"] for p in probes]),
            }
        )
    if ics:
        out.update(
            {
                "proxy": np.array(rec["proxies"]),
                "ics_layers": ics[0]["layers"],
                "ics_norm": np.stack([r["norm"] for r in ics]),
                "ics_cos": np.stack([r["cos"] for r in ics]),
            }
        )
    return out


# ---------------------------------------------------------------- the study


def prepare_data(cfg: BNStudyConfig, data_source: str | None, dataset, device: torch.device) -> dict:
    ds = dataset if dataset is not None else load_dataset(data_source or cfg.data, cfg.cache_dir or None)
    ds = subset(ds, cfg.n_items)
    n_test = cfg.n_test or len(ds.test_y)
    mean, std = normalization(ds, cfg.normalize)
    # the whole split goes to the device once and is shared by every run
    return {
        "train_x": ds.train_x.to(device),
        "train_y": ds.train_y.to(device),
        "test_x": ds.test_x[:n_test].to(device),
        "test_y": ds.test_y[:n_test].to(device),
        "mean": mean,
        "std": std,
        "num_classes": len(ds.classes),
        "in_channels": int(ds.train_x.shape[-1]),
        "name": ds.name,
    }


# Settings that may differ between two runs of one study (they do not change what it measures).
NEUTRAL_KEYS = ("name", "progress", "device", "cache_dir")


def check_out_folder(cfg: BNStudyConfig, out_dir: Path) -> None:
    """A rerun may replace a BN study of the same settings only: refuse a sweep's, a run's or another
    study's folder, and a BN study of other settings (the check sweeps and the runs of a study use)."""
    summary = read_summary(out_dir / "summary.json") or {}
    study = summary.get("study")
    if (out_dir / "sweep.yaml").is_file() or any(out_dir.glob("*/run.json")):
        what = "a sweep"
    elif study is not None and study != "bn":
        what = f"the {study} study"
    elif study is None and (summary or any((out_dir / f).is_file() for f in ("metrics.jsonl", "last.pt", "best.pt"))):
        what = "a run"
    else:
        what = None
    if what:
        raise UserError(f"{out_dir} holds {what}, not a BN study; use another --out or delete that folder")
    old = read_yaml(out_dir / "config.yaml") if (out_dir / "config.yaml").is_file() else {}
    if not isinstance(old, dict):
        old = {}
    check_same_run(out_dir, dataclasses.replace(cfg, **{k: old[k] for k in NEUTRAL_KEYS if k in old}))


def run_bn_study(
    cfg: BNStudyConfig, out_dir: Path, data_source: str | None = None, dataset=None, parallel: int | None = None
) -> dict:
    """Train every model at every lr, probe, and write arrays, tables, figures and summary.json.
    parallel: runs at once, each in its own process (None: as the machine allows, 1 on a CPU)."""
    cfg = check_config(cfg)
    check_out_folder(cfg, check_folder(out_dir))
    device = pick_device(cfg.device)
    specs = model_specs(cfg)
    # the data first: a bad source fails here, before any folder is made (none is left behind empty)
    data = prepare_data(cfg, data_source, dataset, device)
    out_dir = make_folder(out_dir)
    save_config(cfg, out_dir / "config.yaml")  # what a rerun into this folder is checked against
    t0 = time.perf_counter()
    runs = train_runs(cfg, specs, data, parallel or default_parallel(cfg.device))
    seconds = time.perf_counter() - t0

    labels = [s["label"] for s in specs]
    arrays = stack_runs(runs, labels, cfg)
    rows = result_rows(arrays, runs, data["num_classes"])
    save_arrays(out_dir / "arrays.npz", **arrays)
    write_tables(out_dir, rows, arrays, cfg)
    figures = plot_all(out_dir, arrays, rows)
    summary = {
        "study": "bn",
        "config": to_dict(cfg),
        "settings": key_settings(cfg),
        "dataset": data["name"],
        "n_train": int(len(data["train_y"])),
        "n_test": int(len(data["test_y"])),
        "steps_per_run": int(arrays["step_loss"].shape[-1]),
        "seconds": seconds,
        "runs": rows,
        "figures": figures,
        "probe_method": sorted({str(r["probe_method"]) for r in runs.values()}),
        "env": environment(device),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def train_runs(cfg: BNStudyConfig, specs: list[dict], data: dict, parallel: int) -> dict[tuple[int, int], dict]:
    """Every (model, lr) run, keyed by their indices; `parallel` at once in processes of their own."""
    keys = [(mi, li) for mi in range(len(specs)) for li in range(len(cfg.lrs))]
    jobs = [(specs[mi], float(cfg.lrs[li]), cfg, f"{specs[mi]['label']} lr={cfg.lrs[li]:g}") for mi, li in keys]
    if parallel > 1:  # each process puts the data on its own device
        data = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    runs = {}
    for done, (i, run) in enumerate(run_all(_train_job, jobs, parallel, data), 1):
        if cfg.progress:
            print(f"run {done}/{len(jobs)} done: {jobs[i][3]}", flush=True)
        runs[keys[i]] = run
    return runs


def _train_job(data: dict, spec: dict, lr: float, cfg: BNStudyConfig, tag: str) -> dict:
    device = pick_device(cfg.device)
    data = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    return train_run(spec, lr, cfg, data, device, tag)


def stack_runs(runs: dict, labels: list[str], cfg: BNStudyConfig) -> dict[str, np.ndarray]:
    """Arrays indexed [model, lr, ...]; ICS layers padded with NaN where models differ in depth."""
    M, L = len(labels), len(cfg.lrs)

    def stack(key):
        return np.stack([np.stack([runs[m, l][key] for l in range(L)]) for m in range(M)])

    out = {
        "models": np.array(labels),
        "lrs": np.array(cfg.lrs, dtype=float),
        "etas": stack("etas")[0],
        "step_loss": stack("step_loss"),
        "train_acc": stack("train_acc"),
        "test_acc": stack("test_acc"),
        "test_loss": stack("test_loss"),
    }
    S = out["step_loss"].shape[-1]
    out["probe_steps"] = np.arange(0, S, cfg.probe_every) if cfg.probe_every else np.zeros(0, dtype=int)
    if "probe_loss" in runs[0, 0]:
        for key in ("probe_loss", "probe_grad_diff", "probe_beta", "probe_loss_t", "probe_grad_norm"):
            out[key] = stack(key)
    if "proxy" in runs[0, 0]:
        proxy = stack("proxy")
        out["proxy_grad_change"], out["proxy_grad_change_ratio"] = proxy[..., 0], proxy[..., 1]
        K = max(len(runs[m, 0]["ics_layers"]) for m in range(M))
        P = len(out["probe_steps"])
        for key in ("ics_norm", "ics_cos"):
            a = np.full((M, L, P, K), np.nan)
            for m in range(M):
                for l in range(L):
                    v = runs[m, l][key]
                    a[m, l, :, : v.shape[1]] = v
            out[key] = a
        out["ics_layers"] = np.array(
            [runs[m, 0]["ics_layers"] + [""] * (K - len(runs[m, 0]["ics_layers"])) for m in range(M)]
        )
    return out


# ---------------------------------------------------------------- tables


def steps_to_loss(losses: np.ndarray, target: float = LOSS_TARGET, window: int = SMOOTH) -> int | None:
    """First step at which the trailing mean of the last `window` step losses is below target."""
    w = min(window, len(losses))
    c = np.cumsum(np.insert(losses, 0, 0.0))
    trailing = (c[w:] - c[:-w]) / w  # trailing[k] is the mean of steps k .. k+w-1
    hit = np.nonzero(trailing < target)[0]
    return int(hit[0] + w - 1) if len(hit) else None


def result_rows(a: dict, runs: dict, num_classes: int) -> list[dict]:
    rows = []
    chance = math.log(num_classes)
    for m, label in enumerate(a["models"]):
        for l, lr in enumerate(a["lrs"]):
            loss = a["step_loss"][m, l]
            tail = loss[-max(1, min(100, len(loss) // 5)) :]
            final = float(np.mean(tail))
            diverged = not np.all(np.isfinite(loss))
            row = {
                "model": str(label),
                "lr": float(lr),
                "final_test_acc": float(a["test_acc"][m, l, -1]),
                "best_test_acc": float(np.max(a["test_acc"][m, l])),
                "final_train_loss": final,
                "steps_to_loss_0.5": steps_to_loss(loss),
                "stalled": bool(diverged or final > chance - CHANCE_MARGIN),
                "diverged": bool(diverged),
                "seconds": float(runs[m, l]["seconds"]),
                "probe_seconds": float(runs[m, l]["probe_seconds"]),
                "params": int(runs[m, l]["params"]),
            }
            if "probe_loss" in a:
                pl, pg = a["probe_loss"][m, l], a["probe_grad_diff"][m, l]
                row["loss_variation_width"] = float(np.mean(pl.max(1) - pl.min(1)))
                row["gradpred_width"] = float(np.mean(pg.max(1) - pg.min(1)))
                row["beta_smooth_mean"] = float(np.mean(a["probe_beta"][m, l]))
            rows.append(row)
    return rows


def model_table(a: dict, rows: list[dict]) -> list[dict]:
    """Per model: course band width (all lrs, as the course draws it) and probe means over non-stalled runs."""
    out = []
    for m, label in enumerate(a["models"]):
        mine = [r for r in rows if r["model"] == label]
        ok = [r for r in mine if not r["stalled"]]
        band = a["step_loss"][m]
        rec = {
            "model": str(label),
            "course_band_width": float(np.nanmean(band.max(0) - band.min(0))),
            "runs": len(mine),
            "stalled": len(mine) - len(ok),
        }
        for key in ("loss_variation_width", "gradpred_width", "beta_smooth_mean"):
            if mine and key in mine[0]:
                rec[key] = float(np.mean([r[key] for r in ok])) if ok else None
        out.append(rec)
    return out


def _fmt(v) -> str:
    return fmt(v, none="n/a", true="yes", false="")


def write_tables(out_dir: Path, rows: list[dict], a: dict, cfg: BNStudyConfig) -> None:
    cols = list(rows[0])
    atomic_write_text(out_dir / "results.csv", csv_text(rows, cols))

    per_model = model_table(a, rows)
    show = [c for c in cols if c not in ("seconds", "probe_seconds", "params", "diverged")]
    lines = [
        f"# Batch-normalization study ({cfg.optimizer}, {cfg.epochs} epochs, batch {cfg.batch_size})",
        "",
        "## Runs",
        "",
    ] + md_table(rows, show, cell=_fmt)
    lines += ["", "## Per model", ""] + md_table(per_model, list(per_model[0]), cell=_fmt)
    lines += [
        "",
        f"- steps_to_loss_0.5: first step where the mean training loss of the last {SMOOTH} steps is below "
        f"{LOSS_TARGET} (n/a: never).",
        f"- stalled: the final training loss (mean of the last steps) is within {CHANCE_MARGIN} of ln(classes) "
        "(chance) or not finite; stalled runs are flagged here and left out of the per-model probe means.",
        "- course_band_width: mean over steps of (max - min over all lrs) of the per-step training loss.",
        f"- probes every {cfg.probe_every} steps on the step's batch before its update, eta = "
        f"linspace({cfg.eta_range[0]}, {cfg.eta_range[1]}, {cfg.n_etas}) x "
        f"{cfg.eta_scale if cfg.eta_scale else 'lr'}; widths are means over probes of max - min over eta; "
        "beta_smooth_mean is the mean over probes of the effective beta-smoothness.",
    ]
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")
