"""CIFAR-100 (fine and coarse) and SVHN, written tiny in the official formats; bad files; a tiny run on each."""

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from cifarlab.data import load_dataset, sources
from cifarlab.data.cache import cache_file
from cifarlab.errors import UserError

FINE = [f"fine{i:02d}" for i in range(100)]
COARSE = [f"coarse{i:02d}" for i in range(20)]


# ---------------------------------------------------------------- writers of the official layouts


def cifar100_blobs(n_train: int = 120, n_test: int = 40, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """cifar-100-python/{train,test,meta} as the official pickles; every fine class occurs in train."""
    rng = np.random.default_rng(seed)
    blobs, ref = {}, {}
    for part, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = (np.arange(n) % 100).tolist()
        coarse = [f // 5 for f in fine]
        d = {b"filenames": [f"{i}.png".encode() for i in range(n)], b"batch_label": part.encode(),
             b"fine_labels": fine, b"coarse_labels": coarse, b"data": data}  # fmt: skip
        blobs[part] = pickle.dumps(d, 2)
        ref[part] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(fine), np.array(coarse))
    meta = {b"fine_label_names": [c.encode() for c in FINE], b"coarse_label_names": [c.encode() for c in COARSE]}
    blobs["meta"] = pickle.dumps(meta, 2)
    return blobs, ref


def write_cifar100_dir(root: Path, **kw) -> tuple[Path, dict]:
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    blobs, ref = cifar100_blobs(**kw)
    for name, b in blobs.items():
        (d / name).write_bytes(b)
    return d, ref


def write_cifar100_tar(path: Path, **kw) -> tuple[Path, dict]:
    """cifar-100-python.tar.gz as published: one folder cifar-100-python/ with the three pickles."""
    blobs, ref = cifar100_blobs(**kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, b in blobs.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    return path, ref


def write_svhn(d: Path, n_train: int = 30, n_test: int = 12, seed: int = 0) -> dict:
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = the digit 0)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    ref = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, every digit present
        scipy.io.savemat(d / f"{split}_32x32.mat", {"X": x, "y": y})
        ref[split] = (x, y)
    return ref


def check_cifar100(ds, ref, coarse: bool) -> None:
    k = 2 if coarse else 1
    assert ds.name == ("cifar100-coarse" if coarse else "cifar100")
    assert ds.classes == (COARSE if coarse else FINE)
    assert ds.train_x.dtype == torch.uint8 and tuple(ds.train_x.shape) == (120, 32, 32, 3)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        assert np.array_equal(x.numpy(), ref[split][0])
        assert np.array_equal(y.numpy(), ref[split][k])


# ---------------------------------------------------------------- CIFAR-100


def test_cifar100_tarball_fine_and_coarse(tmp_path):
    tar, ref = write_cifar100_tar(tmp_path / "cifar-100-python.tar.gz")
    check_cifar100(load_dataset(str(tar), tmp_path / "cache"), ref, coarse=False)
    check_cifar100(load_dataset(f"cifar100:{tar}", tmp_path / "cache"), ref, coarse=False)
    check_cifar100(load_dataset(f"cifar100-coarse:{tar}", tmp_path / "cache"), ref, coarse=True)
    # the cache keeps them apart: fine, then coarse, then fine again from the cache
    check_cifar100(load_dataset(str(tar), tmp_path / "cache"), ref, coarse=False)


def test_cifar100_folder_fine_and_coarse(tmp_path):
    d, ref = write_cifar100_dir(tmp_path / "src")
    check_cifar100(load_dataset(str(d), tmp_path / "cache"), ref, coarse=False)
    check_cifar100(load_dataset(str(tmp_path / "src"), tmp_path / "cache"), ref, coarse=False)  # the parent
    check_cifar100(load_dataset(f"cifar100-coarse:{d}", tmp_path / "cache"), ref, coarse=True)


def test_fine_and_coarse_have_separate_cache_files(tmp_path):
    tar, _ = write_cifar100_tar(tmp_path / "cifar-100-python.tar.gz")
    dl = tmp_path / "dl"
    fine, coarse = sources.locate(str(tar), dl), sources.locate(f"cifar100-coarse:{tar}", dl)
    assert fine.name != coarse.name == "cifar100-coarse"
    assert cache_file(fine, tmp_path) != cache_file(coarse, tmp_path)
    from cifarlab.data.cache import fingerprint

    assert fingerprint(fine) != fingerprint(coarse)


def test_names_through_cifarlab_data(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    _, ref = write_cifar100_tar(root / "cifar-100-python.tar.gz")
    svhn = write_svhn(root / "svhn")
    monkeypatch.setenv("CIFARLAB_DATA", str(root))
    check_cifar100(load_dataset("cifar100", tmp_path / "cache"), ref, coarse=False)
    check_cifar100(load_dataset("CIFAR-100", tmp_path / "cache"), ref, coarse=False)
    check_cifar100(load_dataset("cifar100-coarse", tmp_path / "cache"), ref, coarse=True)
    s = load_dataset("svhn", tmp_path / "cache")
    assert s.name == "svhn" and len(s.train_y) == len(svhn["train"][1])
    with pytest.raises(UserError, match="holds no cifar10"):
        load_dataset("cifar10", tmp_path / "cache")
    monkeypatch.setenv("CIFARLAB_DATA", str(root / "svhn"))  # directly the .mat files
    assert load_dataset("svhn", tmp_path / "cache").name == "svhn"
    with pytest.raises(UserError, match="holds no cifar100"):
        load_dataset("cifar100", tmp_path / "cache")


def test_resolve_source_keeps_the_label_set(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    write_cifar100_tar(root / "cifar-100-python.tar.gz")
    write_svhn(root / "svhn")
    monkeypatch.chdir(tmp_path)
    tar = str((root / "cifar-100-python.tar.gz").resolve())
    assert sources.resolve_source(str(root), "cifar100") == tar
    assert sources.resolve_source(str(root), "cifar100-coarse") == f"cifar100-coarse:{tar}"
    assert sources.resolve_source("cifar100-coarse:shared/cifar-100-python.tar.gz") == f"cifar100-coarse:{tar}"
    assert sources.resolve_source(str(root), "svhn") == str((root / "svhn").resolve())
    assert sources.resolve_source("cifar100-coarse", "cifar10") == "cifar100-coarse"


def test_name_prefix_is_checked_against_the_files(tmp_path):
    d, _ = write_cifar100_dir(tmp_path / "c100")
    write_svhn(tmp_path / "svhn")
    with pytest.raises(UserError, match="not svhn"):
        load_dataset(f"svhn:{d}", tmp_path / "cache")
    with pytest.raises(UserError, match="not cifar100"):
        load_dataset(f"cifar100:{tmp_path / 'svhn'}", tmp_path / "cache")
    tar, _ = write_cifar100_tar(tmp_path / "c100.tar.gz")
    with pytest.raises(UserError, match="holds no SVHN files"):
        load_dataset(f"svhn:{tar}", tmp_path / "cache")


def test_download_path_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    calls = []

    class FakeCIFAR100:  # what torchvision leaves on disk: root/cifar-100-python/
        def __init__(self, root, train, download):
            calls.append(("cifar100", root, train))
            write_cifar100_dir(Path(root))

    class FakeSVHN:  # torchvision's SVHN keeps the .mat files in root itself
        def __init__(self, root, split, download):
            calls.append(("svhn", root, split))
            write_svhn(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)
    dl = tmp_path / "cache" / "downloads"
    assert load_dataset("cifar100-coarse", tmp_path / "cache").classes == COARSE
    assert calls[0] == ("cifar100", str(dl), True)
    n = len(calls)
    assert load_dataset("cifar100", tmp_path / "cache").classes == FINE
    assert len(calls) == n  # downloaded once, read both ways
    assert load_dataset("svhn", tmp_path / "cache").name == "svhn"
    assert ("svhn", str(dl / "svhn"), "train") in calls and ("svhn", str(dl / "svhn"), "test") in calls


@pytest.mark.parametrize("name", ["cifar100", "svhn"])
def test_download_impossible_says_what_to_do(tmp_path, monkeypatch, name):
    import urllib.error

    import torchvision.datasets

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, name.upper(), offline)
    with pytest.raises(UserError, match="CIFARLAB_DATA") as e:
        load_dataset(name, tmp_path / "cache")
    assert "\n" not in str(e.value) and name in str(e.value)


@pytest.mark.parametrize("part", ["train", "test", "meta"])
def test_cifar100_truncated_pickle_is_a_user_error(tmp_path, part):
    d, _ = write_cifar100_dir(tmp_path / "src")
    (d / part).write_bytes((d / part).read_bytes()[:50])
    with pytest.raises(UserError, match=f"CIFAR-100 file {part} is corrupt") as e:
        load_dataset(str(d), tmp_path / "cache")
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_cifar100_bad_contents_are_user_errors(tmp_path):
    d, _ = write_cifar100_dir(tmp_path / "src")
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"a"]}, 2))
    with pytest.raises(UserError, match="coarse_label_names"):
        load_dataset(f"cifar100-coarse:{d}", tmp_path / "cache")
    with pytest.raises(UserError, match="labels span 0..99 but there are 1 classes"):
        load_dataset(str(d), tmp_path / "cache")
    (d / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, 2))
    with pytest.raises(UserError, match=r"file train has data \(2, 100\)"):
        load_dataset(str(d), tmp_path / "cache")


