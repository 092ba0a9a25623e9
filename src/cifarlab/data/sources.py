"""Read every supported source into uint8 arrays: images N x H x W x C, int64 labels, class names.

Sources: the names cifar10 / cifar100 / cifar100-coarse / svhn / mnist / fashion-mnist (torchvision
download, or the local copy that CIFARLAB_DATA points to), the official CIFAR-10 pickle batches and
CIFAR-100 pickles (folder or tarball), SVHN's train_32x32.mat and test_32x32.mat (a folder holding
both, or a tarball; extra_32x32.mat is not read), an image folder with train/ and test/ (folder or
tarball), and MNIST-style IDX files (raw or gzipped).

Test-only sources, for evaluating a checkpoint (eval, predict, the analyses), not for training: an
image folder with test/ but no train/ (folder or tarball), a folder of class subfolders (class-dir),
and an .npz of `images` (N x H x W x C or N x H x W uint8) and `labels`, with optional `classes`.
Their train arrays are empty (0 x H x W x C); an .npz without `classes` reads with classes [] and
load_dataset names them.

NAME:PATH reads PATH as the dataset NAME, for what the files alone do not say: the label set
(`cifar100-coarse:/data/cifar-100-python.tar.gz` gives CIFAR-100's 20 superclasses; a plain path
or `cifar100:PATH` its 100 fine classes) or which IDX dataset a folder holds (`fashion-mnist:DIR`).
The name is checked against what PATH holds. The name becomes Source.name, so the cache keeps fine
and coarse labels of the same files apart.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import os
import pickle
import re
import struct
import sys
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
SVHN_CLASSES = [str(i) for i in range(10)]  # SVHN stores the digit 0 as label 10; read maps it to 0
NAMES = {"cifar10": "cifar10", "cifar-10": "cifar10", "mnist": "mnist", "fashion-mnist": "fashion-mnist",
         "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
         "cifar100": "cifar100", "cifar-100": "cifar100", "cifar100-fine": "cifar100",
         "cifar100-coarse": "cifar100-coarse", "cifar-100-coarse": "cifar100-coarse",
         "cifar100_coarse": "cifar100-coarse", "svhn": "svhn"}  # fmt: skip
# which located kinds can hold each dataset (an archive's content is checked when it is read)
KINDS = {"cifar10": ("archive", "cifar-dir", "image-dir", "class-dir"), "mnist": ("idx-dir",), "fashion-mnist": ("idx-dir",),
         "cifar100": ("archive", "cifar100-dir"), "cifar100-coarse": ("archive", "cifar100-dir"),
         "svhn": ("archive", "svhn-dir")}  # fmt: skip

_CIFAR100_ENTRIES = ["cifar-100-python.tar.gz", "cifar-100-python", "cifar100", "CIFAR100"]
ENV_CANDIDATES = {  # what a folder of sources (CIFARLAB_DATA, --data) calls each dataset, first match wins
    "cifar10": ["cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar10-jpeg.tar.gz", "cifar10-jpeg"],
    "mnist": ["mnist", "MNIST"],
    "fashion-mnist": ["fashion-mnist", "FashionMNIST", "fashion_mnist"],
    "cifar100": _CIFAR100_ENTRIES,
    "cifar100-coarse": _CIFAR100_ENTRIES,
    "svhn": ["svhn", "SVHN", "svhn.tar.gz"],
}

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR100_FILES = ["train", "test", "meta"]  # inside cifar-100-python/
SVHN_FILES = ["train_32x32.mat", "test_32x32.mat"]
IDX_FILES = {  # role -> file name torchvision uses (gzipped with .gz)
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
NPZ_IMAGES = ("images", "x", "x_test")  # accepted key names, first match wins
NPZ_LABELS = ("labels", "y", "y_test")
BAD_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError)
BAD_NPZ = (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile)


@dataclass
class Arrays:
    train_x: torch.Tensor  # uint8 (N, H, W, C)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]  # [] when the source names none (an .npz without `classes`)
    name: str


@dataclass(frozen=True)
class Source:
    """A located source: what it is, where, and which files its fingerprint covers."""

    kind: str  # archive | cifar-dir | cifar100-dir | svhn-dir | image-dir | class-dir | idx-dir | npz
    path: Path
    files: tuple[Path, ...]
    name: str = ""  # dataset name when known from the request (mnist vs fashion-mnist, cifar100 vs -coarse)


# ---------------------------------------------------------------- locating a source


def locate(source: str, download_root: Path) -> Source:
    """Turn a dataset name, a path or NAME:PATH into a Source; a name without CIFARLAB_DATA downloads first."""
    key = NAMES.get(source.strip().lower())
    if key is not None:
        env = os.environ.get("CIFARLAB_DATA")
        if env:
            return _from_env(key, Path(env).expanduser())
        return _from_download(key, download_root)
    key, rest = split_name(source)
    path = Path(rest).expanduser()
    if not path.exists():
        if key is None and "/" not in source and "." not in source:
            raise UserError(f"unknown dataset '{source}'; use {', '.join(dict.fromkeys(NAMES.values()))} or a path")
        raise UserError(f"data source not found: {path}")
    if key is None:
        return _detect(path)
    src = _detect(path, _key_arg(key))
    if src.kind not in KINDS[key]:
        raise UserError(f"{path}: holds {src.kind} data, not {key}")
    return src


def split_name(source: str) -> tuple[str | None, str]:
    """'cifar100-coarse:/data/x.tar.gz' -> ('cifar100-coarse', '/data/x.tar.gz'); else (None, source)."""
    head, sep, rest = source.partition(":")
    key = NAMES.get(head.strip().lower()) if sep else None
    return (key, rest) if key is not None and rest else (None, source)


def _key_arg(key: str) -> str:
    return "" if key == "cifar10" else key  # CIFAR-10 files say what they are; the name adds nothing


def resolve_source(value: str, dataset: str = "cifar10") -> str:
    """What --data VALUE names, as a source string that means the same anywhere.

    A dataset name stays a name (CIFARLAB_DATA or the download then decide). A path is made
    absolute, so a run folder's config still finds it from another working directory. A folder
    of sources, like the one CIFARLAB_DATA may point to (cifar10-jpeg.tar.gz, mnist/, ...), is
    read as CIFARLAB_DATA would be: the copy of `dataset` inside it.
    """
    if NAMES.get(value.strip().lower()) is not None:
        return value
    key, rest = split_name(value)
    prefix = f"{key}:" if key else ""
    path = Path(rest).expanduser()
    if not path.exists():
        return value  # locate() says what is wrong, when the data is read
    if path.is_dir():
        want = key or NAMES.get(dataset.strip().lower()) or split_name(dataset)[0] or "cifar10"
        try:
            src = _detect(path, _key_arg(key or ""))
        except UserError:
            src = None
        # a folder that holds the wanted dataset's own entry is a folder of sources, even when it also
        # reads as another dataset (cifar-100-python/ beside cifar10-jpeg.tar.gz)
        if src is None or (src.kind not in KINDS[want] and any((path / n).exists() for n in ENV_CANDIDATES[want])):
            # the labels are the request's, not the files': coarse CIFAR-100 keeps its name
            prefix = prefix or ("cifar100-coarse:" if want == "cifar100-coarse" else "")
            return prefix + str(_from_env(want, path, str(path)).path)
    return prefix + str(path.resolve())


def _detect(path: Path, key: str = "") -> Source:
    path = path.resolve()
    if path.is_file():
        if path.name.lower().endswith(".npz"):
            return Source("npz", path, (path,), key)
        if not path.name.lower().endswith(TAR_SUFFIXES):
            raise UserError(f"{path}: not a supported data file (expected .tar.gz, .tgz, .tar, .npz or a folder)")
        return Source("archive", path, (path,), key)
    d = _cifar_dir(path)
    if d:
        return Source("cifar-dir", d, tuple(sorted(f for f in d.iterdir() if f.is_file())), key)
    d = _cifar100_dir(path)
    if d:
        return Source("cifar100-dir", d, tuple(d / n for n in CIFAR100_FILES), key or "cifar100")
    d = _svhn_dir(path)
    if d:
        return Source("svhn-dir", d, tuple(d / n for n in SVHN_FILES), "svhn")
    idx = _idx_dir(path, key)
    if idx:
        return Source("idx-dir", path, tuple(idx.values()), key or _idx_name(path))
    root = _image_root(path)
    if root:
        files = tuple(sorted(f for s in ("train", "test") for f in (root / s).rglob("*") if f.is_file()))
        return Source("image-dir", root, files, key)
    if _is_class_dir(path):
        files = tuple(sorted(f for c in path.iterdir() if c.is_dir() for f in c.iterdir() if f.is_file()))
        return Source("class-dir", path, files, key)
    raise UserError(
        f"{path}: found no CIFAR-10 or CIFAR-100 pickles, SVHN .mat files, IDX files"
        " or image folder (train/ and test/ class subfolders, test/ alone, or class subfolders)"
    )


def _from_env(key: str, root: Path, what: str = "") -> Source:
    """CIFARLAB_DATA is one local source, or a folder of them (like the shared data folder)."""
    what = what or f"CIFARLAB_DATA={root}"
    if not root.exists():
        raise UserError(f"{what} does not exist")
    if root.is_dir():
        for name in ENV_CANDIDATES[key]:
            if (root / name).exists():
                src = _detect(root / name, _key_arg(key))
                if src.kind not in KINDS[key]:
                    raise UserError(f"{what}: {name} holds {src.kind} data, not {key}")
                return src
    try:
        src = _detect(root, _key_arg(key))
    except UserError:
        src = None
    if src is not None and src.kind in KINDS[key]:
        return src
    raise UserError(f"{what} holds no {key} data; point it at a local copy or pass a path")


def _from_download(key: str, root: Path) -> Source:
    """Download with torchvision (once); the files then read like any local copy."""
    local = {"cifar10": root / "cifar-10-batches-py", "mnist": root / "MNIST" / "raw",
             "fashion-mnist": root / "FashionMNIST" / "raw", "cifar100": root / "cifar-100-python",
             "cifar100-coarse": root / "cifar-100-python", "svhn": root / "svhn"}[key]  # fmt: skip
    found = {"cifar10": _cifar_dir, "cifar100": _cifar100_dir, "cifar100-coarse": _cifar100_dir,
             "svhn": _svhn_dir}.get(key, lambda d: _idx_dir(d, key))  # fmt: skip
    if not (local.is_dir() and found(local)):
        import torchvision.datasets as tvd

        print(f"cifarlab: downloading {key} into {root}", file=sys.stderr)
        try:
            if key == "svhn":  # SVHN keeps its .mat files in the root it is given: a folder of its own
                for split in ("train", "test"):
                    tvd.SVHN(str(local), split=split, download=True)
            else:
                cls = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST,
                       "cifar100": tvd.CIFAR100, "cifar100-coarse": tvd.CIFAR100}[key]  # fmt: skip
                for train in (True, False):
                    cls(str(root), train=train, download=True)
        except Exception as e:  # URLError, HTTPError, RuntimeError on a failed checksum, ...
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"could not download {key} ({msg}); set CIFARLAB_DATA to a local copy or pass a path as the source"
            ) from None
    return _detect(local, _key_arg(key))


def _cifar100_dir(path: Path) -> Path | None:
    for d in (path, path / "cifar-100-python"):
        if all((d / n).is_file() for n in CIFAR100_FILES):
            return d
    return None


def _svhn_dir(path: Path) -> Path | None:
    present = [n for n in SVHN_FILES if (path / n).is_file()]
    if present and len(present) < len(SVHN_FILES):
        missing = next(n for n in SVHN_FILES if n not in present)
        raise UserError(f"{path}: SVHN needs both {' and '.join(SVHN_FILES)}, missing {missing}")
    return path if present else None


def _cifar_dir(path: Path) -> Path | None:
    for d in (path, path / "cifar-10-batches-py"):
        if all((d / n).is_file() for n in CIFAR_TRAIN + ["test_batch"]):
            return d
    return None


def _idx_dir(path: Path, key: str = "") -> dict[str, Path] | None:
    """The four IDX files in path, path/raw or torchvision's MNIST/raw, FashionMNIST/raw."""
    sub = {"mnist": ["MNIST/raw"], "fashion-mnist": ["FashionMNIST/raw"]}.get(key, ["MNIST/raw", "FashionMNIST/raw"])
    found = {}
    for d in [path, path / "raw"] + [path / s for s in sub]:
        files = {}
        for role, name in IDX_FILES.items():
            for cand in (d / name, d / f"{name}.gz"):
                if cand.is_file():
                    files[role] = cand
                    break
        if files:
            if len(files) < 4:
                missing = [IDX_FILES[r] for r in IDX_FILES if r not in files]
                raise UserError(f"{d}: IDX files incomplete, missing {', '.join(missing)}[.gz]")
            found[d] = files
    if len(found) > 1 and not key:
        raise UserError(f"{path}: holds several IDX datasets ({', '.join(map(str, found))}); pass one folder")
    return next(iter(found.values()), None)


