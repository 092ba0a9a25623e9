"""The training loop: one function, `train(cfg)`, that every preset, sweep and study goes through.

`build_trainer` puts a run's parts in one `Trainer` (model, optimizer, schedule, EMA, loss, loaders);
`train_step` is one optimizer step on device tensors that never waits for the host, `train_epoch`
one pass, `state_dict`/`load_state_dict` what last.pt and best.pt hold. Data sits on the device as
uint8 (data.DeviceLoader); the loop syncs only for the progress bar every 25 steps and the epoch's
metrics. Each epoch appends to metrics.jsonl and TensorBoard and writes last.pt (best.pt when the
evaluation accuracy improves), so a killed run resumes from its last finished epoch with the same
data order (the loader is seeded per epoch).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, check, check_same_run, save_config, to_dict
from ..data import Augment, Dataset, DeviceLoader, dataset_from_config, normalization
from ..errors import UserError
from ..models import count_params, create_model
from ..run import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    environment,
    holds_run,
    lock_folder,
    make_folder,
    read_jsonl,
    read_summary,
)
from . import distributed, fast
from . import graph as graphs
from .checkpoint import load_state, read_checkpoint, save_checkpoint
from .device import autocast, pick_device, seed_everything, uncached, use_channels_last
from .ema import make_ema, update_without_sync
from .hooks import check_hooks, why_not_graph
from .losses import TrainingLoss, make_loss
from .optim import build_optimizer
from .schedules import build_scheduler
from .tensor_lr import lrs_from
from .tta import TTA_MODES, tta_logits

# ---------------------------------------------------------------- the trainer


@dataclass(kw_only=True)
class Trainer:
    """Everything one run steps, built by build_trainer and driven by train()."""

    cfg: Config
    data: Dataset  # split as the config asks (prepare_splits)
    device: torch.device
    dist: distributed.Dist | None
    model: nn.Module  # the weights: checkpoints and evaluation read these
    step_model: nn.Module  # what a step calls: the model, DDP-wrapped and/or compiled
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: nn.Module | None
    scaler: torch.amp.GradScaler  # enabled only for fp16; a no-op otherwise
    recipe: fast.RecipeSteps
    loss: TrainingLoss
    eval_loss: Callable  # the plain loss (no smoothing) the evaluation reports
    loader: DeviceLoader
    eval_loader: DeviceLoader
    eval_split: str  # val when data.val_size holds a part out, else test
    amp_ctx: contextlib.AbstractContextManager
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_seconds: float = 0.0
    epoch: int = -1  # the epoch being trained, or the last one finished (-1: none yet)
    step: int = 0  # optimizer steps taken in the run
    best_acc: float = -1.0
    run_dir: Path | None = None
    loss_sum: torch.Tensor | None = None  # the epoch's running sums, on the device
    correct: torch.Tensor | None = None
    graph: graphs.StepGraph | None = None  # the captured step (train.graph), else train_step runs eagerly
    step_hooks: tuple = ()  # train(hooks=...): host-side StepHooks around each eager step (train/hooks.py)

    @property
    def main(self) -> bool:
        return self.dist is None or self.dist.main

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluator(self):
        """What evaluation calls: the eval model, through its captured forward when the step is captured."""
        model = self.eval_model
        return self.graph.eval_model(model) if self.graph is not None and self.graph.capture else model

    def step_body(self, x: torch.Tensor, y, *, phase, lrs: torch.Tensor | None = None, step_hooks=()) -> torch.Tensor:
        """The training step, the one the run takes eagerly (train_step), captures as a CUDA graph
        (graph.StepGraph, with lrs: the groups' learning rates as a device tensor) and warms up with
        (fast.warm_up): forward, loss, backward, clipping, step_hooks' after_backward (eager only), the
        recipe's per-step work, the optimizer step, the EMA and the epoch's running sums. Never waits for
        the device. phase: recipe.phase(epoch)."""
        self.opt.zero_grad(set_to_none=True)
        with uncached(self.amp_ctx):  # a captured graph must not keep casts made outside it
            logits = self.step_model(x)
            loss, total = self.loss(logits, y, self.model)
        self.scaler.scale(total).backward()  # the scaler is a no-op unless fp16 (never captured)
        self.scaler.unscale_(self.opt)
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        for h in step_hooks:  # only the eager step passes them: they never run in a capture or warm-up
            h.after_backward(self)
        self.recipe.before_step(phase)
        with lrs_from(self.opt, lrs):
            self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            update_without_sync(self.ema, self.model, self.cfg.train.ema)
        labels = y if isinstance(y, torch.Tensor) else y.y_a
        self.loss_sum += loss.detach().float() * x.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()
        return loss.detach()

    def train_step(self, x: torch.Tensor, y) -> None:
        """One optimizer step, eagerly; adds to the epoch's device-side sums."""
        for h in self.step_hooks:
            h.before_step(self, x, y)
        loss = self.step_body(x, y, phase=self.recipe.phase(self.epoch), step_hooks=self.step_hooks)
        self.end_step()
        for h in self.step_hooks:
            h.after_step(self, x, y, loss)

    def end_step(self) -> None:
        """The host's part after every step: the schedule, the step count, lookahead."""
        self.sched.step()
        self.step += 1
        self.recipe.after_step(self.step)

    def train_epoch(self, epoch: int) -> tuple[dict, float]:
        """One pass over the training data: its metrics and seconds. The bar syncs every 25 steps."""
        cfg, n_batches, n = self.cfg, len(self.loader), 0
        self.model.train()
        self.loader.set_epoch(epoch)
        self.epoch, self.step = epoch, epoch * n_batches
        self.zero_sums()
        step = self.graph.step if self.graph is not None else self.train_step
        batches = distributed.shard(self.loader, self.dist, cfg.data.batch_size) if self.dist else self.loader
        bar = _progress(n_batches, f"epoch {epoch + 1}/{cfg.train.epochs}", cfg.train.progress and not self.dist)
        stop = fast.stopwatch(self.device)
        for i, (x, y) in enumerate(batches):
            step(x, y)
            n += x.shape[0]
            if bar is not None:
                bar.update(1)
                if i % 25 == 0 or i + 1 == n_batches:
                    bar.set_postfix(loss=f"{self.loss_sum.item() / n:.3f}", acc=f"{self.correct.item() / n:.3f}")
        seconds = stop()
        if bar is not None:
            bar.close()
        totals = torch.stack([self.loss_sum, self.correct.float(), torch.tensor(float(n), device=self.device)])
        if self.dist:  # every rank saw its own slice: sum over ranks
            torch.distributed.all_reduce(totals)
        loss_sum, correct, n = totals[0].item(), totals[1].item(), int(totals[2].item())
        return {"train_loss": loss_sum / n, "train_acc": correct / n, "images": n}, seconds

    def zero_sums(self) -> None:
        """Zero the running sums in place: a captured step adds into these very tensors."""
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), device=self.device)
            self.correct = torch.zeros((), device=self.device)
        self.loss_sum.zero_()
        self.correct.zero_()

    def end_epoch(self, epoch: int, stats: dict, seconds: float) -> dict:
        """The epoch's metrics line; on evaluation epochs also the evaluation (and best.pt)."""
        cfg, split = self.cfg, self.eval_split
        self.train_seconds += seconds
        if hasattr(self.opt, "end_epoch"):
            self.opt.end_epoch(epoch)
        record = {
            "epoch": epoch + 1,
            **stats,
            "lr": self.opt.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_s": stats["images"] / max(seconds, 1e-9),
        }
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            stop = fast.stopwatch(self.device)
            ev = evaluate(self._evaluator(), self.eval_loader, self.eval_loss, cfg.train.tta, self.amp_ctx)
            record.update({f"{split}_loss": ev["loss"], f"{split}_acc": ev["acc"], "eval_seconds": stop()})
            if ev["acc"] > self.best_acc:
                self.best_acc = ev["acc"]
                self.save("best.pt")
        if not math.isfinite(stats["train_loss"]):
            record["diverged"] = True
        for h in self.step_hooks:  # after the evaluation; what a hook adds to record is logged too
            h.end_epoch(self, record)
        return record

    def state_dict(self) -> dict:
        """What a checkpoint holds: the state that resumes the run, and what predict, export, the
        analyses and pruning read (model_name, model_options, classes, mean, std, image_shape, ema)."""
        m, ds, dev = self.model, self.data, self.device
        return dict(
            model=m.state_dict(),
            optimizer=self.opt.state_dict(),
            scheduler=self.sched.state_dict(),
            ema=self.ema.module.state_dict() if self.ema is not None else None,
            ema_state=self.ema.state_dict() if self.ema is not None else None,
            lookahead=self.recipe.state_dict(),
            step_hooks=[h.state_dict() for h in self.step_hooks],
            epoch=self.epoch,
            best_acc=self.best_acc,
            train_seconds=self.train_seconds,
            config=to_dict(self.cfg),
            classes=list(ds.classes),
            model_name=m.cifarlab_name,
            model_options=model_options(m, ds.num_classes, int(ds.train_x.shape[-1])),
            mean=list(self.mean),
            std=list(self.std),
            image_shape=list(ds.image_shape),  # (H, W, C) the model takes: predict resizes to it
            rng={"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
        )

    def load_state_dict(self, ckpt: dict, source: str = "checkpoint") -> None:
        load_state(self.model, ckpt["model"], source)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema_state"):
            self.ema.load_state_dict(ckpt["ema_state"])
        self.recipe.load_state_dict(ckpt.get("lookahead"))
        for h, state in zip(self.step_hooks, ckpt.get("step_hooks") or ()):
            h.load_state_dict(state)
        torch.set_rng_state(ckpt["rng"]["cpu"].cpu())
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
        self.epoch, self.best_acc = ckpt["epoch"], ckpt.get("best_acc", -1.0)
        self.train_seconds = ckpt.get("train_seconds", 0.0)

    def save(self, name: str) -> None:
        if self.main and self.cfg.train.save_checkpoints:
            save_checkpoint(self.run_dir / name, **self.state_dict())

    def summary(self, history: list[dict]) -> dict:
        cfg, ds, split = self.cfg, self.data, self.eval_split
        final = history[-1] if history else {}
        summary = {
            "name": cfg.name,
            "run_dir": str(self.run_dir),
            "model": cfg.model.name,
            "dataset": ds.name,
            "seed": cfg.seed,
            "epochs": len(history) and history[-1]["epoch"],
            "params": count_params(self.model),
            "macs_per_image": _macs(self.model, ds),
            f"best_{split}_acc": self.best_acc,
            "best_selected_on": split,  # best.pt is chosen on this split: quote a best test acc only if "val"
            "test_images": len(ds.test_y),
            f"final_{split}_acc": final.get(f"{split}_acc"),
            "final_train_loss": final.get("train_loss"),
            "train_seconds": self.train_seconds,
            "eval_seconds": final.get("eval_seconds"),
            "images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else None,
            "diverged": any(h.get("diverged") for h in history),
            "peak_memory_mb": peak_memory_mb(self.device),
            "env": environment(self.device),
        }
        model, amp_ctx = self._evaluator(), self.amp_ctx
        if cfg.train.tta != "none" and final.get(f"{split}_acc") is not None:  # what the TTA adds
            summary[f"final_{split}_acc_no_tta"] = evaluate(model, self.eval_loader, self.eval_loss, "none", amp_ctx)[
                "acc"
            ]
        if split == "val":  # model selection used val: report test once, at the end
            test_loader = _eval_loader(cfg, ds.test_x, ds.test_y, self.loader, self.mean, self.std)
            summary["final_test_acc"] = evaluate(model, test_loader, self.eval_loss, cfg.train.tta, amp_ctx)["acc"]
        return summary


def build_trainer(
    cfg: Config, dataset: Dataset, device: torch.device, dist: distributed.Dist | None, model: nn.Module | None = None
) -> Trainer:
    """A fresh run's parts, from a config and its (already split) dataset; `model` (the Python API's
    fit(model=...)) is trained in place of the one the config names."""
    seed_everything(cfg.seed)
    num_classes, in_ch = dataset.num_classes, int(dataset.train_x.shape[-1])
    mean, std = normalization(dataset, cfg.data.normalize)
    channels_last = use_channels_last(device, cfg.train.channels_last)
    model = (build_model(cfg, num_classes, in_ch) if model is None else model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and cfg.train.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    loader = DeviceLoader(
        dataset.train_x,
        dataset.train_y,
        cfg.data.batch_size,
        shuffle=cfg.data.shuffle,
        drop_last=cfg.data.drop_last,
        seed=cfg.seed,
        device=device,
        mean=mean,
        std=std,
        augment=Augment(cfg.augment),
        channels_last=channels_last,
    )
    if len(loader) == 0:
        raise UserError(
            f"no training batches: {len(dataset.train_y)} images with batch_size "
            f"{cfg.data.batch_size} and drop_last={cfg.data.drop_last}"
        )
    whiten_layer, whiten_seconds = None, 0.0
    if cfg.train.whiten:  # before the optimizer is built: the whitened weight is frozen
        stop = fast.stopwatch(device)
        whiten_layer = fast.setup_whitening(model, cfg.train, loader.images, mean, std, device)
        whiten_seconds = stop()  # part of the training time, as airbench counts it
    held_out = dataset.val_x is not None
    eval_xy = (dataset.val_x, dataset.val_y) if held_out else (dataset.test_x, dataset.test_y)
    opt = build_optimizer(model, cfg.optim)
    ema = make_ema(model, cfg.train.ema) if cfg.train.ema > 0 else None
    recipe = fast.RecipeSteps(model, cfg.train, cfg.train.epochs * len(loader), whiten_layer)
    step_model = distributed.wrap(model, dist) if dist else model
    if cfg.train.compile:
        step_model = torch.compile(
            step_model, mode=None if cfg.train.compile_mode == "default" else cfg.train.compile_mode
        )
    return Trainer(
        cfg=cfg, data=dataset, device=device, dist=dist, model=model, step_model=step_model, opt=opt,
        sched=build_scheduler(opt, cfg.schedule, cfg.train.epochs, len(loader)), ema=ema, scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16"), recipe=recipe,
        loss=TrainingLoss(make_loss(cfg.train.loss, cfg.train.label_smoothing, num_classes),
                          reduction=cfg.train.loss_reduction, world=dist.world if dist else 1, l1=cfg.optim.l1),
        eval_loss=make_loss(cfg.train.loss, 0.0, num_classes), loader=loader,
        eval_loader=_eval_loader(cfg, *eval_xy, loader, mean, std), eval_split="val" if held_out else "test",
        amp_ctx=autocast(device, cfg.train.amp), mean=mean, std=std, train_seconds=whiten_seconds,
    )  # fmt: skip


# ---------------------------------------------------------------- the loop


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    resume: bool | str = "auto",
    dataset=None,
    model: nn.Module | None = None,
    *,
    hooks=(),
) -> dict:
    """Train one configuration; returns the summary (also written to run_dir/summary.json).

    resume: True continues run_dir from last.pt (an error if there is none); False refuses a folder
    that already holds a run; "auto" returns the stored summary of a finished run, resumes an
    interrupted one and refuses a run of other settings. Under torchrun (WORLD_SIZE > 1) this is one
    rank of a DDP run; rank 0 writes the files. model: a module to train instead of cfg.model's
    (cifarlab.fit(model=...)); cfg.model.name then only names it. hooks: StepHook instances (train/hooks.py)
    called around each step, e.g. the BN study's probes; they make the step eager."""
    validate(cfg, model_given=model is not None)
    hooks = check_hooks(hooks)
    run_dir = check_folder(run_dir) if run_dir else None
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    # One writer per folder, held from before the folder is judged to the last file written: a
    # second `train` on the same --out is refused at once instead of mixing two runs. Rank 0 writes.
    rank0 = os.environ.get("RANK", "0") == "0"
    with lock_folder(run_dir) if run_dir is not None and rank0 else contextlib.nullcontext():
        return _train(cfg, run_dir, resume, dataset, model, hooks=hooks)


def _train(
    cfg: Config, run_dir: Path | None, resume: bool | str, dataset, model: nn.Module | None = None, *, hooks=()
) -> dict:
    mode = resume
    resume, finished = _resume_point(cfg, run_dir, resume)
    if finished is not None:
        return finished
    dist = distributed.setup(cfg.data.device)
    try:
        device = dist.device if dist else pick_device(cfg.data.device)
        ckpt = read_checkpoint(run_dir / "last.pt", map_location=device) if resume else None
        if ckpt is not None and (name := ckpt.get("config", {}).get("model", {}).get("name")) != cfg.model.name:
            raise UserError(f"{run_dir}/last.pt was trained with model {name}, not {cfg.model.name}")
        if ckpt is not None:  # continuing with other settings would mix two runs in one folder
            check_same_run(run_dir, cfg)
        data = dataset_from_config(cfg.data, cfg.seed, dataset)
        if ckpt is not None:  # nor may it go on with other images than it started with
            _check_same_data(run_dir, cfg, data)
        t = build_trainer(cfg, data, device, dist, model)
        check_image_size(t.model, data.image_shape, cfg.model.name, data_record(cfg, data)["path"])
        t.step_hooks = tuple(hooks)  # before a resume loads their state from last.pt
        history = []
        if ckpt is not None:
            t.load_state_dict(ckpt, f"{run_dir}/last.pt")
            history = _resumed_history(run_dir, t.epoch + 1, t.main)
        compile_seconds = _warm_up(t)
        capture_seconds = _capture_step(t)
        t.run_dir = distributed.broadcast(run_dir or new_run_dir(cfg), dist)
        if t.main:
            make_folder(t.run_dir)
            if ckpt is None and (mode == "auto" or (t.run_dir / "config.yaml").is_file()):
                _clear_stale(t.run_dir)  # a fresh start: what a run stopped before its first checkpoint left goes
            save_config(cfg, t.run_dir / "config.yaml")
            if ckpt is None or not (t.run_dir / DATA_FILE).is_file():
                atomic_write_json(t.run_dir / DATA_FILE, data_record(cfg, data))
        writer = _tensorboard(t.run_dir) if cfg.train.log_tensorboard and t.main else None
        if cfg.train.save_every > 0 and ckpt is None:  # the start of the trajectory (inspect trajectory)
            t.save("ckpt_epoch000.pt")
        for epoch in range(t.epoch + 1, cfg.train.epochs):
            record = t.end_epoch(epoch, *t.train_epoch(epoch))
            history.append(record)
            _log(t, record, writer)
            t.save("last.pt")
            if cfg.train.save_every > 0 and (epoch + 1) % cfg.train.save_every == 0:
                t.save(f"ckpt_epoch{epoch + 1:03d}.pt")
            if record.get("diverged"):
                print(f"training diverged at epoch {epoch + 1} (loss is not finite); stopping", flush=True)
                break
        if writer is not None:
            writer.close()
        summary = {**t.summary(history), "compile_seconds": compile_seconds, "capture_seconds": capture_seconds}
        summary["step"] = "graph" if t.graph is not None and t.graph.capture else "eager"
        if dist:
            summary["processes"] = dist.world
        if t.main:
            atomic_write_json(t.run_dir / "summary.json", summary)
        return summary
    finally:
        distributed.cleanup(dist)


def _resume_point(cfg: Config, run_dir: Path | None, resume: bool | str) -> tuple[bool, dict | None]:
    """(whether to resume from run_dir/last.pt, the stored summary when "auto" finds the run finished).

    A folder with config.yaml but neither last.pt nor summary.json (a run stopped by Ctrl-C, a kill, a
    crash or a full disk before its first checkpoint: config.yaml, tb/, maybe a metrics line) holds
    nothing to continue or to lose: it is free, and the same command (or --resume) starts it afresh."""
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    has_last = run_dir is not None and (run_dir / "last.pt").is_file()
    taken = has_last or (run_dir is not None and (run_dir / "summary.json").is_file())
    stopped = not taken and run_dir is not None and (run_dir / "config.yaml").is_file()
    if resume == "auto":
        if run_dir is None or stopped:
            return False, None
        check_same_run(run_dir, cfg)
        # a summary that is not JSON or lacks its keys (a copy cut short) counts as not finished
        if (summary := read_summary(run_dir / "summary.json", _summary_keys(cfg))) is not None:
            return False, summary
        return has_last, None
    if resume and not has_last:
        if not stopped:
            raise UserError(f"--resume needs a run folder with last.pt (got {run_dir})")
        print(f"note: {run_dir} was stopped before its first checkpoint; starting it from scratch", flush=True)
        return False, None
    if not resume and not stopped and run_dir is not None and holds_run(run_dir):
        raise UserError(f"run folder {run_dir} already holds a run; use --resume or another --out")
    return resume, None


# What a run that never reached a checkpoint may leave; a fresh start in its folder removes it.
STALE = ("metrics.jsonl", "summary.json", "best.pt", "ckpt_epoch*.pt", "data.json", "tb")
DATA_FILE = "data.json"  # what the run read: source, resolved path, fingerprint of the arrays


def _clear_stale(run_dir: Path) -> None:
    for pattern in STALE:
        for p in run_dir.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def data_record(cfg: Config, ds: Dataset) -> dict:
    """What the run reads: config.yaml says `data.source: cifar10`; this says which copy that was."""
    path = ds.origin or f"the in-memory dataset '{ds.name}'"
    return {"source": cfg.data.source, "path": path, "name": ds.name, "fingerprint": ds.arrays_sha}


def _check_same_data(run_dir: Path, cfg: Config, ds: Dataset) -> None:
    """A resume on other images (another CIFARLAB_DATA, a changed folder) would finish the run on them."""
    old = read_summary(run_dir / DATA_FILE, ("fingerprint", "path"))
    new = data_record(cfg, ds)
    if old is None or old["fingerprint"] == new["fingerprint"]:  # a folder from before data.json resumes as before
        return
    raise UserError(
        f"{run_dir} was trained on {old['path']} (arrays {old['fingerprint']}), but this resume reads "
        f"{new['path']} (arrays {new['fingerprint']}); resume it with the same data (CIFARLAB_DATA, --data)"
    )


def check_image_size(model: nn.Module, image_shape, name: str, source: str, expected=None) -> None:
    """Models with a fixed input size (the VGGs: five pools, then a classifier sized for 1x1 or 2x2) fail
    deep in their first step on images of another size. Try one image now, before any file is written,
    and name both sizes. expected: the (H, W, C) a checkpoint was trained on; else 32x32 if it fits."""
    h, w, c = image_shape
    if _takes(model, (c, h, w)):
        return
    if expected is None and _takes(model, (c, 32, 32)):
        expected = (32, 32, c)
    if expected is None:
        raise UserError(f"model {name} cannot take the {h}x{w} images of {source}")
    raise UserError(
        f"model {name} takes {expected[0]}x{expected[1]} images, but {source} holds {h}x{w} images "
        "(resize them, or train a model that takes any size: resnet18, plainnet, fastnet, ...)"
    )


def _takes(model: nn.Module, chw: tuple[int, int, int]) -> bool:
    p = next(model.parameters(), None)
    x = torch.zeros(1, *chw, device=p.device if p is not None else "cpu")
    was = model.training
    model.eval()  # no BN statistics or dropout draws: the run is untouched
    try:
        with torch.no_grad():
            model(x)
        return True
    except RuntimeError:  # "mat1 and mat2 shapes cannot be multiplied", "output size is too small"
        return False
    finally:
        model.train(was)


def _summary_keys(cfg: Config) -> tuple[str, ...]:
    split = "val" if cfg.data.val_size else "test"
    return "run_dir", "train_seconds", f"best_{split}_acc", f"final_{split}_acc"


def _resumed_history(run_dir: Path, start_epoch: int, main: bool) -> list[dict]:
    # Epochs logged after the last checkpoint will run again: drop their lines, and a line cut
    # short by the kill.
    history = [r for r in read_jsonl(run_dir / "metrics.jsonl", partial_tail=True) if r["epoch"] <= start_epoch]
    if main:
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    return history


def _warm_up(t: Trainer) -> float:
    """Compile / autotune on real batches now, so that neither lands in train_seconds."""
    if not (t.cfg.train.compile or (t.cfg.train.cudnn_benchmark and t.device.type == "cuda")):
        return 0.0
    t.loader.set_epoch(t.epoch + 1)
    return fast.warm_up(t, next(iter(t.loader)))


def _capture_step(t: Trainer) -> float:
    """Set up the captured step where train.graph asks and the run allows (see graph.py); returns the
    seconds the capture took (not training time, like compile_seconds). Falls back to the eager step
    with one line saying why."""
    mode, cuda = t.cfg.train.graph, t.device.type == "cuda"
    if mode == "off" or (mode == "auto" and not cuda):
        return 0.0
    reason = graphs.why_not(t.cfg, t.dist is not None) or why_not_graph(t.step_hooks)
    if reason is None and not cuda and t.device.type != "cpu":
        reason = f"graphs are CUDA's; on {t.device.type} there is nothing to capture"
    if reason is not None:
        if t.main:
            print(f"note: train.graph: {reason}; the step runs eagerly", flush=True)
        return 0.0
    t.graph = graphs.StepGraph(t, capture=cuda)
    if not cuda:
        return 0.0  # train.graph=on without CUDA: the same step body, run uncaptured
    t.zero_sums()
    t.loader.set_epoch(t.epoch + 1)
    try:
        return t.graph.capture_phases(next(iter(t.loader)), range(t.epoch + 1, t.cfg.train.epochs))
    except RuntimeError as e:  # an op that cannot be captured (a host sync in a model, an old driver)
        t.graph = None
        if t.main:
            print(f"note: train.graph: capture failed ({str(e).splitlines()[0]}); the step runs eagerly", flush=True)
        return 0.0


def _log(t: Trainer, record: dict, writer) -> None:
    if t.main:
        append_jsonl(t.run_dir / "metrics.jsonl", record)
    if writer is not None:
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)):
                writer.add_scalar(k, v, record["epoch"])
        writer.flush()
    if t.cfg.train.log_epochs and t.main:
        print(_epoch_line(record, t.cfg.train.epochs, t.eval_split), flush=True)


