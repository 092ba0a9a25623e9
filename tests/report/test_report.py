"""The report of a real folder tree (engine run + analyses, killed run, sweep, BN study): one
self-contained HTML file with every figure embedded and captioned, sortable tables, the runs'
settings, environment and training curves; Markdown mode; errors a user can cause."""

import argparse
import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from cifarlab.cli.report import register as add_report_parser
from cifarlab.errors import UserError
from cifarlab.report import caption_for, report_folder
from cifarlab.report.captions import fallback_caption


class Page(HTMLParser):
    """The parts of the page the tests look at: images, links, scripts, tables, captions."""

    def __init__(self, html: str):
        super().__init__()
        self.imgs, self.refs, self.tables, self.captions, self.ids = [], [], [], [], set()
        self._cap = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag == "table":
            self.tables.append(a.get("class", ""))
        if tag == "figcaption":
            self._cap = ""
        for key in ("src", "href"):
            if key in a:
                self.refs.append((tag, a[key]))

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.captions.append(self._cap.strip())
            self._cap = None

    def handle_data(self, data):
        if self._cap is not None:
            self._cap += data


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if "report_figures" not in p.parts)


def _runs_with_metrics(tree) -> int:
    """Run folders whose curves the report draws: best, broken, the sweep's runs and the BN study's runs."""
    bn_runs = len(list(tree["bn"].glob("runs/*/metrics.jsonl"))) if tree["bn"] else 0
    return 2 + (2 if tree["sweep"] else 0) + bn_runs


@pytest.fixture(scope="module")
def report(report_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report.html"
    path = report_folder(report_tree["root"], out)
    html = path.read_text()
    return path, html, Page(html)


def test_html_is_self_contained(report):
    _, html, page = report
    assert html.startswith("<!doctype html>") and '<meta name="viewport"' in html
    for tag, ref in page.refs:  # data: images and #anchors only: nothing to fetch
        assert ref.startswith(("data:", "#")), (tag, ref[:80])
    assert "<script src" not in html and 'rel="stylesheet"' not in html and "@import" not in html
    assert "@media print" in html and "max-width: 100%" in html


def test_every_png_of_the_tree_is_embedded_with_a_caption(report, report_tree):
    _, html, page = report
    files = pngs(report_tree["root"])
    assert len(files) >= 10
    for p in files:
        assert base64.b64encode(p.read_bytes()).decode() in html, p
    runs_with_metrics = _runs_with_metrics(report_tree)
    assert len(page.imgs) == len(files) + runs_with_metrics
    assert len(page.captions) == len(page.imgs)
    for img in page.imgs:  # each is a PNG whose stated size is its real size
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int(img["width"]), int(img["height"])) == (
            int.from_bytes(data[16:20], "big"),
            int.from_bytes(data[20:24], "big"),
        )
        assert img["alt"]
    # every figure the analyses, sweep and study wrote has a real caption, not the fallback
    assert not [c for c in page.captions if c.startswith("Figure:")]
    assert sum("Training curves drawn from metrics.jsonl" in c for c in page.captions) == runs_with_metrics
    assert any(c.startswith("Confusion matrix on the test set") for c in page.captions)
    assert any(c.startswith("First-layer convolution kernels") for c in page.captions)
    assert any("Kernels of layer layer1.0.conv1" in c for c in page.captions)


def test_runs_show_settings_environment_config_and_status(report, report_tree):
    _, html, page = report
    summary = json.loads((report_tree["best"] / "summary.json").read_text())
    assert "<h3>Key settings</h3>" in html and "<h3>Environment</h3>" in html
    assert "name momentum, lr 0.05" in html  # optim row: the settings that differ from defaults
    assert "args.stages [8, 16]" in html and "crop_padding 2" in html
    assert f"<td>{torch.__version__}</td>" in html
    assert "Full configuration (config.yaml)" in html and "weight_decay:" in html
    assert f"{100 * summary['best_test_acc']:.2f}%" in html
    assert "partial (2/4 epochs)" in html  # the killed run
    assert "s-task1-best" in page.ids and "s-task1-broken" in page.ids and "overview" in page.ids
    # the contents link to sections that exist
    assert all(ref[1:] in page.ids for tag, ref in page.refs if tag == "a" and ref.startswith("#"))


def test_tables_are_sortable_and_hold_the_results(report, report_tree):
    _, html, page = report
    assert page.tables.count("sortable") >= 2
    overview = html.split('id="overview"', 1)[1].split("</section>", 1)[0]
    assert "task1/best" in overview and "task1/broken" in overview
    if report_tree["sweep"]:
        sweep = html.split('id="s-task1-ablation-lr"', 1)[1].split("</section>", 1)[0]
        assert "lr0.1-s0" in sweep and "lr0.02-s0" in sweep  # per-run table and folded runs
        assert "Full configuration (sweep.yaml)" in sweep
        assert re.search(r'<table class="sortable">\s*<thead>\s*<tr>\s*<th[^>]*>optim.lr</th>', sweep)
        assert "metric_by_axis.png" in sweep
    if report_tree["bn"]:
        bn = html.split('id="s-task2-bn"', 1)[1].split("</section>", 1)[0]
        assert "Batch-normalization study" in bn and "course_band_width" in bn
        assert "Loss band:" in bn and "plain_bn: final test acc" in bn
        assert "<h3>Batch-normalization study" in bn  # results.md's '# title', demoted under the section


