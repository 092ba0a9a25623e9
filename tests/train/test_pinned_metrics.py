"""The engine's numbers, pinned: the `quick` preset, 2000 JPEG images, one epoch, on the CPU.

The reference file was recorded with the engine before its redesign; do not regenerate it to make
this test pass. Thread counts change the last digits, hence the tolerances."""

import json
import os

import pytest
from conftest import shared_file

from cifarlab.config import load_config
from cifarlab.train.engine import train

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "quick_n2000_e1.metrics.jsonl")


def pinned_run(tmp_path, *extra):
    source = shared_file("cifar10-jpeg.tar.gz")
    cache = os.environ.get("CIFARLAB_CACHE") or str(tmp_path / "cache")
    cfg = load_config(
        "quick",
        [
            f"data.source={source}",
            f"data.cache_dir={cache}",
            "data.n_items=2000",
            "train.epochs=1",
            "train.progress=false",
            "data.device=cpu",
            *extra,
        ],
    )
    cfg.out = str(tmp_path)
    train(cfg, run_dir=tmp_path / "run")
    return [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def assert_matches(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["images"] == w["images"]
        for k in ("train_loss", "test_loss", "lr"):
            assert g[k] == pytest.approx(w[k], rel=1e-3), k
        for k in ("train_acc", "test_acc"):
            assert g[k] == pytest.approx(w[k], abs=2e-3), k


@pytest.mark.slow
def test_quick_preset_metrics_are_pinned(tmp_path):
    want = [json.loads(ln) for ln in open(REFERENCE).read().splitlines()]
    assert_matches(pinned_run(tmp_path), want)