def _idx_name(path: Path) -> str:
    # IDX files do not say which dataset they are; the folder name does in every common layout
    return "fashion-mnist" if any("fashion" in p.lower() for p in path.parts[-3:]) else "mnist"


def _image_root(path: Path) -> Path | None:
    """The folder holding test/ (and train/, unless the data is test-only): path or one folder below."""
    if (path / "test").is_dir():
        return path
    if (path / "train").is_dir():  # training data that cannot be scored is a mistake, not a source
        raise UserError(f"{path}: an image folder needs both train/ and test/ subfolders (or test/ alone)")
    for d in sorted(c for c in path.iterdir() if c.is_dir()):
        if (d / "train").is_dir() and (d / "test").is_dir():
            return d
    return None


def _is_class_dir(path: Path) -> bool:
    """Class subfolders of images directly under path (no train/ or test/): test-only data."""
    return any(
        f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS) and not f.name.startswith(".")
        for c in path.iterdir()
        if c.is_dir()
        for f in c.iterdir()
    )


# ---------------------------------------------------------------- reading


def read(src: Source) -> Arrays:
    if src.kind == "archive":
        return _read_archive(src)
    if src.kind == "cifar-dir":
        return _cifar_from_blobs({f.name: f.read_bytes() for f in src.files}, src.path)
    if src.kind == "cifar100-dir":
        return _cifar100_from_blobs({f.name: f.read_bytes() for f in src.files}, src.name, src.path)
    if src.kind == "svhn-dir":
        return _svhn_from_blobs({f.name: f.read_bytes() for f in src.files}, src.path)
    if src.kind == "idx-dir":
        blobs = {role: f.read_bytes() for role, f in zip(IDX_FILES, src.files)}
        return _idx_from_blobs(blobs, src.name, src.path)
    if src.kind == "npz":
        return _read_npz(src.path)
    # class-dir: the class folders are the test split, as test/ alone would be
    prefix = "test/" if src.kind == "class-dir" else ""
    blobs = {prefix + f.relative_to(src.path).as_posix(): f.read_bytes() for f in src.files}
    return _images_from_blobs(blobs, src.path.name, src.path)


