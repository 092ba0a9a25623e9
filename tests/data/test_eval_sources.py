"""Test-only sources (issue 16): an .npz of images and labels, test/ alone, a folder of class folders."""

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from conftest import make_image_folder, shared_file, train_tiny_run
from PIL import Image

from cifarlab.cli import main
from cifarlab.data import load_dataset, prepare_splits
from cifarlab.errors import UserError


def write_npz(path, n=6, size=8, channels=3, k=3, **extra):
    rng = np.random.default_rng(0)
    shape = (n, size, size, channels) if channels else (n, size, size)
    arrays = {"images": rng.integers(0, 256, shape, dtype=np.uint8), "labels": np.arange(n) % k, **extra}
    np.savez(path, **{key: v for key, v in arrays.items() if v is not None})
    return path


def check_test_only(ds, n, shape):
    assert ds.test_only and ds.image_shape == shape
    assert ds.train_x.shape == (0, *shape) and ds.train_y.shape == (0,) and ds.train_y.dtype == torch.int64
    assert ds.test_x.shape == (n, *shape) and ds.test_x.dtype == torch.uint8 and ds.test_y.dtype == torch.int64


def test_npz_with_classes(tmp_path):
    path = write_npz(tmp_path / "x.npz", classes=np.array(["a", "b", "c"]))
    ds = load_dataset(str(path), tmp_path / "cache")
    check_test_only(ds, 6, (8, 8, 3))
    assert ds.classes == ["a", "b", "c"] and ds.name == "x"
    with np.load(path) as z:
        assert torch.equal(ds.test_x, torch.from_numpy(z["images"]))
        assert ds.test_y.tolist() == z["labels"].tolist()
    assert load_dataset(str(path), tmp_path / "cache").classes == ["a", "b", "c"]  # from the cache too


def test_npz_grey_without_classes_and_other_key_names(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((5, 7, 7), np.uint8), y=np.array([0, 1, 3, 1, 0], np.uint8))
    ds = load_dataset(str(tmp_path / "g.npz"), tmp_path / "cache")
    check_test_only(ds, 5, (7, 7, 1))
    assert ds.classes == ["0", "1", "2", "3"]
    # a caller that knows the names (a checkpoint) supplies them, more than the labels use included
    names = ["zero", "one", "two", "three", "four"]
    assert load_dataset(str(tmp_path / "g.npz"), tmp_path / "cache", classes=names).classes == names
    with pytest.raises(UserError, match="labels go up to 3 but there are only 2 class names"):
        load_dataset(str(tmp_path / "g.npz"), tmp_path / "cache", classes=["a", "b"])


def bad_npz(tmp):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    lab = np.array([0, 1, 0, 1])
    cases = {
        "no labels": ({"images": img}, "no labels array"),
        "no images": ({"labels": lab}, "no images array"),
        "lengths": ({"images": img, "labels": lab[:3]}, "4 images but 3 labels"),
        "float images": ({"images": img.astype(np.float32), "labels": lab}, "images are float32, expected uint8"),
        "chw": ({"images": img.transpose(0, 3, 1, 2).copy(), "labels": lab}, "expected N x H x W x C"),
        "flat": ({"images": img.reshape(4, -1), "labels": lab}, "expected N x H x W x C"),
        "empty": ({"images": img[:0], "labels": lab[:0]}, "expected N x H x W x C"),
        "float labels": ({"images": img, "labels": lab.astype(float)}, "labels are float64"),
        "2d labels": ({"images": img, "labels": lab[:, None]}, "expected N integers"),
        "negative": ({"images": img, "labels": lab - 1}, "labels must be 0 or more"),
        "range": ({"images": img, "labels": lab + 1, "classes": np.array(["a", "b"])}, "labels span 1..2"),
        "classes": ({"images": img, "labels": lab, "classes": np.zeros((2, 2))}, "classes must be a list"),
    }
    out = {}
    for what, (arrays, fragment) in cases.items():
        path = tmp / f"{what.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        out[what] = (path, fragment)
    (tmp / "junk.npz").write_bytes(b"not a zip file" * 20)
    out["junk"] = (tmp / "junk.npz", "not a readable .npz file")
    np.save(tmp / "one.npy", img)
    (tmp / "one.npy").rename(tmp / "one.npz")
    out["npy"] = (tmp / "one.npz", "not a readable .npz file")
    np.savez(tmp / "objects.npz", images=img, labels=lab, classes=np.array(["a", None], dtype=object))
    out["pickled"] = (tmp / "objects.npz", "not a readable .npz file")
    return out


def test_bad_npz_is_one_line_user_error(tmp_path):
    (tmp_path / "src").mkdir()
    for what, (path, fragment) in bad_npz(tmp_path / "src").items():
        with pytest.raises(UserError) as e:
            load_dataset(str(path), tmp_path / "cache")
        assert fragment in str(e.value) and "\n" not in str(e.value), (what, str(e.value))


