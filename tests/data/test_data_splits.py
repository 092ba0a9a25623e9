"""split_val, subset, normalization, data_info and the exact channel statistics."""

import dataclasses
import struct

import pytest
import torch

from cifarlab.config import DataConfig
from cifarlab.data import Dataset, channel_stats, data_info, normalization, split_val, subset
from cifarlab.errors import UserError


def toy(n=40, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 4, 4, c), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 4
    mean, std = channel_stats(x)
    return Dataset(x, y, x[:8].clone(), y[:8].clone(), ["a", "b", "c", "d"], "toy", "f00", mean, std)


def test_channel_stats_exact():
    ds = toy()
    f = ds.train_x.double().div(255).reshape(-1, 3)
    assert torch.allclose(torch.tensor(ds.mean, dtype=torch.float64), f.mean(0))
    assert torch.allclose(torch.tensor(ds.std, dtype=torch.float64), f.std(0, unbiased=False))


def test_split_val_seeded_and_disjoint():
    ds = toy()
    a, b, c = split_val(ds, 10, seed=0), split_val(ds, 10, seed=0), split_val(ds, 10, seed=1)
    assert a.val_x.shape == (10, 4, 4, 3) and a.train_x.shape == (30, 4, 4, 3)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    rows = {tuple(r.flatten().tolist()) for r in torch.cat([a.train_x, a.val_x])}
    assert rows == {tuple(r.flatten().tolist()) for r in ds.train_x}  # a partition of train
    assert a.mean == channel_stats(a.train_x)[0] != ds.mean  # stats of what is trained on
    assert split_val(ds, 0, 0) is ds and torch.equal(a.test_x, ds.test_x)
    with pytest.raises(UserError, match="val_size"):
        split_val(ds, 40, 0)


def test_subset_takes_the_first_items():
    ds = toy()
    s = subset(ds, 12)
    assert torch.equal(s.train_x, ds.train_x[:12]) and torch.equal(s.train_y, ds.train_y[:12])
    assert subset(ds, 0) is ds
    with pytest.raises(UserError, match="n_items"):
        subset(ds, 41)


def test_normalization_modes():
    ds = toy()
    assert normalization(ds, "dataset") == (ds.mean, ds.std)
    assert normalization(ds, "course") == ((0.5,) * 3, (0.5,) * 3)
    assert normalization(ds, "none") == ((0.0,) * 3, (1.0,) * 3)
    assert normalization(toy(c=1), "course") == ((0.5,), (0.5,))
    with pytest.raises(UserError, match="data.normalize"):
        normalization(ds, "imagenet")


def test_data_info_counts():
    info = data_info(split_val(toy(), 8, 0))
    assert info["image_shape"] == [4, 4, 3] and info["classes"] == ["a", "b", "c", "d"]
    sp = info["splits"]
    assert sp["train"]["total"] == 32 and sp["val"]["total"] == 8 and sp["test"]["total"] == 8
    assert sum(sp["train"]["per_class"].values()) + sum(sp["val"]["per_class"].values()) == 40
    assert sp["test"]["per_class"] == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert len(info["mean"]) == 3 and len(info["std"]) == 3


def test_dataset_from_config(tmp_path):
    from cifarlab.data import dataset_from_config

    (tmp_path / "mnist").mkdir()
    for split, n in (("train", 20), ("t10k", 3)):
        images = struct.pack(">4I", 0x803, n, 2, 2) + bytes(4 * n)
        labels = struct.pack(">2I", 0x801, n) + bytes(n)
        (tmp_path / "mnist" / f"{split}-images-idx3-ubyte").write_bytes(images)
        (tmp_path / "mnist" / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    cfg = DataConfig(source=str(tmp_path / "mnist"), cache_dir=str(tmp_path / "cache"), val_size=5, n_items=10)
    ds = dataset_from_config(cfg, seed=0)
    assert len(ds.train_y) == 10 and len(ds.val_y) == 5
    assert dataclasses.asdict(cfg)["source"] == str(tmp_path / "mnist")


def test_n_items_and_val_size_pick_these_images():
    """The one preparation path (data.prepare_splits, used by the engine and dataset_from_config):
    a seeded validation part of the full training set first, then the first n_items of the rest."""
    from cifarlab.data import dataset_from_config, prepare_splits

    n = 40
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()  # image i is all i
    mean, std = channel_stats(x)
    ds = Dataset(x, torch.arange(n) % 4, x[:4].clone(), torch.arange(4), ["a", "b", "c", "d"], "ids", "f", mean, std)
    ids = lambda t: t[:, 0, 0, 0].tolist()  # noqa: E731
    cfg = DataConfig(n_items=10, val_size=5)
    for got in (prepare_splits(ds, n_items=10, val_size=5, seed=0), dataset_from_config(cfg, seed=0, dataset=ds)):
        assert ids(got.val_x) == [4, 5, 11, 16, 21]
        assert ids(got.train_x) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 12]
        assert got.train_y.tolist() == [i % 4 for i in ids(got.train_x)]
        assert got.mean == channel_stats(got.train_x)[0]  # stats of what is trained on
    other = prepare_splits(ds, n_items=10, val_size=5, seed=1)
    assert ids(other.val_x) == [5, 11, 12, 17, 36] and ids(other.train_x) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_engine_trains_on_the_prepared_split(tmp_path):
    """The engine goes through dataset_from_config: with n_items=10, val_size=5 it sees 10 training images."""
    import json

    from conftest import tiny_dataset

    from cifarlab.config import Config, from_dict
    from cifarlab.train.engine import train

    cfg = from_dict(
        Config,
        {
            "name": "split",
            "out": str(tmp_path),
            "seed": 0,
            "model": {"name": "plainnet", "args": {"stages": [4]}},
            "data": {"batch_size": 5, "device": "cpu", "n_items": 10, "val_size": 5},
            "train": {"epochs": 1, "progress": False, "log_tensorboard": False, "save_checkpoints": False},
        },
    )
    s = train(cfg, run_dir=tmp_path / "r", dataset=tiny_dataset(n_train=40, n_test=8))
    line = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["images"] == 10 and "val_acc" in line and s["final_test_acc"] is not None
