"""`cifarlab pj2 --scale smoke` end to end on the shared data (the CIFAR-10 JPEG copy and MNIST): every
part runs, the results and the report hold every part's tables and figures, the report renders in
headless Chromium (screenshots kept in the run folder and in $CIFARLAB_ARTIFACTS), and a second start
skips every finished part. The smoke study takes a few minutes: it runs once for the module."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import check, chromium, run_chromium
from conftest import shared_file

import cifarlab
from cifarlab import cli
from cifarlab.errors import UserError
from cifarlab.report.scan import MARKER
from cifarlab.studies.pj2 import PARTS, load_pj2_config, run_pj2

# the figures each part must have written (file names under the study folder)
FIGURES = {
    "best model analyses": [
        "filters_first.png",
        "features_0.png",
        "attribution.png",
        "landscape_contour.png",
        "landscape_surface.png",
    ],
    "sweeps": ["metric_by_axis.png", "curves.png", "run_time.png"],
    "bn study": ["training_curves.png", "loss_band.png", "probes.png", "proxies.png"],
    "dessilbi study": [
        "lenet_curves.png",
        "solution_path.png",
        "conv3_weights.png",
        "lenet_pruning.png",
        "vgg_pruning.png",
    ],
    "pj2": ["time_per_part.png"],
}


def _pj2(out: Path, cifar: Path, mnist: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real command in a fresh process (its own threads, as a user runs it)."""
    src = str(Path(cifarlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "cifarlab",
        "pj2",
        "--scale",
        "smoke",
        "--data",
        str(cifar),
        "--set",
        f"mnist={mnist}",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cifar, mnist = shared_file("cifar10-jpeg.tar.gz"), shared_file("mnist")
    out = tmp_path_factory.mktemp("pj2") / "pj2-smoke"
    res = _pj2(out, cifar, mnist)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return {"out": out, "stdout": res.stdout, "cifar": cifar, "mnist": mnist}


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if not any((d / MARKER).exists() for d in p.parents))


@pytest.mark.slow
def test_every_part_runs_and_shows_its_progress(smoke):
    out, stdout = smoke["out"], smoke["stdout"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "pj2" and summary["scale"] == "smoke"
    assert [p["status"] for p in summary["parts"]] == ["done"] * len(summary["parts"])
    keys = [p["part"] for p in summary["parts"]]
    assert keys == [
        "best",
        "analyses",
        "recipe:resnet_head_best",
        "sweep:resnet50_anchors",
        "sweep:grid_resvgg16_24",
        "bn",
        "dessilbi",
    ]
    # a progress line when each part starts and ends, with the elapsed time and the time left
    n = len(keys)
    for i in range(1, n + 1):
        lines = [ln for ln in stdout.splitlines() if ln.startswith(f"[pj2 smoke {i}/{n}]")]
        assert len(lines) == 2 and all(re.search(r"elapsed \d+m\d\ds, about \d+m\d\ds left", ln) for ln in lines)
    assert re.search(rf"\[pj2 smoke {n}/{n}\] .*: done in .*about 0m00s left", stdout)

    t1 = out / "task1_cifar10"
    best = json.loads((t1 / "best_model" / "summary.json").read_text())
    assert best["model"] == "resnet18" and best["epochs"] == 1 and best["dataset"] == "cifar10-jpeg"
    assert summary["best_model_test_acc"] == best["final_test_acc"]
    for name in ("filters", "features", "gradcam", "landscape"):
        assert (t1 / "best_model" / "analysis" / name / "result.json").is_file(), name
    assert (t1 / "recipes" / "resnet_head_best" / "summary.json").is_file()
    for sweep, runs in (("resnet50_anchors", 5), ("grid_resvgg16_24", 2)):
        assert len(list((t1 / "sweeps" / sweep).glob("*/summary.json"))) == runs, sweep
    bn = json.loads((out / "task2_batchnorm" / "summary.json").read_text())
    assert [r["model"] for r in bn["runs"]] == ["plainnet"] * 2 + ["plainnet_bn"] * 2
    dessilbi = json.loads((out / "task3_dessilbi" / "summary.json").read_text())
    assert [r["run"] for r in dessilbi["runs"]] == [
        "lenet-slbi-seed1",
        "lenet-momentum-seed1",
        "lenet-slbi_adam-seed1",
        "vgg-slbi_adam-seed0",
    ]
    # every run saw the data it was given: CIFAR-10 from the shared tarball, MNIST from the shared folder
    assert "cifar10-jpeg.tar.gz" in (t1 / "best_model" / "config.yaml").read_text()
    assert str(smoke["mnist"].resolve()) in (out / "task3_dessilbi" / "lenet-slbi-seed1" / "config.yaml").read_text()


@pytest.mark.slow
def test_results_hold_every_task(smoke):
    md = (smoke["out"] / "results.md").read_text()
    for heading in (
        "## Task 1: the best model",
        "## Task 1: the reports' recipes at this scale",
        "## Task 1: ablation sweeps",
        "## Task 2: batch normalization",
        "## Task 3: DessiLBI",
        "## Time per part",
    ):
        assert heading in md, heading
    assert "never quote these numbers as CIFAR-10 numbers" in md  # the JPEG copy is named as such
    assert "| resnet_head_best | resnet18 | 1 |" in md and "95.28" in md
    assert "conv3.weight at 80%" in md  # the LeNet headline prune


@pytest.mark.slow
def test_report_embeds_every_figure_of_every_part(smoke):
    out = smoke["out"]
    html = (out / "report.html").read_text()
    files = pngs(out)
    names = {p.name for p in files}
    for part, figs in FIGURES.items():
        for f in figs:
            assert f in names, (part, f)
    for p in files:  # every figure any part wrote is in the report, embedded
        assert base64.b64encode(p.read_bytes()).decode() in html, p
    assert "Project 2 study" in html and 'id="overview"' in html


@pytest.mark.slow
def test_report_renders_in_headless_chromium(smoke):
    browser = chromium()
    out = smoke["out"]
    page = out / "report.html"
    shots = out / "report_screenshots"  # marked: the report never shows its own screenshots
    shots.mkdir(exist_ok=True)
    (shots / MARKER).write_text("screenshots of report.html in headless Chromium\n")
    n_imgs = len(re.findall(r"<img ", page.read_text()))
    assert n_imgs >= len(pngs(out))
    for name, width in (("desktop", 1280), ("phone", 390)):
        profile = out.parent / f"chromium-{name}"
        result, console = check(browser, page, profile, width)
        assert result["errors"] == [] and console == [], (name, result["errors"], console)
        assert result["images"] == n_imgs and result["bad"] == [], (name, result["bad"])
        assert result["sorted"] is True, name
        assert result["scrollWidth"] <= result["innerWidth"], (name, result["scrollWidth"], result["innerWidth"])
        shot = shots / f"report-{name}.png"
        height = min(int(result["height"]) + 40, 16000)  # Chromium caps a capture near 16k px
        res = run_chromium(
            browser, profile, width, height, "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri()
        )
        assert shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
        if os.environ.get("CIFARLAB_ARTIFACTS"):
            artifacts = Path(os.environ["CIFARLAB_ARTIFACTS"])
            artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, artifacts / f"pj2-smoke-report-{name}.png")


@pytest.mark.slow
def test_a_second_start_skips_every_finished_part(smoke, capsys, monkeypatch):
    out = smoke["out"]
    before = json.loads((out / "summary.json").read_text())["parts"]
    mtime = (out / "task1_cifar10" / "best_model" / "last.pt").stat().st_mtime
    # the same data spelled another way (relative paths) is the same study
    monkeypatch.chdir(smoke["cifar"].parent)
    args = [
        "pj2",
        "--scale",
        "smoke",
        "--out",
        str(out),
        "--data",
        smoke["cifar"].name,
        "--set",
        f"mnist=./{smoke['mnist'].name}",
    ]
    assert cli.main(args) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("already complete, skipped") == len(before)
    after = json.loads((out / "summary.json").read_text())["parts"]
    assert [p["status"] for p in after] == ["skipped"] * len(before)
    assert [p["seconds"] for p in after] == [p["seconds"] for p in before]  # the time each took when it ran
    assert (out / "task1_cifar10" / "best_model" / "last.pt").stat().st_mtime == mtime
    html = (out / "report.html").read_text()
    assert "report-desktop.png" not in html  # the screenshots folder is not part of the report
    # other settings for a finished run: an error naming the setting, before anything runs
    assert cli.main(args + ["--set", "best.set.train.label_smoothing=0.2"]) == 2
    assert "holds a run with other settings (train.label_smoothing: 0.1 there, 0.2 now)" in capsys.readouterr().err


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(UserError, match="unknown scale"):
        load_pj2_config("huge")
    with pytest.raises(UserError, match="parts"):
        load_pj2_config("smoke", overrides=["parts=[best,everything]"])
    with pytest.raises(UserError, match="unknown key 'best_model'"):
        load_pj2_config("smoke", overrides=["best_model=1"])
    with pytest.raises(UserError, match="analyses.names"):
        load_pj2_config("smoke", overrides=["analyses.names=[filters,xray]"])
    cfg = load_pj2_config("smoke", overrides=["parts=[best]", "best.set.train.epochs=2"])
    assert cfg.parts == ["best"] and cfg.best["set"]["train"]["epochs"] == 2 and set(cfg.parts) <= set(PARTS)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        run_pj2(cfg, tmp_path / "f")