# ---------------------------------------------------------------- setup helpers


def validate(cfg: Config, model_given: bool = False) -> None:
    """Check a config before any data is read, so a typo fails at once: the registries' names (the
    model's only when the config builds the model), then every field's choices and range."""
    from ..models import model_aliases, model_names
    from .optim import OPTIMIZERS
    from .schedules import SCHEDULES

    known = {n.lower() for n in model_names()} | {a.lower() for a in model_aliases()}
    if not model_given and cfg.model.name.lower() not in known:
        raise UserError(f"unknown model '{cfg.model.name}'; choose one of: {', '.join(model_names())}")
    for value, allowed, key in [
        (cfg.optim.name.lower(), OPTIMIZERS, "optimizer"),
        (cfg.schedule.name.lower(), SCHEDULES, "schedule"),
    ]:
        if value not in allowed:
            raise UserError(f"unknown {key} '{value}'; choose from: {', '.join(allowed)}")
    check(cfg)


def build_model(cfg: Config, num_classes: int, in_channels: int) -> nn.Module:
    m = cfg.model
    return create_model(
        m.name,
        num_classes=num_classes,
        in_channels=in_channels,
        activation=m.activation,
        width=m.width,
        dropout=m.dropout,
        init=m.init,
        init_std=m.init_std,
        **m.args,
    )