def test_markdown_mode_writes_md_and_pngs_and_reruns_cleanly(report_tree, tmp_path):
    root = shutil.copytree(report_tree["root"], tmp_path / "tree")
    n_imgs = len(pngs(root)) + _runs_with_metrics(report_tree)
    for _ in range(2):  # written inside the tree twice: its own copies are never picked up again
        html = report_folder(root, markdown=True)
        assert html == root / "report.html"
        md = (root / "report.md").read_text()
        figs = sorted((root / "report_figures").glob("*.png"))
        assert len(figs) == n_imgs == len(Page(html.read_text()).imgs)
        links = re.findall(r"!\[([^\]]*)\]\(report_figures/([^)]+)\)", md)
        assert sorted(f for _, f in links) == sorted(p.name for p in figs)
        assert all(cap for cap, _ in links)
    assert "| setting | value |" in md and "```yaml" in md
    assert "### Batch-normalization study" in md or not report_tree["bn"]


def test_a_single_run_folder_and_cli(report_tree, tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_report_parser(p.add_subparsers())
    out = tmp_path / "run.html"
    args = p.parse_args(["report", str(report_tree["best"]), "--out", str(out), "--markdown"])
    args.fn(args)
    assert f"report: {out}" in capsys.readouterr().out
    page = Page(out.read_text())
    assert "s-root" in page.ids  # the run itself is the root section
    assert (tmp_path / "run.md").is_file() and len(list((tmp_path / "run_figures").glob("*.png"))) == len(page.imgs)


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        report_folder(tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="nothing to report"):
        report_folder(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.html").exists()
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        report_folder(tmp_path / "f.txt")


def test_markdown_never_overwrites_a_foreign_figures_folder(report_tree, tmp_path):
    (tmp_path / "r_figures").mkdir()
    (tmp_path / "r_figures" / "mine.png").write_bytes(b"precious")
    with pytest.raises(UserError, match="not made by cifarlab report"):
        report_folder(report_tree["best"], tmp_path / "r.html", markdown=True)
    assert (tmp_path / "r_figures" / "mine.png").read_bytes() == b"precious"
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.md").exists()


def test_captions_table_json_override_and_fallback(tmp_path):
    assert caption_for(tmp_path / "loss_band.png").startswith("Loss band")
    assert "layer3.1.conv2" in caption_for(tmp_path / "kernels_layer3.1.conv2.png")
    assert "image 2" in caption_for(tmp_path / "features_2_01_layer4.png")
    assert caption_for(tmp_path / "landscape_contourf.png").startswith("Filled contour")
    assert caption_for(tmp_path / "trajectory_contour.png").startswith("The training trajectory")
    assert caption_for(tmp_path / "my_odd_plot.png") == fallback_caption("my_odd_plot") == "Figure: my odd plot."
    d = tmp_path / "withjson"
    d.mkdir()
    (d / "captions.json").write_text(json.dumps({"loss_band.png": "Our own words."}))
    assert caption_for(d / "loss_band.png") == "Our own words."
    assert caption_for(d / "probes.png").startswith("Santurkar")


def test_a_folder_of_figures_only(report_tree, tmp_path):
    """An analysis output folder on its own (no run around it) is a report of its figures."""
    src = report_tree["best"] / "analysis" / "metrics"
    shutil.copytree(src, tmp_path / "metrics")
    page = Page(report_folder(tmp_path / "metrics").read_text())
    assert len(page.imgs) == len(list(src.glob("*.png"))) == 3
    assert any(c.startswith("Test accuracy for each class") for c in page.captions)


def test_a_sweep_without_results_md_is_tabulated_in_memory(report_tree, tmp_path):
    if not report_tree["sweep"]:
        pytest.skip("the sweep module is not there")
    sweep = shutil.copytree(report_tree["sweep"], tmp_path / "sweep")
    (sweep / "results.md").unlink()
    before = sorted(p.name for p in sweep.iterdir())
    (tmp_path / "out").mkdir()
    html = report_folder(sweep, tmp_path / "out").read_text()  # an existing folder: OUT/report.html
    assert (tmp_path / "out" / "report.html").is_file()
    assert "best by final_test_acc: optim.lr=0.1" in html or "best by final_test_acc: optim.lr=0.02" in html
    assert re.search(r"<th[^>]*>optim.lr</th>\s*<th[^>]*>n</th>", html)  # the mean ± std table
    assert sorted(p.name for p in sweep.iterdir()) == before  # the sweep folder is not written to


def test_study_settings_come_from_its_summary_and_old_folders_show_their_config(tmp_path):
    """A study records its key settings in summary.json; the report imports no study to find its defaults."""
    from cifarlab.report.scan import scan

    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    cfg = {"name": "x", "progress": True, "epochs": 3, "lr": 0.1, "models": ["a", "b"]}
    (new / "summary.json").write_text(json.dumps({"study": "bn", "config": cfg, "settings": {"epochs": 3}}))
    (old / "summary.json").write_text(json.dumps({"study": "bn", "config": cfg}))  # written before "settings"
    secs = {s.path.name: s for s in scan(tmp_path).walk()}
    assert secs["new"].settings == [("epochs", "3")]
    assert secs["old"].settings == [("epochs", "3"), ("lr", "0.1"), ("models", "[a, b]")]