def test_image_folder_with_test_alone(tmp_path):
    make_image_folder(tmp_path / "f", n_train=2, n_test=5)
    shutil.rmtree(tmp_path / "f" / "train")
    ds = load_dataset(str(tmp_path / "f"), tmp_path / "cache")
    check_test_only(ds, 10, (16, 16, 3))
    assert ds.classes == ["cat", "dog"] and ds.name == "f"
    assert ds.test_y.tolist() == [0, 1] * 5  # interleaved, as with train/ beside it
    with tarfile.open(tmp_path / "f.tar.gz", "w:gz") as tf:  # the same as a tarball
        tf.add(tmp_path / "f", arcname="f")
    tar = load_dataset(str(tmp_path / "f.tar.gz"), tmp_path / "cache")
    assert tar.test_only and torch.equal(tar.test_x, ds.test_x) and tar.classes == ds.classes


def test_folder_of_class_folders(tmp_path):
    make_image_folder(tmp_path / "f", classes=("ant", "bee", "cow"), n_train=1, n_test=3, size=12)
    (tmp_path / "f" / "test").rename(tmp_path / "flat")
    (tmp_path / "flat" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path / "flat"), tmp_path / "cache")
    check_test_only(ds, 9, (12, 12, 3))
    assert ds.classes == ["ant", "bee", "cow"] and ds.test_y.tolist() == [0, 1, 2] * 3


def test_grey_class_folders(tmp_path):
    for k, c in enumerate(("a", "b")):
        (tmp_path / "g" / c).mkdir(parents=True)
        Image.fromarray(np.full((6, 6), 50 * k, np.uint8)).save(tmp_path / "g" / c / "0.png")
    ds = load_dataset(str(tmp_path / "g"), tmp_path / "cache")
    check_test_only(ds, 2, (6, 6, 1))
    assert ds.test_x[1].unique().tolist() == [50]


def test_checkpoint_classes_renumber_a_subset(tmp_path):
    # test/ holds two of the checkpoint's classes: labels follow the checkpoint's order
    make_image_folder(tmp_path / "f", classes=("cat", "dog"), n_train=1, n_test=2)
    shutil.rmtree(tmp_path / "f" / "train")
    ds = load_dataset(str(tmp_path / "f"), tmp_path / "cache", classes=["bird", "cat", "deer", "dog"])
    assert ds.classes == ["bird", "cat", "deer", "dog"] and ds.test_y.tolist() == [1, 3, 1, 3]
    other = load_dataset(str(tmp_path / "f"), tmp_path / "cache", classes=["x", "y"])  # not a subset: kept
    assert other.classes == ["cat", "dog"] and other.test_y.tolist() == [0, 1, 0, 1]


def test_train_alone_is_still_an_error(tmp_path):
    make_image_folder(tmp_path / "f", n_train=1, n_test=1)
    shutil.rmtree(tmp_path / "f" / "test")
    with pytest.raises(UserError, match="needs both train/ and test/"):
        load_dataset(str(tmp_path / "f"), tmp_path / "cache")


def test_training_on_test_only_data_fails(tmp_path, capsys, monkeypatch):
    path = write_npz(tmp_path / "x.npz")
    ds = load_dataset(str(path), tmp_path / "cache")
    for val_size in (0, 2):
        with pytest.raises(UserError, match="x is test-only data"):
            prepare_splits(ds, 0, val_size, 0)
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    code = main(["train", "quick", "--data", str(path), "--out", str(tmp_path / "run"), "--set", "data.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("cifarlab: error: x is test-only data"), err


def test_shared_original_test_images(tmp_path):
    path = shared_file("cifar10-test-first1000-original.npz")
    ds = load_dataset(str(path), tmp_path / "cache")
    check_test_only(ds, 1000, (32, 32, 3))
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the official test batch's first labels
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert load_dataset(str(path), tmp_path / "cache", classes=names).classes == names


def test_cli_eval_on_an_npz_and_on_test_alone(tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "imgs", n_train=8, n_test=4)
    run = train_tiny_run(tmp_path, folder, epochs=1)
    capsys.readouterr()  # the training log
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(str(folder), tmp_path / "cache")
    np.savez(tmp_path / "t.npz", images=ds.test_x.numpy(), labels=ds.test_y.numpy())
    shutil.copytree(folder / "test", tmp_path / "only" / "test")
    results = {}
    for data in (folder, tmp_path / "t.npz", tmp_path / "only", tmp_path / "only" / "test"):
        code = main(["eval", str(run), "--data", str(data), "--json", "--device", "cpu"])
        out = capsys.readouterr()
        assert code == 0, out.err
        results[data.name] = res = json.loads(out.out)
        assert res["n"] == 8 and sum(map(sum, res["confusion"])) == 8
    accuracy = {r["accuracy"] for r in results.values()}
    assert len(accuracy) == 1  # the same eight images, whichever way they come
    assert results["only"]["classes"] == ["cat", "dog"]
    # the .npz names no classes: the checkpoint's, once checkpoint_data passes them, else 0, 1
    assert results["t.npz"]["classes"] in (["cat", "dog"], ["0", "1"])