def model_options(model: nn.Module, num_classes: int, in_channels: int) -> dict:
    opts = dict(getattr(model, "cifarlab_options", {}))
    opts.pop("init", None)  # weights come from the checkpoint; re-initialising is wasted work
    opts.pop("init_std", None)
    return {"num_classes": num_classes, "in_channels": in_channels, **opts}


def new_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.out) / f"{cfg.name}-{stamp}"
    run_dir, k = base, 1
    while run_dir.exists():
        run_dir, k = Path(f"{base}-{k}"), k + 1
    return run_dir


def _eval_loader(cfg: Config, x: torch.Tensor, y: torch.Tensor, like: DeviceLoader, mean, std) -> DeviceLoader:
    """An evaluation loader on the training loader's device and layout."""
    return DeviceLoader(
        x,
        y,
        cfg.data.eval_batch_size,
        shuffle=False,
        drop_last=False,
        seed=cfg.seed,
        device=like.device,
        mean=mean,
        std=std,
        channels_last=like.channels_last,
    )


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(
    model: nn.Module, loader: DeviceLoader, tta: str = "none", amp_ctx=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels over a loader, in order; tta: none | flip | multiview (see tta.py)."""
    if tta not in TTA_MODES:
        raise UserError(f"train.tta must be {'|'.join(TTA_MODES)}, got '{tta}'")
    model.eval()
    outs, ys = [], []
    for x, y in loader:
        with amp_ctx or contextlib.nullcontext():
            logits = tta_logits(model, x, tta)
        outs.append(logits)
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def evaluate(model, loader, loss_fn, tta="none", amp_ctx=None) -> dict:
    logits, y = predict(model, loader, tta, amp_ctx)
    return {"loss": loss_fn(logits, y).item(), "acc": (logits.argmax(1) == y).float().mean().item()}


# ---------------------------------------------------------------- output


def _macs(model: nn.Module, ds: Dataset) -> int | None:
    """Forward multiply-adds per image (the scorecard's FLOPs); None where the counter cannot run."""
    from ..models import flops_per_image

    h, w, c = ds.image_shape
    try:
        return flops_per_image(model, (c, h, w))
    except Exception:  # a model the counter cannot trace must not cost the run its summary
        return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the run: allocated CUDA memory on a GPU, else the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _epoch_line(r: dict, epochs: int, split: str) -> str:
    s = f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}"
    if f"{split}_acc" in r:
        s += f"  {split} loss {r[f'{split}_loss']:.4f} acc {r[f'{split}_acc']:.4f}"
    return s + f"  lr {r['lr']:.2e}  {r['seconds']:.1f}s  {r['images_per_s']:.0f} img/s"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
