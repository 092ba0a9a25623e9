"""A preset's recipe (ResNet-18 standard, the course's VGG_A): cifarlab's engine against the usual
PyTorch way, in one run.

The usual way: a torch DataLoader over PIL images with torchvision transforms (RandomCrop 32 pad 4 and
RandomHorizontalFlip where the preset augments, ToTensor, Normalize), fp32, the same model, optimizer
(torch's own) and schedule, batch 128. cifarlab: the preset through `cifarlab.train.engine.train`
(data on the GPU as uint8, augmentation on device, bf16 autocast, channels_last, the captured step).

    python bench/throughput.py --preset resnet18_standard --data .data/cifar10-jpeg.tar.gz --epochs 30 --out $OUT/throughput.json
    python bench/throughput.py --preset vgg_a --data .data/cifar10-jpeg.tar.gz --epochs 5

Writes JSON with seconds per epoch and test accuracy of both, and the speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from cifarlab.config import load_config
from cifarlab.data import load_dataset, normalization, subset
from cifarlab.models import create_model
from cifarlab.train.engine import train
from cifarlab.train.optim import build_optimizer
from cifarlab.train.schedules import build_scheduler


class PILDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does: uint8 arrays in memory, a PIL image per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x.numpy(), y.numpy(), transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference(ds, cfg, device: torch.device, workers: int) -> dict:
    """The preset's recipe as a plain loop; cifarlab's builders give torch's own optimizer and scheduler."""
    torch.manual_seed(cfg.seed)
    epochs, a = cfg.train.epochs, cfg.augment
    norm = T.Normalize(*normalization(ds, cfg.data.normalize))
    aug = ([T.RandomCrop(32, padding=a.crop_padding)] if a.crop_padding else []) + (
        [T.RandomHorizontalFlip()] if a.hflip else []
    )
    train_tf = T.Compose([*aug, T.ToTensor(), norm])
    test_tf = T.Compose([T.ToTensor(), norm])
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    bs = cfg.data.batch_size
    train_dl = DataLoader(PILDataset(ds.train_x, ds.train_y, train_tf), batch_size=bs, shuffle=True, **kw)
    test_dl = DataLoader(PILDataset(ds.test_x, ds.test_y, test_tf), batch_size=1000, **kw)
    model = create_model(cfg.model.name, num_classes=len(ds.classes)).to(device)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, epochs, len(train_dl))
    epoch_s = []
    for _ in range(epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x, y in train_dl:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_dl:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return {
        "seconds_per_epoch": float(np.median(epoch_s)),
        "epoch_seconds": epoch_s,
        "test_acc": correct / len(ds.test_y),
    }


def recipe(a, out_dir: str):
    return load_config(
        a.preset,
        [
            f"data.n_items={a.n_items}",
            f"data.n_test={a.n_test}",
            f"train.epochs={a.epochs}",
            f"data.source={a.data}",
            f"data.device={a.device}",
            f"seed={a.seed}",
            "train.progress=false",
            "train.save_checkpoints=false",
            "train.log_tensorboard=false",
            f"train.compile={str(a.compile).lower()}",
            f"train.graph={a.graph}",
            f"out={out_dir}",
        ],
    )


def ours(cfg) -> dict:
    compile_ = cfg.train.compile
    s = train(cfg)
    from cifarlab.run import read_jsonl

    hist = read_jsonl(f"{s['run_dir']}/metrics.jsonl")
    secs = [h["seconds"] for h in hist]
    # With compile, the first epoch includes compilation: report it apart.
    steady = secs[1:] if compile_ and len(secs) > 1 else secs
    return {
        "seconds_per_epoch": float(np.median(steady)),
        "epoch_seconds": secs,
        "test_acc": s["final_test_acc"],
        "compile": compile_,
        "step": s["step"],  # graph: the captured step ran; eager: it did not (the run said why)
        "capture_seconds": s["capture_seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="resnet18_standard", help="resnet18_standard | vgg_a (batch 128 both)")
    p.add_argument("--graph", default="auto", help="train.graph: auto | on | off")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--n-items", type=int, default=0, help="smoke runs only: train on the first N images")
    p.add_argument("--n-test", type=int, default=0, help="smoke runs only: evaluate on the first N test images")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    ds = load_dataset(a.data)
    if a.n_items:
        ds = subset(ds, a.n_items)
    if a.n_test:
        ds = dataclasses.replace(ds, test_x=ds.test_x[: a.n_test], test_y=ds.test_y[: a.n_test])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = recipe(a, tmp)
        res = {
            "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
            "torch": torch.__version__,
            "preset": a.preset,
            "batch_size": cfg.data.batch_size,
            "epochs": a.epochs,
            "data": a.data,
        }
        res["cifarlab"] = ours(cfg)
        if not a.skip_reference:
            res["reference"] = reference(ds, cfg, torch.device(a.device), a.workers)
            res["speedup"] = res["reference"]["seconds_per_epoch"] / res["cifarlab"]["seconds_per_epoch"]
            res["acc_diff_points"] = 100 * (res["cifarlab"]["test_acc"] - res["reference"]["test_acc"])
    text = json.dumps(res, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
