"""The data layer: sources -> uint8 cache -> Dataset -> DeviceLoader (augmentation on the device).

ds = load_dataset("cifar10")                       # decoded once, then read from the cache
ds = prepare_splits(ds, n_items=10000, val_size=5000, seed=0)  # held-out part, then first n
mean, std = normalization(ds, "dataset")
train = DeviceLoader(ds.train_x, ds.train_y, 512, shuffle=True, drop_last=True, seed=0,
                     device="cuda", mean=mean, std=std, augment=Augment(cfg.augment))
for epoch in range(epochs):
    train.set_epoch(epoch)                         # order + augmentation = f(seed, epoch)
    for x, y in train: loss = mixed_loss(F.cross_entropy, model(x), y)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from . import sources
from .augment import Augment, Mixed, mixed_loss
from .cache import cache_file, default_cache_dir, fingerprint, read_cache, write_cache
from .loader import DeviceLoader

__all__ = [
    "Augment", "Dataset", "DeviceLoader", "Mixed", "channel_stats", "data_info", "dataset_from_config",
    "load_dataset", "mixed_loss", "normalization", "prepare_splits", "require_train", "split_val", "subset",
]  # fmt: skip


@dataclass
class Dataset:
    train_x: torch.Tensor  # uint8 (N, H, W, C), CPU
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    name: str  # cifar10 | cifar10-jpeg (the re-encoded copy: never quote it as CIFAR-10) | mnist | ...
    fingerprint: str
    mean: tuple[float, ...]  # per channel, [0, 1] units, of the train split
    std: tuple[float, ...]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    origin: str = ""  # where it was read: the file or folder a name such as cifar10 resolved to
    arrays_sha: str = ""  # fingerprint of the arrays themselves (see arrays_fingerprint), set by dataset_from_config

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:  # (H, W, C)
        return tuple(self.train_x.shape[1:])  # a test-only source's empty train_x keeps the shape

    @property
    def test_only(self) -> bool:
        """Evaluation data only (an .npz, test/ alone, class folders): train_x is 0 x H x W x C."""
        return len(self.train_y) == 0


def load_dataset(source: str, cache_dir: str | Path | None = None, classes: list[str] | None = None) -> Dataset:
    """A dataset name (cifar10, cifar100, svhn, mnist, fashion-mnist) or a path, decoded once and cached.

    `classes` are the caller's class names (a checkpoint's): a source without names of its own (an .npz
    without `classes`) takes them, and one whose names are all among them has its labels renumbered to
    their order. Without them such a source's classes are "0".."K-1".
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    src = sources.locate(str(source), cache_dir / "downloads")
    fp = fingerprint(src)
    path = cache_file(src, cache_dir)
    blob = read_cache(path, fp)
    if blob is None:
        arr = sources.read(src)
        # test-only data has no train split: its test images' stats keep `data info` meaningful
        # (evaluation normalizes with the checkpoint's own stored mean/std)
        mean, std = channel_stats(arr.train_x if len(arr.train_y) else arr.test_x)
        blob = dict(vars(arr), mean=list(mean), std=list(std), fingerprint=fp)
        try:
            write_cache(path, blob)
        except OSError as e:  # a read-only cache folder costs speed next time, not the run
            print(f"cifarlab: warning: could not write the data cache {path} ({e})", file=sys.stderr)
    ds = Dataset(
        blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], list(blob["classes"]), blob["name"],
        blob["fingerprint"], tuple(blob["mean"]), tuple(blob["std"]), origin=str(src.path.resolve()),
    )  # fmt: skip
    return _name_classes(ds, list(classes or []))


def _name_classes(ds: Dataset, classes: list[str]) -> Dataset:
    if not ds.classes:  # the source names none: the caller's names, else 0..K-1
        labels = torch.cat([ds.train_y, ds.test_y])
        k = int(labels.max()) + 1 if len(labels) else 0
        names = classes or [str(i) for i in range(k)]
        if k > len(names):
            raise UserError(f"{ds.name}: labels go up to {k - 1} but there are only {len(names)} class names")
        return dataclasses.replace(ds, classes=names)
    if not classes or ds.classes == classes or not set(ds.classes) <= set(classes):
        return ds
    # e.g. test/ holding a few of the checkpoint's classes: label k means ds.classes[k], renumber to theirs
    to = torch.tensor([classes.index(c) for c in ds.classes], dtype=torch.int64)
    return dataclasses.replace(ds, train_y=to[ds.train_y], test_y=to[ds.test_y], classes=list(classes))


