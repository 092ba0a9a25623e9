"""ResNet-18, standard recipe: cifarlab's engine against the usual PyTorch way, in one run.

The usual way: a torch DataLoader over PIL images with torchvision transforms (RandomCrop 32 pad 4,
RandomHorizontalFlip, ToTensor, Normalize), fp32, the same model, optimizer and schedule.
cifarlab: the same recipe through `cifarlab.train.engine.train` (data on the GPU as uint8,
augmentation on device, bf16 autocast, channels_last).

    python bench/throughput.py --data .data/cifar10-jpeg.tar.gz --epochs 30 --out $OUT/throughput.json

Writes JSON with seconds per epoch and test accuracy of both, and the speed-up.
"""

from __future__ import annotations

import argparse
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
from cifarlab.data import load_dataset, subset
from cifarlab.models import create_model
from cifarlab.train.engine import train


class PILDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does: uint8 arrays in memory, a PIL image per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x.numpy(), y.numpy(), transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference(ds, epochs: int, device: torch.device, workers: int, seed: int) -> dict:
    torch.manual_seed(seed)
    norm = T.Normalize(ds.mean, ds.std)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    test_tf = T.Compose([T.ToTensor(), norm])
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    train_dl = DataLoader(PILDataset(ds.train_x, ds.train_y, train_tf), batch_size=128, shuffle=True, **kw)
    test_dl = DataLoader(PILDataset(ds.test_x, ds.test_y, test_tf), batch_size=1000, **kw)
    model = create_model("resnet18", num_classes=len(ds.classes)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train_dl))
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


def ours(data: str, epochs: int, device: str, seed: int, compile_: bool, out_dir: str, n_items: int) -> dict:
    cfg = load_config(
        "resnet18_standard",
        [
            f"data.n_items={n_items}",
            f"train.epochs={epochs}",
            f"data.source={data}",
            f"data.device={device}",
            f"seed={seed}",
            "train.progress=false",
            "train.save_checkpoints=false",
            "train.log_tensorboard=false",
            f"train.compile={str(compile_).lower()}",
            f"out={out_dir}",
        ],
    )
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
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="cifar10")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--n-items", type=int, default=0, help="smoke runs only: train on the first N images")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    ds = load_dataset(a.data)
    if a.n_items:
        ds = subset(ds, a.n_items)
    with tempfile.TemporaryDirectory() as tmp:
        res = {
            "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
            "torch": torch.__version__,
            "epochs": a.epochs,
            "data": a.data,
        }
        res["cifarlab"] = ours(a.data, a.epochs, a.device, a.seed, a.compile, tmp, a.n_items)
        if not a.skip_reference:
            res["reference"] = reference(ds, a.epochs, torch.device(a.device), a.workers, a.seed)
            res["speedup"] = res["reference"]["seconds_per_epoch"] / res["cifarlab"]["seconds_per_epoch"]
            res["acc_diff_points"] = 100 * (res["cifarlab"]["test_acc"] - res["reference"]["test_acc"])
    text = json.dumps(res, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
