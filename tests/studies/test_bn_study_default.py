"""Issue 4, acceptance 3: the default BN study (VGG_A and VGG_A_BatchNorm at four learning rates)
runs on CPU with `--set n_items=512 epochs=1`, here on the shared CIFAR-10 JPEG copy.
The test set is cut to 500 images: evaluating VGG_A on all 10,000 on one CPU thread takes minutes."""

import json

from conftest import shared_file

from cifarlab.cli import main


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
            "n_test=500",
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
    for name in ("training_curves", "loss_band", "probes", "proxies"):
        assert any(p.name.startswith(name) and p.suffix == ".png" for p in out.rglob("*.png")), name
    assert (out / "results.md").read_text().count("VGG_A") >= 2