def _read_npz(path: Path) -> Arrays:
    """images (N, H, W, C) or (N, H, W) uint8, labels (N,) integers, optional classes: test-only data."""
    try:
        z = np.load(path, allow_pickle=False)  # never unpickle: an .npz may come from anywhere
        if not hasattr(z, "files"):
            raise ValueError("it holds one .npy array, not named arrays")
        with z:
            arrays = {k: z[k] for k in z.files}
    except BAD_NPZ as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable .npz file ({why})") from None
    x, y = _npz_array(arrays, NPZ_IMAGES, path), _npz_array(arrays, NPZ_LABELS, path)
    if x.dtype != np.uint8:
        raise UserError(f"{path}: images are {x.dtype}, expected uint8 (0..255)")
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise UserError(f"{path}: images have shape {x.shape}, expected N x H x W x C (C 1 or 3) or N x H x W")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: labels are {y.dtype} of shape {y.shape}, expected N integers")
    if len(y) != len(x):
        raise UserError(f"{path}: {len(x)} images but {len(y)} labels")
    if int(y.min()) < 0:
        raise UserError(f"{path}: labels must be 0 or more, found {int(y.min())}")
    classes = []
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim != 1 or c.dtype.kind not in "US":
            raise UserError(f"{path}: classes must be a list of names, got {c.dtype} of shape {c.shape}")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in c.tolist()]
    return _arrays(x[:0], y[:0], x, y, classes, path.stem, path)


