"""The training loop: one function, `train(cfg)`, that every preset, sweep and study goes through.

Data sits on the device as uint8 (data.DeviceLoader); the loop avoids host syncs except for the
progress bar every few steps and the epoch's metrics. Each epoch appends to metrics.jsonl and
TensorBoard and writes last.pt (best.pt when the evaluation accuracy improves), so a killed run
resumes from its last finished epoch with the same data order (the loader is seeded per epoch).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, save_config, to_dict
from ..data import Augment, DeviceLoader, load_dataset, mixed_loss, normalization, split_val, subset
from ..errors import UserError
from ..models import count_params, create_model
from ..run import (append_jsonl, atomic_write_json, atomic_write_text, check_folder, environment, make_folder,
                   read_jsonl)
from . import distributed, fast
from .checkpoint import load_state, read_checkpoint, save_checkpoint
from .ema import make_ema
from .losses import l1_penalty, make_loss
from .optim import build_optimizer
from .schedules import build_scheduler
from .tta import TTA_MODES, tta_logits


# ---------------------------------------------------------------- setup helpers


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available here")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA ('auto' = bf16); plain fp32 elsewhere unless asked."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise UserError(f"train.amp must be auto|bf16|fp16|off, got '{amp}'")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(device: torch.device, setting: str) -> bool:
    if setting not in ("auto", "on", "off"):
        raise UserError(f"train.channels_last must be auto|on|off, got '{setting}'")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def prepare_data(cfg: Config, dataset=None):
    ds = dataset if dataset is not None else load_dataset(cfg.data.source, cfg.data.cache_dir or None)
    if cfg.data.n_items:
        ds = subset(ds, cfg.data.n_items)
    if cfg.data.val_size:
        ds = split_val(ds, cfg.data.val_size, cfg.seed)
    return ds


def build_model(cfg: Config, num_classes: int, in_channels: int) -> nn.Module:
    m = cfg.model
    return create_model(m.name, num_classes=num_classes, in_channels=in_channels, activation=m.activation,
                        width=m.width, dropout=m.dropout, init=m.init, init_std=m.init_std, **m.args)


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


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: nn.Module, loader: DeviceLoader, tta: str = "none", amp_ctx=None) -> tuple[torch.Tensor, torch.Tensor]:
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


# ---------------------------------------------------------------- the loop


def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False, dataset=None) -> dict:
    """Train one configuration; returns the summary (also written to run_dir/summary.json).

    Under torchrun (WORLD_SIZE > 1) this is one rank of a DDP run; rank 0 writes the files."""
    dist = distributed.setup(cfg.data.device)
    try:
        return _train(cfg, run_dir, resume, dataset, dist)
    finally:
        distributed.cleanup(dist)


def validate(cfg: Config) -> None:
    """Check the names in a config before any data is read, so a typo fails at once."""
    from ..models import model_aliases, model_names
    from .optim import OPTIMIZERS
    from .schedules import SCHEDULES
    from .losses import LOSSES

    known = {n.lower() for n in model_names()} | {a.lower() for a in model_aliases()}
    if cfg.model.name.lower() not in known:
        raise UserError(f"unknown model '{cfg.model.name}'; choose one of: {', '.join(model_names())}")
    for value, allowed, key in [(cfg.optim.name.lower(), OPTIMIZERS, "optimizer"), (cfg.schedule.name.lower(), SCHEDULES, "schedule"),
                                (cfg.train.loss, LOSSES, "loss"), (cfg.train.tta, TTA_MODES, "train.tta"),
                                (cfg.train.loss_reduction, ("mean", "sum"), "train.loss_reduction"),
                                (cfg.train.compile_mode, COMPILE_MODES, "train.compile_mode"),
                                (cfg.train.amp, ("auto", "bf16", "fp16", "off"), "train.amp"),
                                (cfg.data.normalize, ("dataset", "course", "none"), "data.normalize")]:
        if value not in allowed:
            raise UserError(f"unknown {key} '{value}'; choose from: {', '.join(allowed)}")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _train(cfg: Config, run_dir, resume: bool, dataset, dist) -> dict:
    validate(cfg)
    device = dist.device if dist else pick_device(cfg.data.device)
    main = dist is None or dist.main
    run_dir = check_folder(run_dir) if run_dir else None
    ckpt = None
    if resume:
        if run_dir is None or not (run_dir / "last.pt").is_file():
            raise UserError(f"--resume needs a run folder with last.pt (got {run_dir})")
        ckpt = read_checkpoint(run_dir / "last.pt", map_location=device)
        if ckpt.get("config", {}).get("model", {}).get("name") != cfg.model.name:
            raise UserError(f"{run_dir}/last.pt was trained with model "
                            f"{ckpt.get('config', {}).get('model', {}).get('name')}, not {cfg.model.name}")
    elif run_dir is not None and (run_dir / "last.pt").exists():
        raise UserError(f"run folder {run_dir} already holds a run; use --resume or another --out")

    seed_everything(cfg.seed)
    ds = prepare_data(cfg, dataset)
    num_classes, in_ch = len(ds.classes), int(ds.train_x.shape[-1])
    mean, std = normalization(ds, cfg.data.normalize)
    channels_last = use_channels_last(device, cfg.train.channels_last)
    amp_ctx = autocast(device, cfg.train.amp)

    model = build_model(cfg, num_classes, in_ch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = count_params(model)
    if device.type == "cuda" and cfg.train.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True

    loader = DeviceLoader(ds.train_x, ds.train_y, cfg.data.batch_size, shuffle=cfg.data.shuffle,
                          drop_last=cfg.data.drop_last, seed=cfg.seed, device=device, mean=mean, std=std,
                          augment=Augment(cfg.augment), channels_last=channels_last)
    if len(loader) == 0:
        raise UserError(f"no training batches: {len(ds.train_y)} images with batch_size "
                        f"{cfg.data.batch_size} and drop_last={cfg.data.drop_last}")
    whiten_layer, whiten_seconds = None, 0.0
    if cfg.train.whiten:  # before the optimizer is built: the whitened weight is frozen
        stop = fast.stopwatch(device)
        whiten_layer = fast.setup_whitening(model, cfg.train, loader.images, mean, std, device)
        whiten_seconds = stop()  # part of the training time, as airbench counts it
    eval_split = "val" if ds.val_x is not None else "test"
    eval_x, eval_y = (ds.val_x, ds.val_y) if ds.val_x is not None else (ds.test_x, ds.test_y)
    eval_kw = dict(shuffle=False, drop_last=False, seed=cfg.seed, device=device, mean=mean, std=std,
                   channels_last=channels_last)
    eval_loader = DeviceLoader(eval_x, eval_y, cfg.data.eval_batch_size, **eval_kw)

    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, cfg.train.epochs, len(loader))
    ema = make_ema(model, cfg.train.ema) if cfg.train.ema > 0 else None
    loss_fn = make_loss(cfg.train.loss, cfg.train.label_smoothing, num_classes)
    eval_loss_fn = make_loss(cfg.train.loss, 0.0, num_classes)
    scaler = torch.amp.GradScaler(device.type) if cfg.train.amp == "fp16" else None
    hooks = fast.StepHooks(model, cfg.train, cfg.train.epochs * len(loader), whiten_layer)
    step_model = distributed.wrap(model, dist) if dist else model
    if cfg.train.compile:
        mode = None if cfg.train.compile_mode == "default" else cfg.train.compile_mode
        step_model = torch.compile(step_model, mode=mode)

    start_epoch, best_acc, history, train_seconds = 0, -1.0, [], 0.0
    if ckpt is not None:
        load_state(model, ckpt["model"], f"{run_dir}/last.pt")
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema_state"):
            ema.load_state_dict(ckpt["ema_state"])
        hooks.load_state_dict(ckpt.get("lookahead"))
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        start_epoch, best_acc = ckpt["epoch"] + 1, ckpt.get("best_acc", -1.0)
        train_seconds = ckpt.get("train_seconds", 0.0)
        # Epochs logged after the last checkpoint will run again: drop their lines.
        history = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["epoch"] <= start_epoch]
        if main:
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    else:
        train_seconds = whiten_seconds
    compile_seconds = 0.0
    if cfg.train.compile or (cfg.train.cudnn_benchmark and device.type == "cuda"):
        # compile / autotune on real batches now, so that neither lands in train_seconds
        loader.set_epoch(start_epoch)
        compile_seconds = fast.warm_up(step_model, model, opt, next(iter(loader)), loss_fn, amp_ctx, device,
                                       compile=cfg.train.compile)
    run_dir = distributed.broadcast(run_dir or new_run_dir(cfg), dist)
    if main:
        make_folder(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    writer = _tensorboard(run_dir) if cfg.train.log_tensorboard and main else None

    def checkpoint(epoch: int, name: str) -> None:
        if not (main and cfg.train.save_checkpoints):
            return
        save_checkpoint(
            run_dir / name, model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
            ema=ema.module.state_dict() if ema is not None else None,
            ema_state=ema.state_dict() if ema is not None else None, lookahead=hooks.state_dict(),
            epoch=epoch, best_acc=best_acc, train_seconds=train_seconds, config=to_dict(cfg),
            classes=list(ds.classes), model_name=model.cifarlab_name,
            model_options=model_options(model, num_classes, in_ch), mean=list(mean), std=list(std),
            image_shape=list(ds.image_shape),  # (H, W, C) the model takes: predict resizes to it
            rng={"cpu": torch.get_rng_state(),
                 "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        )

    if cfg.train.save_every > 0 and ckpt is None:  # the start of the trajectory (inspect trajectory)
        checkpoint(-1, "ckpt_epoch000.pt")
    eval_model = ema.module if ema is not None else model
    for epoch in range(start_epoch, cfg.train.epochs):
        stats, seconds = _train_epoch(step_model, model, loader, opt, sched, ema, loss_fn, cfg, amp_ctx,
                                      scaler, epoch, device, dist, hooks)
        train_seconds += seconds
        if hasattr(opt, "end_epoch"):
            opt.end_epoch(epoch)
        record = {"epoch": epoch + 1, **stats, "lr": opt.param_groups[0]["lr"], "seconds": seconds,
                  "images_per_s": stats["images"] / max(seconds, 1e-9)}
        last = epoch + 1 == cfg.train.epochs
        if (epoch + 1) % cfg.train.eval_every == 0 or last:
            stop = fast.stopwatch(device)
            ev = evaluate(eval_model, eval_loader, eval_loss_fn, cfg.train.tta, amp_ctx)
            record.update({f"{eval_split}_loss": ev["loss"], f"{eval_split}_acc": ev["acc"],
                           "eval_seconds": stop()})
            if ev["acc"] > best_acc:
                best_acc = ev["acc"]
                checkpoint(epoch, "best.pt")
        if not math.isfinite(stats["train_loss"]):
            record["diverged"] = True
        history.append(record)
        if main:
            append_jsonl(run_dir / "metrics.jsonl", record)
        if writer is not None:
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, epoch + 1)
            writer.flush()
        if cfg.train.progress and main:
            print(_epoch_line(record, cfg.train.epochs, eval_split), flush=True)
        checkpoint(epoch, "last.pt")
        if cfg.train.save_every > 0 and (epoch + 1) % cfg.train.save_every == 0:
            checkpoint(epoch, f"ckpt_epoch{epoch + 1:03d}.pt")
        if record.get("diverged"):
            print(f"training diverged at epoch {epoch + 1} (loss is not finite); stopping", flush=True)
            break
    if writer is not None:
        writer.close()

    summary = _summary(cfg, ds, run_dir, eval_model, eval_loader, eval_loss_fn, eval_split, best_acc, history,
                       n_params, train_seconds, device, amp_ctx, eval_kw)
    summary["compile_seconds"] = compile_seconds
    if dist:
        summary["processes"] = dist.world
    if main:
        atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _train_epoch(step_model, model, loader, opt, sched, ema, loss_fn, cfg, amp_ctx, scaler, epoch, device,
                 dist=None, hooks=None):
    """One pass over the training data. Sums stay on the device; the bar syncs every 25 steps."""
    model.train()
    loader.set_epoch(epoch)
    batches = distributed.shard(loader, dist, cfg.data.batch_size) if dist else loader
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n = 0
    bar = _progress(len(loader), f"epoch {epoch + 1}/{cfg.train.epochs}", cfg.train.progress and not dist)
    summed = cfg.train.loss_reduction == "sum"
    stop = fast.stopwatch(device)
    for i, (x, y) in enumerate(batches):
        with amp_ctx:
            logits = step_model(x)
            loss = mixed_loss(loss_fn, logits, y)
        # sum: the gradient of the (global) batch's summed loss; DDP averages over ranks, hence the world size
        total = loss * (x.shape[0] * (dist.world if dist else 1)) if summed else loss
        total = total + cfg.optim.l1 * l1_penalty(model) if cfg.optim.l1 > 0 else total
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(opt)
        else:
            total.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        if hooks is not None:
            hooks.before_step(epoch)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        if hooks is not None:
            hooks.after_step(epoch * len(loader) + i + 1)
        if ema is not None:
            ema.update_parameters(model)
        bs = x.shape[0]
        labels = y if isinstance(y, torch.Tensor) else y.y_a
        loss_sum += loss.detach().float() * bs
        correct += (logits.detach().argmax(1) == labels).sum()
        n += bs
        if bar is not None:
            bar.update(1)
            if i % 25 == 0 or i + 1 == len(loader):
                bar.set_postfix(loss=f"{loss_sum.item() / n:.3f}", acc=f"{correct.item() / n:.3f}")
    seconds = stop()
    if bar is not None:
        bar.close()
    if dist:  # every rank saw its own slice: sum over ranks
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(n), device=device)])
        torch.distributed.all_reduce(totals)
        loss_sum, correct, n = totals[0], totals[1], int(totals[2].item())
    return {"train_loss": loss_sum.item() / n, "train_acc": correct.item() / n, "images": n}, seconds


def _summary(cfg, ds, run_dir, eval_model, eval_loader, loss_fn, eval_split, best_acc, history, n_params,
             train_seconds, device, amp_ctx, eval_kw) -> dict:
    final = history[-1] if history else {}
    summary = {
        "name": cfg.name, "run_dir": str(run_dir), "model": cfg.model.name, "dataset": ds.name,
        "seed": cfg.seed, "epochs": len(history) and history[-1]["epoch"], "params": n_params,
        f"best_{eval_split}_acc": best_acc, f"final_{eval_split}_acc": final.get(f"{eval_split}_acc"),
        "final_train_loss": final.get("train_loss"), "train_seconds": train_seconds,
        "eval_seconds": final.get("eval_seconds"),
        "images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else None,
        "diverged": any(h.get("diverged") for h in history), "env": environment(device),
    }
    if cfg.train.tta != "none" and final.get(f"{eval_split}_acc") is not None:  # what the TTA adds
        summary[f"final_{eval_split}_acc_no_tta"] = evaluate(eval_model, eval_loader, loss_fn, "none", amp_ctx)["acc"]
    if eval_split == "val":  # model selection used val: report test once, at the end
        test_loader = DeviceLoader(ds.test_x, ds.test_y, cfg.data.eval_batch_size, **eval_kw)
        summary["final_test_acc"] = evaluate(eval_model, test_loader, loss_fn, cfg.train.tta, amp_ctx)["acc"]
    return summary


def _epoch_line(r: dict, epochs: int, split: str) -> str:
    s = f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}"
    if f"{split}_acc" in r:
        s += f"  {split} loss {r[f'{split}_loss']:.4f} acc {r[f'{split}_acc']:.4f}"
    return s + f"  lr {r['lr']:.2e}  {r['seconds']:.1f}s  {r['images_per_s']:.0f} img/s"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
