"""Every source format, written tiny in tmp_path; the cache; and each bad input as a UserError."""

import gzip
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import load_dataset, sources
from cifarlab.data.sources import CIFAR10_CLASSES, FASHION_CLASSES
from cifarlab.errors import UserError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- writers of the official layouts


def write_cifar_dir(root: Path, n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cifar-10-batches-py/ as the official pickles: bytes keys, data (n, 3072) planar RGB, label lists."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        (d / name).write_bytes(pickle.dumps({b"batch_label": name.encode(), b"data": data, b"labels": labels}, 2))
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.array(labels))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, 2))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def tar_gz(src: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return out


def write_image_folder(root: Path, classes=("cat", "dog"), n=(3, 2), size=(6, 5), mode="RGB") -> dict:
    """root/{train,test}/<class>/<i>.png, lossless; returns {(split, class, i): pixels}."""
    pix = {}
    for split, count in zip(("train", "test"), n):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in [1, 2, 10][:count] if count <= 3 else range(count):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                a = RNG.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a, mode).save(root / split / c / f"{i}.png")
                pix[(split, c, i)] = a
    return pix


def idx_bytes(a: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x0800 + a.ndim if magic is None else magic
    return struct.pack(f">I{a.ndim}I", magic, *a.shape) + a.tobytes()


def write_idx(d: Path, n_train=7, n_test=4, gz=True, hw=(5, 4)) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (d / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    return arrays


def no_cache_files(cache: Path) -> bool:
    return not cache.exists() or not list(cache.rglob("*.pt"))


# ---------------------------------------------------------------- formats


def check_cifar(ds, ref):
    tx, ty, vx, vy = ref
    assert ds.name == "cifar10" and ds.classes == CIFAR10_CLASSES
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (15, 32, 32, 3)
    assert ds.train_y.dtype == torch.int64
    assert torch.equal(ds.train_x, torch.from_numpy(tx)) and torch.equal(ds.train_y, torch.from_numpy(ty))
    assert torch.equal(ds.test_x, torch.from_numpy(vx)) and torch.equal(ds.test_y, torch.from_numpy(vy))
    mean = tx.reshape(-1, 3).mean(0) / 255
    std = tx.reshape(-1, 3).std(0) / 255
    assert np.allclose(ds.mean, mean) and np.allclose(ds.std, std)


def test_cifar_pickle_dir_and_tar(tmp_path):
    ref = write_cifar_dir(tmp_path / "src")
    check_cifar(load_dataset(str(tmp_path / "src" / "cifar-10-batches-py"), tmp_path / "c1"), ref)
    check_cifar(load_dataset(str(tmp_path / "src"), tmp_path / "c2"), ref)  # the folder holding it
    tgz = tar_gz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    check_cifar(load_dataset(str(tgz), tmp_path / "c3"), ref)


def test_image_folder_dir_and_tar(tmp_path):
    pix = write_image_folder(tmp_path / "imgs" / "toy")
    tgz = tar_gz(tmp_path / "imgs" / "toy", tmp_path / "toy.tar.gz", "toy")
    for source in (tmp_path / "imgs" / "toy", tmp_path / "imgs", tgz):  # root, parent of root, tarball
        ds = load_dataset(str(source), tmp_path / "cache")
        assert ds.name == "toy" and ds.classes == ["cat", "dog"]
        assert ds.train_x.shape == (6, 5, 6, 3) and ds.test_x.shape == (4, 5, 6, 3)
        # natural order within a class (1, 2, 10), classes interleaved so prefixes are balanced
        assert ds.train_y.tolist() == [0, 1, 0, 1, 0, 1]
        want = [pix[("train", c, i)] for i in (1, 2, 10) for c in ("cat", "dog")]
        assert np.array_equal(ds.train_x.numpy(), np.stack(want))
        assert np.array_equal(ds.test_x[3].numpy(), pix[("test", "dog", 2)])


def test_image_folder_grayscale_and_jpeg(tmp_path):
    write_image_folder(tmp_path / "g", mode="L")
    ds = load_dataset(str(tmp_path / "g"), tmp_path / "cache")
    assert ds.train_x.shape == (6, 5, 6, 1) and len(ds.mean) == 1

    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    img = np.stack([smooth, smooth.T, 255 - smooth], -1)
    for split in ("train", "test"):
        (tmp_path / "j" / split / "a").mkdir(parents=True)
        Image.fromarray(img).save(tmp_path / "j" / split / "a" / "0.jpg", quality=95)
    ds = load_dataset(str(tmp_path / "j"), tmp_path / "cache")
    assert ds.train_x.shape == (1, 16, 16, 3)
    assert np.abs(ds.train_x[0].numpy().astype(int) - img).mean() < 3


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files(tmp_path, gz):
    arrays = write_idx(tmp_path / "MNIST" / "raw", gz=gz)
    for source in (tmp_path / "MNIST" / "raw", tmp_path / "MNIST", tmp_path):  # files, raw/, torchvision root
        ds = load_dataset(str(source), tmp_path / "cache")
        assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)]
        assert ds.train_x.shape == (7, 5, 4, 1) and ds.test_x.shape == (4, 5, 4, 1)
        assert np.array_equal(ds.train_x[..., 0].numpy(), arrays["train-images-idx3-ubyte"])
        assert np.array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_fashion_names_from_folder(tmp_path):
    write_idx(tmp_path / "fashion-mnist")
    ds = load_dataset(str(tmp_path / "fashion-mnist"), tmp_path / "cache")
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_CLASSES