def dataset_from_config(cfg, seed: int, dataset: Dataset | None = None) -> Dataset:
    """The data a DataConfig asks for: `dataset` (or cfg.source, loaded) split by prepare_splits."""
    ds = dataset if dataset is not None else load_dataset(cfg.source, cfg.cache_dir or None)
    if not ds.arrays_sha:  # of the whole source, before the config's splits
        ds = dataclasses.replace(ds, arrays_sha=arrays_fingerprint(ds))
    return prepare_splits(ds, cfg.n_items, cfg.val_size, seed, n_test=cfg.n_test)


def arrays_fingerprint(ds: Dataset) -> str:
    """sha256 of the train and test images and labels with their shapes: the same data read from another
    place matches, other images or labels do not. About 0.15 s for CIFAR-10's 180 MB."""
    h = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        a = t.contiguous().numpy()
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a)  # the buffer itself: no copy
    return h.hexdigest()[:16]


def prepare_splits(ds: Dataset, n_items: int, val_size: int, seed: int, n_test: int = 0) -> Dataset:
    """The one data preparation path: a seeded val_size part of the full training set is held out
    first, then the first n_items of what remains are trained on (0 = all of it); n_test > 0 keeps
    the first n_test test images (a tiny run need not score all 10,000)."""
    require_train(ds)
    ds = subset(split_val(ds, val_size, seed), n_items)
    if 0 < n_test < len(ds.test_y):
        ds = dataclasses.replace(ds, test_x=ds.test_x[:n_test], test_y=ds.test_y[:n_test])
    return ds


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std in [0, 1] units from a 256-bin histogram (no float copy of x)."""
    if x.shape[0] == 0:
        raise UserError("the training split is empty")
    levels = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[-1]):
        h = torch.bincount(x[..., c].reshape(-1), minlength=256).double()
        m = (h * levels).sum() / h.sum()
        v = (h * (levels - m) ** 2).sum() / h.sum()
        mean.append(float(m) / 255)
        std.append(math.sqrt(float(v)) / 255)
    return tuple(mean), tuple(std)


def split_val(ds: Dataset, val_size: int, seed: int) -> Dataset:
    """Move a seeded random val_size part of train into val_x/val_y (both parts keep file order)."""
    if val_size <= 0:
        return ds
    if ds.val_x is not None:
        raise ValueError("dataset already has a validation split")
    n = len(ds.train_y)
    if val_size >= n:
        raise UserError(f"data.val_size={val_size} leaves no training images (the train split has {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, keep = perm[:val_size].sort().values, perm[val_size:].sort().values
    return _with_train(ds, ds.train_x[keep], ds.train_y[keep], val_x=ds.train_x[val], val_y=ds.train_y[val])


def subset(ds: Dataset, n_items: int) -> Dataset:
    """The first n_items training images (0 = all)."""
    require_train(ds)
    n = len(ds.train_y)
    if n_items <= 0 or n_items == n:
        return ds
    if n_items > n:
        raise UserError(f"data.n_items={n_items} exceeds the {n} training images")
    return _with_train(ds, ds.train_x[:n_items], ds.train_y[:n_items])


def require_train(ds: Dataset) -> None:
    """Training (or anything that reads train images) on evaluation-only data is a user error."""
    if ds.test_only:
        raise UserError(
            f"{ds.name} is test-only data (no training split): use it to evaluate a checkpoint"
            " (eval, predict, inspect), and train on a source with training images"
        )


def _with_train(ds: Dataset, x: torch.Tensor, y: torch.Tensor, **kw) -> Dataset:
    # mean/std describe the images actually trained on
    mean, std = channel_stats(x)
    return dataclasses.replace(ds, train_x=x.contiguous(), train_y=y, mean=mean, std=std, **kw)


def normalization(ds: Dataset, mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """dataset: the train split's mean/std; course: 0.5/0.5 (the course loader); none: 0/1."""
    c = ds.train_x.shape[-1]
    if mode == "dataset":
        return ds.mean, tuple(s if s > 0 else 1.0 for s in ds.std)  # a constant channel: nothing to scale
    if mode == "course":
        return (0.5,) * c, (0.5,) * c
    if mode == "none":
        return (0.0,) * c, (1.0,) * c
    raise UserError(f"data.normalize must be dataset, course or none, got '{mode}'")


def data_info(ds: Dataset) -> dict:
    """What `cifarlab data info` prints: counts per class per split, shape, mean/std."""
    splits = {"train": ds.train_y, "test": ds.test_y}
    if ds.val_y is not None:
        splits["val"] = ds.val_y
    counts = {}
    for split, y in splits.items():
        per = torch.bincount(y, minlength=len(ds.classes)).tolist()
        counts[split] = {"total": len(y), "per_class": dict(zip(ds.classes, per))}
    return {
        "name": ds.name,
        "fingerprint": ds.fingerprint,
        "image_shape": list(ds.image_shape),
        "classes": list(ds.classes),
        "splits": counts,
        "mean": [round(m, 4) for m in ds.mean],
        "std": [round(s, 4) for s in ds.std],
    }