def test_cifar100_truncated_tarball_is_a_user_error(tmp_path):
    tar, _ = write_cifar100_tar(tmp_path / "cifar-100-python.tar.gz")
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated archive") as e:
        load_dataset(f"cifar100-coarse:{tar}", tmp_path / "cache")
    assert str(tar) in str(e.value)


# ---------------------------------------------------------------- SVHN


def test_svhn_folder_maps_10_to_0_and_is_nhwc(tmp_path):
    ref = write_svhn(tmp_path / "svhn")
    ds = load_dataset(str(tmp_path / "svhn"), tmp_path / "cache")
    assert ds.name == "svhn" and ds.classes == [str(i) for i in range(10)]
    assert ds.train_x.dtype == torch.uint8 and tuple(ds.train_x.shape) == (30, 32, 32, 3)
    x, y = ref["train"]
    assert torch.equal(ds.train_x[7], torch.from_numpy(x[..., 7]))  # image 7 is X[:, :, :, 7]
    want = y.reshape(-1).astype(np.int64) % 10
    assert np.array_equal(ds.train_y.numpy(), want) and int(ds.train_y[9]) == 0  # y=10 is the digit 0
    assert set(ds.test_y.tolist()) == set(range(10)) and tuple(ds.test_x.shape) == (12, 32, 32, 3)
    assert torch.equal(ds.test_x, torch.from_numpy(ref["test"][0].transpose(3, 0, 1, 2).copy()))


