"""Issue 4, acceptance 3: the default BN study (VGG_A and VGG_A_BatchNorm at four learning rates)
runs on CPU with `--set n_items=512 epochs=1`, here on the shared CIFAR-10 JPEG copy.
The test set is cut to 200 images, the probe to 2 step sizes and the proxies (the ICS measure: one
forward-backward per layer) are off: VGG_A takes about 4.6 s a training step on one thread of this CI
machine, and the default study's 8 runs must fit the test timeout with room to spare."""

import json

import pytest
from conftest import shared_file

from cifarlab.cli import main


@pytest.mark.slow
def test_default_bn_study_on_cpu(tmp_path, monkeypatch):
    data = shared_file("cifar10-jpeg.tar.gz")
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bn"
    code = main(
        [
            "bn-study",
            "--data",
            str(data),
            "--out",
            str(out),
            "--set",
            "n_items=512",
            "--set",
            "epochs=1",
            "--set",
            "n_test=200",
            "--set",
            "n_etas=2",  # two probe step sizes: every probe is n_etas forward-backward passes of VGG_A
            "--set",
            "proxies=false",  # the ICS measure is a forward-backward per layer; test_bn_study covers it
            "--set",
            "device=cpu",
            "--set",
            "progress=false",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert {r["model"] for r in runs} == {"VGG_A", "VGG_A_BatchNorm"} and len(runs) == 8
    assert {r["lr"] for r in runs} == {1e-3, 2e-3, 1e-4, 5e-4}
    for name in ("training_curves", "loss_band", "probes"):
        assert any(p.name.startswith(name) and p.suffix == ".png" for p in out.rglob("*.png")), name
    assert (out / "results.md").read_text().count("VGG_A") >= 2
