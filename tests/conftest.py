import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import Dataset

# Two cores are all CI has: keep every test single-threaded so parallel work does not thrash.
torch.set_num_threads(1)

SHARED = Path(os.environ.get("CIFARLAB_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def shared_file(name: str) -> Path:
    """A file of the offline data (CIFARLAB_SHARED, default ../shared/data); skip with the reason if absent."""
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"needs {p} (set CIFARLAB_SHARED to the shared data folder)")
    return p


def make_image_folder(root: Path, classes=("cat", "dog"), n_train=24, n_test=8, size=16, seed=0) -> Path:
    """A tiny ImageFolder with train/ and test/: class k has a brighter left/right half."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                img[:, k * size // 2 : (k + 1) * size // 2] += 120
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def tiny_dataset(n_train=256, n_test=64, classes=4, seed=0):
    """A Dataset of 16x16 images whose class is a bright quadrant: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = torch.randint(0, 80, (n, 16, 16, 3), generator=g, dtype=torch.uint8)
        for k in range(classes):
            r, c = divmod(k, 2)
            x[y == k, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 150
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    mean = tuple((xtr.float() / 255).mean((0, 1, 2)).tolist())
    std = tuple((xtr.float() / 255).std((0, 1, 2)).tolist())
    return Dataset(
        train_x=xtr,
        train_y=ytr,
        test_x=xte,
        test_y=yte,
        classes=[f"c{k}" for k in range(classes)],
        name="tiny",
        fingerprint="tiny",
        mean=mean,
        std=std,
    )


def train_tiny_run(root: Path, folder: Path, **train_opts) -> Path:
    """plainnet (stages 8, 16) trained with Adam on an image folder into root/run, cache in root/cache."""
    from cifarlab.config import Config, from_dict
    from cifarlab.train.engine import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARLAB_CACHE", str(root / "cache"))
        cfg = from_dict(
            Config,
            {
                "name": "tiny",
                "out": str(root),
                "seed": 0,
                "model": {"name": "plainnet", "args": {"stages": [8, 16]}},
                "data": {"source": str(folder), "batch_size": 16, "device": "cpu"},
                "optim": {"name": "adam", "lr": 0.01},
                "train": {"progress": False, "log_tensorboard": False, **train_opts},
            },
        )
        train(cfg, run_dir=root / "run")
    return root / "run"