def _npz_array(arrays: dict[str, np.ndarray], keys: tuple[str, ...], path: Path) -> np.ndarray:
    for k in keys:
        if k in arrays:
            return arrays[k]
    raise UserError(f"{path}: no {keys[0]} array (looked for {', '.join(keys)}; it holds {', '.join(arrays)})")


def _read_archive(src: Source) -> Arrays:
    """One pass over the tarball (gzip cannot seek), then decide by what it holds."""
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(src.path, "r:*") as tf:
            for m in tf:
                if m.isfile():
                    blobs[m.name] = tf.extractfile(m).read()
    except BAD_ARCHIVE as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "could not be opened successfully" in why:  # tarfile tried every compression, lists them all
            why = "not a gzip, bzip2, xz or plain tar file"
        raise UserError(f"{src.path}: corrupt or truncated archive ({why})") from None
    by_base = {Path(n).name: b for n, b in blobs.items()}
    want = src.name
    if want in ("cifar100", "cifar100-coarse") and not all(n in by_base for n in CIFAR100_FILES):
        raise UserError(f"{src.path}: holds no CIFAR-100 pickles ({', '.join(CIFAR100_FILES)}), not {want} data")
    if want == "svhn" and not all(n in by_base for n in SVHN_FILES):
        raise UserError(f"{src.path}: holds no SVHN files ({', '.join(SVHN_FILES)}), not svhn data")
    if all(n in by_base for n in CIFAR_TRAIN + ["test_batch"]):
        return _cifar_from_blobs(by_base, src.path)
    if all(n in by_base for n in CIFAR100_FILES) and want not in ("mnist", "fashion-mnist"):
        return _cifar100_from_blobs(by_base, want, src.path)
    if all(n in by_base for n in SVHN_FILES):
        return _svhn_from_blobs(by_base, src.path)
    idx = {}
    for role, name in IDX_FILES.items():
        for cand in (name, f"{name}.gz"):
            if cand in by_base:
                idx[role] = by_base[cand]
                break
    if len(idx) == 4:
        return _idx_from_blobs(idx, src.name or _idx_name(src.path), src.path)
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar)$", "", src.path.name, flags=re.I)
    return _images_from_blobs(blobs, stem, src.path)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle that names a global outside the few the CIFAR batches need (nothing of it has run)."""


@functools.cache
def _array_globals() -> dict[tuple[str, str], object]:
    """The globals the official batches (Python 2, protocol 2) and numpy pickles of any protocol
    name: numpy's array and scalar rebuilders, ndarray, dtype, and _codecs.encode (Python 3 writes
    bytes that way under protocol 2). None of them runs anything but building an array."""
    try:  # numpy >= 2 (which also writes these names); numpy 1 has only numpy.core
        from numpy._core import multiarray, numeric
    except ImportError:
        from numpy.core import multiarray, numeric
    table = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class _ArrayUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only _array_globals(): dicts, lists, strings, numbers and numpy
    arrays come back; a crafted batch naming anything else (os.system, getattr, ...) is refused
    before the call it asks for is made."""

    def find_class(self, module: str, name: str):
        obj = _array_globals().get((module, name))
        if obj is None:
            raise RefusedGlobal(f"{module}.{name}")
        return obj


