"""The real offline data: the 60,000-image JPEG tarball, MNIST and Fashion-MNIST (decoded once per module)."""

import time

import numpy as np
import pytest
import torch
from conftest import shared_file

from cifarlab.data import load_dataset
from cifarlab.data.sources import CIFAR10_CLASSES, FASHION_CLASSES

SPEC_MEAN, SPEC_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # real CIFAR-10 train


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def jpeg(cache):
    return load_dataset(str(shared_file("cifar10-jpeg.tar.gz")), cache)


@pytest.mark.slow  # decodes the 60,000 JPEGs
def test_jpeg_tarball_counts_and_stats(jpeg):
    assert jpeg.name == "cifar10-jpeg" and jpeg.classes == CIFAR10_CLASSES
    assert jpeg.train_x.shape == (50000, 32, 32, 3) and jpeg.test_x.shape == (10000, 32, 32, 3)
    assert jpeg.train_x.dtype == torch.uint8 and jpeg.train_y.dtype == torch.int64
    assert torch.bincount(jpeg.train_y).tolist() == [5000] * 10
    assert torch.bincount(jpeg.test_y).tolist() == [1000] * 10
    assert torch.bincount(jpeg.test_y[:1000]).tolist() == [100] * 10  # prefixes are class-balanced
    assert np.allclose(jpeg.mean, SPEC_MEAN, atol=0.003) and np.allclose(jpeg.std, SPEC_STD, atol=0.005)


@pytest.mark.slow  # decodes the 60,000 JPEGs
def test_jpeg_test_images_match_the_originals(jpeg):
    ref = np.load(shared_file("cifar10-test-first1000-original.npz"))
    images, labels = ref["images"], ref["labels"].astype(np.int64)
    # files are numbered per class in official order: the j-th image of class k is test/<k>/j.jpg
    positions = {k: (jpeg.test_y == k).nonzero().flatten().tolist() for k in range(10)}
    seen = {k: 0 for k in range(10)}
    ours = []
    for k in labels.tolist():
        ours.append(positions[k][seen[k]])
        seen[k] += 1
    ours = torch.tensor(ours)
    assert torch.equal(jpeg.test_y[ours], torch.from_numpy(labels))
    err = np.abs(jpeg.test_x[ours].numpy().astype(np.float64) - images).mean()
    assert err < 10, f"mean abs error {err:.2f}/255"
    # and a wrong pairing is far off, so the check has teeth
    assert np.abs(jpeg.test_x[ours.roll(1)].numpy().astype(np.float64) - images).mean() > 30


@pytest.mark.slow  # decodes the 60,000 JPEGs
def test_cifar10_name_through_cifarlab_data_reuses_the_cache(jpeg, cache, monkeypatch):
    monkeypatch.setenv("CIFARLAB_DATA", str(shared_file("cifar10-jpeg.tar.gz").parent))
    t = time.perf_counter()
    ds = load_dataset("cifar10", cache)
    assert ds.fingerprint == jpeg.fingerprint and torch.equal(ds.test_x, jpeg.test_x)
    assert time.perf_counter() - t < 30  # read back, not decoded again (generous: CI is shared)


@pytest.mark.parametrize(
    "name, classes, test_counts",
    [
        ("mnist", [str(i) for i in range(10)], [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
        ("fashion-mnist", FASHION_CLASSES, [1000] * 10),
    ],
)
def test_mnist_family(name, classes, test_counts, cache, monkeypatch):
    folder = shared_file(name)
    by_path = load_dataset(str(folder), cache)
    monkeypatch.setenv("CIFARLAB_DATA", str(folder.parent))
    by_name = load_dataset(name, cache)
    for ds in (by_path, by_name):
        assert ds.name == name and ds.classes == classes
        assert ds.train_x.shape == (60000, 28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
        assert torch.bincount(ds.test_y).tolist() == test_counts
    assert torch.equal(by_path.train_x, by_name.train_x)
    if name == "mnist":
        assert abs(by_path.mean[0] - 0.1307) < 1e-3 and abs(by_path.std[0] - 0.3081) < 1e-3
