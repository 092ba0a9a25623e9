import pytest
from conftest import make_image_folder

CLASSES = ("cat", "dog", "frog")


def tiny_config(folder, **train) -> dict:
    """plainnet (stages 8, 16) with Adam on an image folder, on the CPU, quiet: trains in about a second."""
    return {
        "name": "tiny",
        "seed": 0,
        "model": {"name": "plainnet", "args": {"stages": [8, 16]}},
        "data": {"source": str(folder), "batch_size": 16, "device": "cpu"},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3, "progress": False, "log_epochs": False, "log_tensorboard": False, **train},
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("api-data") / "imgs", classes=CLASSES, size=18)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path_factory.getbasetemp() / "api-cache"))
