"""Data from Python: `load_data(source)` gives the uint8 dataset, `loaders(source, ...)` the batches
the engine trains on (whole split on the device, augmentation there, normalized floats out)."""

from __future__ import annotations

from typing import Any

from ..config import AugmentConfig, from_dict
from ..data import Augment, Dataset, DeviceLoader, load_dataset, normalization, prepare_splits
from ..train.device import pick_device
from .errors import speaks_python


@speaks_python
def load_data(
    source: str | Dataset = "cifar10",
    *,
    cache_dir: str | None = None,
    n_items: int = 0,
    n_test: int = 0,
    val_size: int = 0,
    seed: int = 0,
) -> Dataset:
    """A dataset: a name (cifar10, cifar100, svhn, mnist, fashion-mnist; read from $CIFARLAB_DATA when
    set, else downloaded) or a path, decoded once into the cache.

    Returns a `Dataset`: `train_x`/`test_x` uint8 N x H x W x C tensors, `train_y`/`test_y`, `classes`,
    `mean`/`std`. n_items / n_test keep the first images of a split, val_size holds a seeded part out
    (`val_x`, `val_y`), as the config keys data.n_items, data.n_test and data.val_size do.
    """
    ds = source if isinstance(source, Dataset) else load_dataset(str(source), cache_dir)
    return prepare_splits(ds, n_items, val_size, seed, n_test=n_test)


@speaks_python
def loaders(
    source: str | Dataset = "cifar10",
    batch_size: int = 128,
    *,
    augment: dict[str, Any] | None = None,
    device: str = "auto",
    normalize: str = "dataset",
    eval_batch_size: int = 1000,
    seed: int = 0,
    n_items: int = 0,
    n_test: int = 0,
) -> tuple[DeviceLoader, DeviceLoader]:
    """(train, test) loaders: iterate for (x, y) batches of normalized N x C x H x W floats on `device`.

    augment: the config's augment section as a dict, e.g. dict(crop_padding=4, hflip=True, cutout=8);
    the train loader reshuffles per epoch (call `.set_epoch(epoch)` for a new order).
    normalize: dataset (the train split's mean/std) | course (0.5/0.5) | none.
    """
    ds = load_data(source, n_items=n_items, n_test=n_test, seed=seed)
    mean, std = normalization(ds, normalize)
    dev = pick_device(device)
    aug = Augment(from_dict(AugmentConfig, dict(augment or {}), "augment."))
    kw: dict[str, Any] = dict(seed=seed, device=dev, mean=mean, std=std)
    train = DeviceLoader(ds.train_x, ds.train_y, batch_size, shuffle=True, augment=aug, **kw)
    test = DeviceLoader(ds.test_x, ds.test_y, eval_batch_size, shuffle=False, **kw)
    return train, test