def test_names_through_cifarlab_data(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    ref = write_cifar_dir(tmp_path / "src")
    root.mkdir()
    tar_gz(tmp_path / "src" / "cifar-10-batches-py", root / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    write_idx(root / "mnist")
    write_idx(root / "fashion-mnist", n_train=9)
    monkeypatch.setenv("CIFARLAB_DATA", str(root))
    check_cifar(load_dataset("cifar10", tmp_path / "cache"), ref)
    m, f = load_dataset("mnist", tmp_path / "cache"), load_dataset("fashion-mnist", tmp_path / "cache")
    assert (m.name, len(m.train_y), m.classes[0]) == ("mnist", 7, "0")
    assert (f.name, len(f.train_y), f.classes[0]) == ("fashion-mnist", 9, "T-shirt/top")

    monkeypatch.setenv("CIFARLAB_DATA", str(root / "fashion-mnist"))  # directly the IDX files
    assert load_dataset("fashion-mnist", tmp_path / "cache").classes == FASHION_CLASSES
    with pytest.raises(UserError, match="holds no cifar10"):
        load_dataset("cifar10", tmp_path / "cache")


def test_download_path_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    calls = []

    class FakeCIFAR10:  # what torchvision leaves on disk: root/cifar-10-batches-py/
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar_dir(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = load_dataset("cifar10", tmp_path / "cache")
    assert calls and calls[0][0] == str(tmp_path / "cache" / "downloads") and calls[0][2] is True
    assert ds.name == "cifar10" and len(ds.train_y) == 15
    n = len(calls)
    load_dataset("cifar10", tmp_path / "cache")
    assert len(calls) == n  # downloaded once


def test_download_impossible_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    for name, attr in (("cifar10", "CIFAR10"), ("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        monkeypatch.setattr(torchvision.datasets, attr, offline)
        with pytest.raises(UserError, match="CIFARLAB_DATA") as e:
            load_dataset(name, tmp_path / "cache")
        assert "\n" not in str(e.value) and name in str(e.value)
    assert no_cache_files(tmp_path / "cache")


# ---------------------------------------------------------------- the cache


def test_cache_reused_then_rebuilt_when_source_changes(tmp_path, monkeypatch):
    src = tmp_path / "mnist"
    a = write_idx(src)
    cache = tmp_path / "cache"
    ds1 = load_dataset(str(src), cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("mnist")

    real_read = sources.read
    monkeypatch.setattr(sources, "read", lambda s: pytest.fail("cache not reused"))
    ds2 = load_dataset(str(src), cache)
    assert ds2.fingerprint == ds1.fingerprint and torch.equal(ds2.train_x, ds1.train_x)

    # same size, new content and mtime: must be decoded again
    name = src / "train-images-idx3-ubyte.gz"
    b = a["train-images-idx3-ubyte"] ^ 0xFF
    name.write_bytes(gzip.compress(idx_bytes(b)))
    st = name.stat()
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = []
    monkeypatch.setattr(sources, "read", lambda s: rebuilt.append(s) or real_read(s))
    ds3 = load_dataset(str(src), cache)
    assert rebuilt and ds3.fingerprint != ds1.fingerprint
    assert np.array_equal(ds3.train_x[..., 0].numpy(), b)
    assert len(list(cache.glob("*.pt"))) == 1  # rebuilt in place
    assert not list(cache.glob(".*.tmp"))


def test_unreadable_cache_is_rebuilt(tmp_path):
    write_idx(tmp_path / "mnist")
    ds = load_dataset(str(tmp_path / "mnist"), tmp_path / "cache")
    (f,) = tmp_path.joinpath("cache").glob("*.pt")
    f.write_bytes(b"garbage")
    assert torch.equal(load_dataset(str(tmp_path / "mnist"), tmp_path / "cache").train_x, ds.train_x)


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    write_idx(tmp_path / "mnist")
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "envcache"))
    load_dataset(str(tmp_path / "mnist"))
    assert list((tmp_path / "envcache").glob("*.pt"))


# ---------------------------------------------------------------- bad inputs


def bad_sources(tmp: Path) -> dict:
    """name -> (source path, expected message fragment); each must fail without a cache file."""
    tmp.mkdir(parents=True)
    out = {}
    out["missing"] = (tmp / "nope.tar.gz", "not found")
    (tmp / "junk.tar.gz").write_bytes(b"this is not a gzip file at all" * 10)
    out["corrupt tar"] = (tmp / "junk.tar.gz", "corrupt or truncated")
    write_cifar_dir(tmp / "c")
    full = tar_gz(tmp / "c" / "cifar-10-batches-py", tmp / "full.tar.gz", "cifar-10-batches-py").read_bytes()
    (tmp / "cut.tar.gz").write_bytes(full[: len(full) // 2])
    out["truncated tar"] = (tmp / "cut.tar.gz", "corrupt or truncated")
    write_cifar_dir(tmp / "badpickle")
    p = tmp / "badpickle" / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:100])
    out["truncated pickle"] = (tmp / "badpickle", "data_batch_3 is corrupt")
    write_image_folder(tmp / "notest")
    for f in (tmp / "notest" / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((tmp / "notest" / "test").iterdir()):
        d.rmdir()
    out["no test classes"] = (tmp / "notest", "no classes under test/")
    (tmp / "onlytrain" / "train" / "a").mkdir(parents=True)
    out["no test folder"] = (tmp / "onlytrain", "both train/ and test/")
    (tmp / "empty" / "train").mkdir(parents=True)
    (tmp / "empty" / "test").mkdir(parents=True)
    out["no classes"] = (tmp / "empty", "has no classes")
    with tarfile.open(tmp / "noimg.tar.gz", "w:gz") as tf:
        (tmp / "readme.txt").write_text("hello")
        tf.add(tmp / "readme.txt", arcname="x/readme.txt")
    out["tar without images"] = (tmp / "noimg.tar.gz", "has no classes")
    write_idx(tmp / "count")
    (tmp / "count" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    out["idx count mismatch"] = (tmp / "count", "4 images but 3 labels")
    write_idx(tmp / "magic", gz=False)
    a = np.zeros((7, 5, 4), np.uint8)
    (tmp / "magic" / "train-images-idx3-ubyte").write_bytes(idx_bytes(a, magic=0x0801))
    out["idx bad magic"] = (tmp / "magic", "bad IDX magic number 0x00000801")
    write_idx(tmp / "short", gz=False)
    f = tmp / "short" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    out["idx truncated"] = (tmp / "short", "truncated")
    write_idx(tmp / "badgz")
    f = tmp / "badgz" / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:20])
    out["idx truncated gz"] = (tmp / "badgz", "corrupt or truncated")
    write_idx(tmp / "partial")
    (tmp / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    out["idx incomplete"] = (tmp / "partial", "missing t10k-labels-idx1-ubyte")
    (tmp / "notes.txt").write_text("x")
    out["plain file"] = (tmp / "notes.txt", "not a supported data file")
    (tmp / "img" / "train" / "a").mkdir(parents=True)
    (tmp / "img" / "test" / "a").mkdir(parents=True)
    (tmp / "img" / "train" / "a" / "0.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "img" / "test" / "a" / "0.png")
    out["undecodable image"] = (tmp / "img", "cannot decode image train/a/0.png")
    write_image_folder(tmp / "sizes")
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp / "sizes" / "train" / "dog" / "2.png")
    out["images of different sizes"] = (tmp / "sizes", "images differ in size")
    write_idx(tmp / "labels")
    (tmp / "labels" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(4, 12, np.uint8))))
    out["idx label out of range"] = (tmp / "labels", "labels span 12..12 but there are 10 classes")
    return out


def test_bad_inputs_raise_one_line_and_leave_no_cache(tmp_path):
    for what, (source, fragment) in bad_sources(tmp_path / "src").items():
        cache = tmp_path / "cache" / what.replace(" ", "_")
        with pytest.raises(UserError) as e:
            load_dataset(str(source), cache)
        msg = str(e.value)
        assert fragment in msg, f"{what}: {msg}"
        assert "\n" not in msg, what
        assert no_cache_files(cache), what


def test_unknown_name(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11", tmp_path)
