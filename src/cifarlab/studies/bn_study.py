"""The batch-normalization study (SPEC 3): VGG_A vs VGG_A_BatchNorm at several learning rates.

Every (model, lr) is one engine run (train/engine.py) in out_dir/runs/<label>_lr<lr>/, with its run
folder, resume from last.pt, metrics.jsonl and TensorBoard like any other run. Every run starts from the
same seed (same init for a given model) and sees the same data order. The study's measurements are
step hooks of the run (BNProbeHooks): the training loss of every step, train/test accuracy per epoch,
and every `probe_every` steps, on the step's own batch and before its update, the Santurkar et al.
probes (loss variation, gradient predictiveness, effective beta-smoothness along -g_t; see
analysis/bn_probe.py) plus, when `proxies` is on, the trajectory proxies and the ICS measure. The hook
writes them into the run folder (bn_probes.npz), from where a rerun of the study reads finished runs.

Outputs in out_dir: arrays.npz, results.csv, results.md, summary.json and the figures
training_curves, loss_band, probes, proxies (PNG + PDF); the runs in out_dir/runs/.
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
from ..analysis.plotting import safe_name, save_arrays
from ..config import Config, check_same_run, from_dict, read_yaml, save_config, to_dict
from ..data import Dataset, load_dataset, prepare_splits
from ..errors import UserError
from ..run import atomic_write_json, atomic_write_text, check_folder, environment, make_folder, read_summary
from ..tables import csv_text, fmt, md_table
from ..train.device import pick_device
from ..train.engine import train
from ..train.hooks import StepHook
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


# ---------------------------------------------------------------- one run: an engine run with probe hooks

PROBE_FILE = "bn_probes.npz"  # what BNProbeHooks recorded, in the run's folder (read back on a rerun)
MODEL_FIELDS = ("activation", "width", "dropout", "init", "init_std")  # ModelConfig's own; the rest are args
PROBE_KEYS = ("probe_loss", "probe_grad_diff", "probe_beta", "probe_loss_t", "probe_grad_norm")
PROXY_KEYS = ("proxy", "ics_norm", "ics_cos")


def run_config(cfg: BNStudyConfig, spec: dict, lr: float, source: str) -> Config:
    """The engine config of one (model, lr) run: the course loader (no augmentation, the study's
    normalization), the study's optimizer at lr, no schedule, cross-entropy, evaluation every epoch.
    The engine seeds the init (torch.manual_seed(seed) right before the model is built) and the data
    order (DeviceLoader seeded per epoch) exactly as the study's own loop did, so the numbers are its."""
    opts = dict(spec["options"])
    named = {k: opts.pop(k) for k in MODEL_FIELDS if k in opts}
    return from_dict(
        Config,
        {
            "name": f"{cfg.name}-{spec['label']}-lr{lr:g}",
            "seed": cfg.seed,
            "data": {
                "source": source, "cache_dir": cfg.cache_dir, "n_items": cfg.n_items, "n_test": cfg.n_test,
                "normalize": cfg.normalize, "batch_size": cfg.batch_size, "eval_batch_size": cfg.eval_batch_size,
                "device": cfg.device,
            },
            "model": {"name": spec["name"], **named, "args": opts},
            # the study's sgd is SGD with momentum (cfg.momentum; 0 makes it plain SGD)
            "optim": {"name": "adam" if cfg.optimizer == "adam" else "momentum", "lr": float(lr),
                      "momentum": cfg.momentum},
            # the probes run on the host at their steps: the step stays eager (graph off says so quietly);
            # the hook prints the study's epoch line, so the engine's bar and line are off
            "train": {"epochs": cfg.epochs, "loss": "ce", "amp": cfg.amp, "channels_last": cfg.channels_last,
                      "graph": "off", "progress": False, "log_epochs": False},
        },
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clone(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: v.detach().clone() for n, v in d.items()}


class BNProbeHooks(StepHook):
    """The study's measurements as step hooks of an engine run. Every `probe_every` steps, on the step's
    own batch: before its update the Santurkar et al. probes (analysis/bn_probe.py, fp32, the BN running
    statistics untouched); with `proxies`, after the backward the trajectory proxies against the last
    probe step's predecessor, and after the update the ICS measure. Every step's loss stays on the device
    until the epoch ends (one sync per epoch). At each epoch's end the record so far goes to
    PROBE_FILE in the run folder, and into last.pt (state_dict) for a resume."""

    why_not_graph = "the BN study's probes run on the host at their steps"

    def __init__(self, cfg: BNStudyConfig, lr: float, tag: str):
        self.cfg, self.tag, self.every = cfg, tag, cfg.probe_every
        self.etas = eta_grid(cfg, lr)
        self.t, self.w_t, self.prev = 0, None, None  # this step; w_t; (g, w) of the step before a probe
        self.k0 = 0  # probes before this epoch
        self.losses: list[torch.Tensor] = []  # this epoch's step losses, on the device
        self.rec: dict = {k: [] for k in ("step_loss", "train_acc", "test_acc", "test_loss", *PROBE_KEYS, *PROXY_KEYS)}
        self.rec.update(probe_method="", ics_layers=[], seconds=0.0, probe_seconds=0.0, n_steps=0)

    def _probing(self) -> bool:
        return self.every > 0 and self.t % self.every == 0

    def before_step(self, trainer, x, y) -> None:
        self.t, self.w_t = trainer.step, None
        if not self._probing():
            return
        _sync(x.device)  # so the probe's clock does not include queued training kernels
        t0 = time.perf_counter()
        p = probe_step(trainer.model, F.cross_entropy, x, y, list(self.etas), method=self.cfg.probe_method)
        for key, name in zip(PROBE_KEYS, ("loss", "grad_diff", "beta_smooth", "loss_t", "grad_norm")):
            self.rec[key].append(np.asarray(p[name]).tolist())
        self.rec["probe_method"] = p["method"]
        if self.cfg.proxies:
            self.w_t = _clone(trainable_params(trainer.model))
        self.rec["probe_seconds"] += time.perf_counter() - t0

    def after_backward(self, trainer) -> None:
        """||g_t - g_{t-1}|| and its ratio to ||w_t - w_{t-1}|| from the training gradients (proxies)."""
        if not self.cfg.proxies:
            return
        t0 = time.perf_counter()
        model = trainer.model
        if self._probing():
            if self.prev is None:  # step 0: no previous step
                self.rec["proxy"].append([math.nan, math.nan])
            else:
                g_prev, w_prev = self.prev
                p = grad_change_proxy(g_prev, model_grads(model), w_prev, self.w_t)
                self.rec["proxy"].append([float(p["grad_change"]), float(p["grad_change_ratio"])])
            self.prev = None
        if self.every and (self.t + 1) % self.every == 0:  # keep g_t, w_t for the next step's proxy
            self.prev = (model_grads(model), _clone(trainable_params(model)))
        self.rec["probe_seconds"] += time.perf_counter() - t0

    def after_step(self, trainer, x, y, loss) -> None:
        self.losses.append(loss.float())
        if self.w_t is None:  # no probe at this step, or no proxies
            return
        t0 = time.perf_counter()  # ICS between w_t and the weights the step just made, on the same batch
        r = ics_measure(trainer.model, F.cross_entropy, x, y, self.w_t, trainable_params(trainer.model),
                        method=self.cfg.probe_method)  # fmt: skip
        self.rec["ics_norm"].append(r["norm"].tolist())
        self.rec["ics_cos"].append(r["cos"].tolist())
        self.rec["ics_layers"], self.w_t = list(r["layers"]), None
        self.rec["probe_seconds"] += time.perf_counter() - t0

    def end_epoch(self, trainer, record: dict) -> None:
        rec, split = self.rec, trainer.eval_split
        losses = torch.stack(self.losses).cpu() if self.losses else torch.zeros(0)  # one sync per epoch
        self.losses = []
        rec["step_loss"] += losses.tolist()
        rec["train_acc"].append(record["train_acc"])
        rec["test_acc"].append(record[f"{split}_acc"])
        rec["test_loss"].append(record[f"{split}_loss"])
        seconds = record["seconds"] + record.get("eval_seconds", 0.0)
        rec["seconds"] += seconds
        rec["n_steps"] = self.cfg.epochs * len(trainer.loader)
        self._log_probes(record)
        if self.cfg.progress:
            print(
                f"  [{self.tag}] epoch {record['epoch']}/{self.cfg.epochs}  train loss {float(losses.mean()):.4f} "
                f"acc {rec['train_acc'][-1]:.4f}  test acc {rec['test_acc'][-1]:.4f}  {seconds:.1f}s",
                flush=True,
            )
        if trainer.main and trainer.run_dir is not None:
            save_arrays(trainer.run_dir / PROBE_FILE, **self.arrays())

    def _log_probes(self, record: dict) -> None:
        """The epoch's probe means into its metrics line (metrics.jsonl, TensorBoard)."""
        beta, loss = self.rec["probe_beta"][self.k0 :], self.rec["probe_loss"][self.k0 :]
        self.k0 = len(self.rec["probe_beta"])
        if beta:
            record["probe_beta_smooth"] = float(np.mean(beta))
            record["probe_loss_range"] = float(np.mean([max(v) - min(v) for v in loss]))

    def state_dict(self) -> dict:
        return {"rec": self.rec, "prev": self.prev}  # lists, numbers, strings and tensors: weights_only

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.rec, self.prev = state["rec"], state["prev"]
            self.k0 = len(self.rec["probe_beta"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The run's record as arrays (what PROBE_FILE holds)."""
        rec = self.rec
        out = {
            "step_loss": np.array(rec["step_loss"], dtype=np.float32),
            "etas": self.etas,
            **{k: np.array(rec[k], dtype=float) for k in ("train_acc", "test_acc", "test_loss")},
            **{k: np.array(rec[k], dtype=np.float64) for k in (*PROBE_KEYS, *PROXY_KEYS) if rec[k]},
            "ics_layers": np.array(rec["ics_layers"], dtype=str),
        }
        for k in ("probe_method", "seconds", "probe_seconds", "n_steps"):
            out[k] = np.array(rec[k])
        return out


def read_run(run_dir: Path, summary: dict, cfg: BNStudyConfig) -> dict:
    """One run's arrays, as the study stacks them, from what its hook wrote into the run folder. A run
    the engine stopped early (its loss was not finite) is padded with NaN to the full length."""
    with np.load(run_dir / PROBE_FILE, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    n_steps = int(a["n_steps"])
    n_probes = len(range(0, n_steps, cfg.probe_every)) if cfg.probe_every else 0
    run = {
        "step_loss": _pad(a["step_loss"], n_steps),
        "etas": a["etas"],
        **{k: _pad(a[k], cfg.epochs) for k in ("train_acc", "test_acc", "test_loss")},
        **{k: _pad(a[k], n_probes) for k in (*PROBE_KEYS, *PROXY_KEYS) if k in a},
        "seconds": float(a["seconds"]),
        "probe_seconds": float(a["probe_seconds"]),
        "params": summary["params"],
        "probe_method": str(a["probe_method"]) or None,
    }
    if "ics_norm" in run:
        run["ics_layers"] = a["ics_layers"].tolist()
    return run


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    if len(a) >= n:
        return a
    return np.concatenate([a, np.full((n - len(a), *a.shape[1:]), np.nan, dtype=a.dtype)])


def train_run(spec: dict, lr: float, cfg: BNStudyConfig, dataset: Dataset, run_dir: Path, tag: str) -> dict:
    """Train one model at one lr through the engine (a finished run is reused, an interrupted one
    resumes from its last.pt); returns numpy arrays of its trajectory and probes."""
    hook = BNProbeHooks(cfg, lr, tag)
    summary = train(run_config(cfg, spec, lr, cfg.data), run_dir, dataset=dataset, hooks=[hook])
    return read_run(run_dir, summary, cfg)


# ---------------------------------------------------------------- the study


def prepare_data(cfg: BNStudyConfig, data_source: str | None, dataset) -> Dataset:
    """The study's data, split as every run will (prepare_splits is idempotent on its own result)."""
    ds = dataset if dataset is not None else load_dataset(data_source or cfg.data, cfg.cache_dir or None)
    return prepare_splits(ds, cfg.n_items, 0, cfg.seed, n_test=cfg.n_test)


def run_folders(cfg: BNStudyConfig, specs: list[dict], out_dir: Path) -> dict[tuple[int, int], Path]:
    """out_dir/runs/<label>_lr<lr> per (model, lr); the model's index goes first where two labels read
    the same as file names."""
    names = {(m, l): f"{safe_name(s['label'])}_lr{lr:g}" for m, s in enumerate(specs) for l, lr in enumerate(cfg.lrs)}
    if len(set(names.values())) < len(names):
        names = {(m, l): f"{m}-{n}" for (m, l), n in names.items()}
    return {k: out_dir / "runs" / n for k, n in names.items()}


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
    data = prepare_data(cfg, data_source, dataset)
    out_dir = make_folder(out_dir)
    save_config(cfg, out_dir / "config.yaml")  # what a rerun into this folder is checked against
    t0 = time.perf_counter()
    runs = train_runs(cfg, specs, data, run_folders(cfg, specs, out_dir), parallel or default_parallel(cfg.device))
    seconds = time.perf_counter() - t0

    labels = [s["label"] for s in specs]
    arrays = stack_runs(runs, labels, cfg)
    rows = result_rows(arrays, runs, data.num_classes)
    save_arrays(out_dir / "arrays.npz", **arrays)
    write_tables(out_dir, rows, arrays, cfg)
    figures = plot_all(out_dir, arrays, rows)
    summary = {
        "study": "bn",
        "config": to_dict(cfg),
        "settings": key_settings(cfg),
        "dataset": data.name,
        "n_train": int(len(data.train_y)),
        "n_test": int(len(data.test_y)),
        "steps_per_run": int(arrays["step_loss"].shape[-1]),
        "seconds": seconds,
        "runs": rows,
        "figures": figures,
        "probe_method": sorted({str(r["probe_method"]) for r in runs.values()}),
        "env": environment(device),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def train_runs(
    cfg: BNStudyConfig, specs: list[dict], data: Dataset, folders: dict, parallel: int
) -> dict[tuple[int, int], dict]:
    """Every (model, lr) run into its folder, keyed by their indices; `parallel` at once in processes of
    their own (each puts the data, on the CPU here, on its own device)."""
    keys = [(mi, li) for mi in range(len(specs)) for li in range(len(cfg.lrs))]
    jobs = [
        (specs[mi], float(cfg.lrs[li]), cfg, folders[mi, li], f"{specs[mi]['label']} lr={cfg.lrs[li]:g}")
        for mi, li in keys
    ]
    runs = {}
    for done, (i, run) in enumerate(run_all(_train_job, jobs, parallel, data), 1):
        if cfg.progress:
            print(f"run {done}/{len(jobs)} done: {jobs[i][-1]}", flush=True)
        runs[keys[i]] = run
    return runs


def _train_job(data: Dataset, spec: dict, lr: float, cfg: BNStudyConfig, run_dir: Path, tag: str) -> dict:
    return train_run(spec, lr, cfg, data, run_dir, tag)


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
