"""The CIFAR-10/100 python batches are pickles: they are read by an unpickler that builds numpy arrays
and nothing else (issue 22). A batch in the official format (Python 2, protocol 2, numpy.core names)
and those numpy writes today load; a batch whose pickle calls a function is refused before the call."""

import os
import pickle
import struct

import numpy as np
import pytest

from cifarlab.cli import main
from cifarlab.data import sources
from cifarlab.data.sources import CIFAR10_CLASSES
from cifarlab.errors import UserError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Mkdir:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _str(s: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
    return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<i", len(s)) + s


def _int(i: int) -> bytes:
    return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)


def py2_batch(data: np.ndarray, labels: list[int], label: bytes) -> bytes:
    """The bytes Python 2's cPickle.dump(protocol=2) wrote for the official batches: a dict of str keys,
    `data` a uint8 array rebuilt by numpy.core.multiarray._reconstruct, `labels` a list of ints."""
    n, width = data.shape
    dtype = b"cnumpy\ndtype\n" + _str(b"u1") + _int(0) + _int(1) + b"\x87R"
    dtype += b"(" + _int(3) + _str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + _int(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _str(b"b") + b"\x87R"
    array += b"(" + _int(1) + _int(n) + _int(width) + b"\x86" + dtype + b"\x89" + _str(data.tobytes()) + b"tb"
    items = _str(b"batch_label") + _str(label) + _str(b"data") + array
    items += _str(b"labels") + b"](" + b"".join(_int(v) for v in labels) + b"e"
    return b"\x80\x02}(" + items + b"u."


def py2_meta() -> bytes:
    names = b"".join(_str(c.encode()) for c in CIFAR10_CLASSES)
    return b"\x80\x02}(" + _str(b"label_names") + b"](" + names + b"e" + _str(b"num_vis") + _int(3072) + b"u."


def write_batches(root, writer) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/ of 3 images per batch, each written by writer(data, labels, name)."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for name in BATCHES:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 3).tolist()
        (d / name).write_bytes(writer(data, labels, name))
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def test_the_py2_writer_is_what_plain_pickle_reads():
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    d = pickle.loads(py2_batch(data, [3, 7], b"training batch 1 of 5"), encoding="bytes")
    assert set(d) == {b"batch_label", b"data", b"labels"} and d[b"labels"] == [3, 7]
    assert d[b"data"].dtype == np.uint8 and np.array_equal(d[b"data"], data)


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_official_and_numpy_written_batches_load(tmp_path, protocol):
    def writer(data, labels, name):
        if protocol == "py2":
            return py2_batch(data, labels, name.encode())
        return pickle.dumps({b"batch_label": name.encode(), b"data": data, b"labels": labels}, protocol)

    x, y = write_batches(tmp_path, writer)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(py2_meta() if protocol == "py2" else pickle.dumps({b"label_names": [b"a"] * 10}, protocol))
    arr = sources.read(sources.locate(str(tmp_path), tmp_path / "dl"))
    assert np.array_equal(arr.train_x.numpy(), x[:15]) and np.array_equal(arr.test_x.numpy(), x[15:])
    assert arr.train_y.tolist() == y[:15].tolist() and arr.test_y.tolist() == y[15:].tolist()
    assert arr.classes == (CIFAR10_CLASSES if protocol == "py2" else ["a"] * 10)


@pytest.mark.parametrize("where", ["data_batch_2", "batches.meta"])
def test_a_batch_that_calls_a_function_is_refused_unrun(tmp_path, capsys, where):
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2], b"x": Mkdir(marker)}
    pickle.loads(pickle.dumps(evil, 2))  # control: a plain unpickler runs it
    assert marker.is_dir()
    marker.rmdir()

    def writer(data, labels, name):
        return pickle.dumps(evil if name == where else {b"data": data, b"labels": labels}, 2)

    write_batches(tmp_path, writer)
    if where == "batches.meta":
        (tmp_path / "cifar-10-batches-py" / where).write_bytes(pickle.dumps({b"label_names": Mkdir(marker)}, 2))
    with pytest.raises(UserError, match=rf"refusing to load .*CIFAR batch {where}: it holds code .*mkdir\)$"):
        sources.read(sources.locate(str(tmp_path), tmp_path / "dl"))
    assert not marker.exists()
    code = main(["data", "info", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cifarlab: error: refusing to load "), err
    assert not marker.exists() and not list((tmp_path / "cache").glob("*.pt"))


def test_a_cifar100_file_that_calls_a_function_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    ok = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1], b"coarse_labels": [0, 0]}
    (d / "train").write_bytes(pickle.dumps(ok, 2))
    (d / "test").write_bytes(pickle.dumps({**ok, b"x": Mkdir(marker)}, 2))
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"a", b"b"], b"coarse_label_names": [b"c"]}, 2))
    with pytest.raises(UserError, match=r"refusing to load .*CIFAR-100 file test: it holds code"):
        sources.read(sources.locate(str(tmp_path), tmp_path / "dl"))
    assert not marker.exists()