def test_svhn_tarball(tmp_path):
    write_svhn(tmp_path / "svhn")
    with tarfile.open(tmp_path / "svhn.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "svhn", arcname="svhn")
    ds = load_dataset(str(tmp_path / "svhn.tar.gz"), tmp_path / "cache")
    assert ds.name == "svhn" and len(ds.train_y) == 30


def test_svhn_corrupt_or_missing_files_are_user_errors(tmp_path):
    d = tmp_path / "svhn"
    write_svhn(d)
    f = d / "test_32x32.mat"
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(UserError, match="SVHN file test_32x32.mat is corrupt or truncated") as e:
        load_dataset(str(d), tmp_path / "cache")
    assert "\n" not in str(e.value)
    f.write_bytes(b"not a matlab file at all" * 10)
    with pytest.raises(UserError, match="test_32x32.mat is corrupt"):
        load_dataset(str(d), tmp_path / "cache")
    scipy.io.savemat(f, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)})
    with pytest.raises(UserError, match="and 3 labels"):
        load_dataset(str(d), tmp_path / "cache")
    scipy.io.savemat(f, {"images": np.zeros((4, 3), np.uint8)})
    with pytest.raises(UserError, match="lacks the arrays X and y"):
        load_dataset(str(d), tmp_path / "cache")
    f.unlink()
    with pytest.raises(UserError, match="missing test_32x32.mat"):
        load_dataset(str(d), tmp_path / "cache")


# ---------------------------------------------------------------- end to end: the model sizes its head from the data


def _train(tmp_path: Path, source: str) -> tuple[dict, torch.Tensor]:
    from cifarlab.config import Config, from_dict
    from cifarlab.train.engine import train

    cfg = from_dict(Config, {
        "name": "tiny", "out": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": "plainnet", "args": {"stages": [4, 8]}},
        "data": {"source": source, "n_items": 24, "batch_size": 8, "eval_batch_size": 64, "device": "cpu",
                 "cache_dir": str(tmp_path / "cache")},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 1, "progress": False, "log_tensorboard": False},
    })  # fmt: skip
    run = tmp_path / "run"
    train(cfg, run_dir=run)
    summary = json.loads((run / "summary.json").read_text())
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["model"]
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2][-1]
    return summary, last


@pytest.mark.parametrize("kind, classes", [("cifar100", 100), ("cifar100-coarse", 20), ("svhn", 10)])
def test_tiny_training_run(tmp_path, kind, classes):
    if kind == "svhn":
        write_svhn(tmp_path / "svhn", n_train=24, n_test=10)
        source = str(tmp_path / "svhn")
    else:
        tar, _ = write_cifar100_tar(tmp_path / "cifar-100-python.tar.gz", n_train=24, n_test=10)
        source = f"{kind}:{tar}"
    summary, last = _train(tmp_path, source)
    assert last.shape[0] == classes  # the head has one output per class of the data
    assert summary["dataset"] == kind and 0.0 <= summary["final_test_acc"] <= 1.0  # the name recorded