def _unpickle(blob: bytes, what: str):
    """A CIFAR pickle (Python 2 strings as bytes, as the official files need), through _ArrayUnpickler."""
    try:
        return _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except RefusedGlobal as e:
        raise UserError(f"refusing to load {what}: it holds code or objects cifarlab does not load ({e})") from None


def _cifar_from_blobs(blobs: dict[str, bytes], where: Path) -> Arrays:
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            d = _unpickle(blobs[name], f"{where}: CIFAR batch {name}")
            data = np.asarray(d.get(b"data", d.get("data")), dtype=np.uint8)
            labels = np.asarray(d.get(b"labels", d.get("labels")), dtype=np.int64)
        except UserError:  # refused: it holds code
            raise
        except Exception as e:  # truncated or foreign pickle
            raise UserError(f"{where}: CIFAR batch {name} is corrupt ({type(e).__name__}: {e})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise UserError(f"{where}: CIFAR batch {name} has data {data.shape} and {len(labels)} labels")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    train = [batch(n) for n in CIFAR_TRAIN]
    test_x, test_y = batch("test_batch")
    classes = CIFAR10_CLASSES
    if "batches.meta" in blobs:
        try:
            meta = _unpickle(blobs["batches.meta"], f"{where}: CIFAR batch batches.meta")
            names = meta.get(b"label_names", meta.get("label_names"))
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except UserError:  # refused: a meta file that holds code is an error, not a file to skip
            raise
        except Exception:
            classes = CIFAR10_CLASSES  # the meta file only carries names; the official ones are known
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return _arrays(train_x, train_y, test_x, test_y, classes, "cifar10", where)


def _cifar100_from_blobs(blobs: dict[str, bytes], name: str, where: Path) -> Arrays:
    """cifar-100-python/{train,test,meta}: fine labels (100 classes), or coarse (20) for cifar100-coarse."""
    coarse = name == "cifar100-coarse"
    labels_key = b"coarse_labels" if coarse else b"fine_labels"

    def load(part: str) -> dict:
        try:
            d = _unpickle(blobs[part], f"{where}: CIFAR-100 file {part}")
        except UserError:  # refused: it holds code
            raise
        except Exception as e:  # truncated or foreign pickle
            raise UserError(f"{where}: CIFAR-100 file {part} is corrupt ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict):
            raise UserError(f"{where}: CIFAR-100 file {part} is not a dict but {type(d).__name__}")
        return d

    def split(part: str) -> tuple[np.ndarray, np.ndarray]:
        d = load(part)
        if b"data" not in d or labels_key not in d:
            raise UserError(f"{where}: CIFAR-100 file {part} lacks {b'data'!r} or {labels_key!r}")
        try:
            data = np.asarray(d[b"data"], dtype=np.uint8)
            labels = np.asarray(d[labels_key], dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: CIFAR-100 file {part} is corrupt ({type(e).__name__}: {e})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(labels) != len(data):
            raise UserError(f"{where}: CIFAR-100 file {part} has data {data.shape} and {labels.size} labels")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    train_x, train_y = split("train")
    test_x, test_y = split("test")
    names_key = b"coarse_label_names" if coarse else b"fine_label_names"
    names = load("meta").get(names_key)
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{where}: CIFAR-100 file meta lacks {names_key!r}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return _arrays(train_x, train_y, test_x, test_y, classes, "cifar100-coarse" if coarse else "cifar100", where)


def _svhn_from_blobs(blobs: dict[str, bytes], where: Path) -> Arrays:
    """SVHN's MATLAB files: X (32, 32, 3, N) uint8, y (N, 1) with 1..10, 10 meaning the digit 0."""
    import scipy.io

    out = []
    for name in SVHN_FILES:
        try:
            mat = scipy.io.loadmat(io.BytesIO(blobs[name]))
        except Exception as e:  # truncated or not a MATLAB file: scipy raises ValueError, MatReadError, ...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{where}: SVHN file {name} is corrupt or truncated ({why})") from None
        x, y = mat.get("X"), mat.get("y")
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise UserError(f"{where}: SVHN file {name} lacks the arrays X and y")
        y = y.reshape(-1)
        if x.ndim != 4 or x.shape[2] not in (1, 3) or x.shape[3] != len(y):
            raise UserError(f"{where}: SVHN file {name} has X {x.shape} (expected H x W x C x N) and {len(y)} labels")
        if x.dtype != np.uint8:
            raise UserError(f"{where}: SVHN file {name} has X of type {x.dtype}, expected uint8")
        y = y.astype(np.int64)
        out += [x.transpose(3, 0, 1, 2), np.where(y == 10, 0, y)]
    return _arrays(*out, SVHN_CLASSES, "svhn", where)


def _idx_from_blobs(blobs: dict[str, bytes], name: str, where: Path) -> Arrays:
    arrays = {}
    for role, blob in blobs.items():
        if blob[:2] == b"\x1f\x8b":
            try:
                blob = gzip.decompress(blob)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise UserError(f"{where}: {IDX_FILES[role]}.gz is corrupt or truncated ({e})") from None
        arrays[role] = _parse_idx(blob, ndim=3 if role.endswith("_x") else 1, what=f"{where}: {IDX_FILES[role]}")
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise UserError(f"{where}: {split} IDX files disagree: {nx} images but {ny} labels")
    classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    return _arrays(
        arrays["train_x"][..., None], arrays["train_y"], arrays["test_x"][..., None], arrays["test_y"],
        classes, name or "mnist", where,
    )  # fmt: skip


def _parse_idx(data: bytes, ndim: int, what: str) -> np.ndarray:
    """IDX: magic 0x0000 08 <ndim> (unsigned bytes), then ndim big-endian int32 sizes, then the bytes."""
    magic = 0x0800 + ndim
    got = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if got != magic:
        shown = "none (file too short)" if got is None else f"0x{got:08X}"
        raise UserError(f"{what}: bad IDX magic number {shown}, expected 0x{magic:08X}")
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{what}: IDX header is truncated")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = memoryview(data)[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"{what}: header says {dims} but holds {len(body)} bytes (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _images_from_blobs(blobs: dict[str, bytes], name: str, where: Path) -> Arrays:
    """An image folder: <prefix>/{train,test}/<class>/<file>; classes are the sorted folder names.

    Within a class files sort by name (natural order); the classes are then interleaved round-robin
    so that any prefix (n_items, "the first 1000 test images") is class-balanced, not all airplanes.
    With no train/ images the data is test-only: empty train arrays, classes from test/.
    """
    splits: dict[str, dict[str, list[tuple[str, str]]]] = {"train": {}, "test": {}}
    for path in blobs:
        parts = path.split("/")
        if len(parts) < 3 or parts[-3] not in splits or parts[-1].startswith("."):
            continue
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            continue
        splits[parts[-3]].setdefault(parts[-2], []).append((parts[-1], path))
    if not splits["train"] and not splits["test"]:
        raise UserError(
            f"{where}: image folder has no classes (expected train/<class>/<image> and test/<class>/<image>,"
            " or test/<class>/<image> alone)"
        )
    if not splits["test"]:
        raise UserError(f"{where}: image folder has no classes under test/ (expected test/<class>/<image>)")
    classes = sorted(splits["train"] or splits["test"])
    extra = sorted(set(splits["test"]) - set(classes))
    if extra:
        raise UserError(f"{where}: test/ has classes that train/ lacks: {', '.join(extra)}")
    train = _decode_split(blobs, splits["train"], classes, "train", where) if splits["train"] else None
    test_x, test_y = _decode_split(blobs, splits["test"], classes, "test", where)
    if train is None:
        return _arrays(test_x[:0], test_y[:0], test_x, test_y, classes, name, where)
    out = [*train, test_x, test_y]
    if out[0].shape[1:] != out[2].shape[1:]:
        shapes = tuple(out[0].shape[1:]), tuple(out[2].shape[1:])
        raise UserError(f"{where}: train images are {shapes[0]} (H, W, C) but test images {shapes[1]}")
    return _arrays(*out, classes, name, where)


def _decode_split(blobs: dict[str, bytes], by_class: dict, classes: list[str], split: str, where: Path):
    queues = [sorted(by_class.get(c, []), key=lambda f: _natural(f[0])) for c in classes]
    order = [(q[i][1], k) for i in range(max(map(len, queues))) for k, q in enumerate(queues) if i < len(q)]
    print(f"cifarlab: decoding {len(order)} {split} images from {where}", file=sys.stderr)
    x = _decode([blobs[p] for p, _ in order], [p for p, _ in order], where)
    return x, np.array([k for _, k in order], dtype=np.int64)


def _decode(blobs: list[bytes], names: list[str], where: Path) -> torch.Tensor:
    """Decode encoded images to uint8 NHWC: JPEGs in one batched libjpeg call, the rest one by one."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io decoding; PIL is the fallback
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import decode_jpeg
        except ImportError:
            decode_jpeg = None
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        gray = _decode_one(tensors[0], names[0], None, where).shape[0] == 1
        images: list[torch.Tensor | None] = [None] * len(blobs)
        jpeg = [i for i, b in enumerate(blobs) if b[:2] == b"\xff\xd8"]
        if jpeg and decode_jpeg is not None:
            from torchvision.io import ImageReadMode

            mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
            try:
                for i, img in zip(jpeg, decode_jpeg([tensors[i] for i in jpeg], mode=mode)):
                    images[i] = img
            except RuntimeError:
                pass  # one bad file spoils the batch; decoding one by one names it
        for i in range(len(blobs)):
            if images[i] is None:
                images[i] = _decode_one(tensors[i], names[i], gray, where)
    shape = images[0].shape
    for img, name in zip(images, names):
        if img.shape != shape:
            raise UserError(
                f"{where}: images differ in size: {names[0]} is {tuple(shape)}, {name} is {tuple(img.shape)} (C, H, W)"
            )
    return torch.stack(images).permute(0, 2, 3, 1).contiguous()


def _decode_one(data: torch.Tensor, name: str, gray: bool | None, where: Path) -> torch.Tensor:
    """One image as uint8 (C, H, W): gray (1 channel), RGB (3), or as stored when gray is None."""
    try:
        from torchvision.io import ImageReadMode, decode_image

        mode = {None: ImageReadMode.UNCHANGED, True: ImageReadMode.GRAY, False: ImageReadMode.RGB}[gray]
        img = decode_image(data, mode=mode)
        if gray is not None or img.shape[0] in (1, 3):
            return img
    except (ImportError, RuntimeError):
        pass
    try:  # formats (or torchvision versions) that torchvision.io does not read
        from PIL import Image

        img = Image.open(io.BytesIO(data.numpy().tobytes()))
        if gray is None:
            gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
        arr = np.asarray(img.convert("L" if gray else "RGB"))
    except Exception:
        raise UserError(f"{where}: cannot decode image {name}") from None
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _arrays(train_x, train_y, test_x, test_y, classes: list[str], name: str, where: Path) -> Arrays:
    tx, ty = _tensor(train_x, np.uint8), _tensor(train_y, np.int64)
    vx, vy = _tensor(test_x, np.uint8), _tensor(test_y, np.int64)
    for split, y in (("train", ty), ("test", vy)):
        if classes and len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            span = f"{int(y.min())}..{int(y.max())}"
            raise UserError(f"{where}: {split} labels span {span} but there are {len(classes)} classes")
    return Arrays(tx, ty, vx, vy, list(classes), name)


def _tensor(a, dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.contiguous()
    return torch.from_numpy(np.array(a, dtype=dtype, order="C"))  # a C-ordered, writable copy
