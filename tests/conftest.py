import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
                img[:, k * size // 2:(k + 1) * size // 2] += 120
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root
