"""The report in a real browser: Debian's headless Chromium opens it, at desktop and phone width,
with no console errors, every <img> decoded, no page-wide horizontal scrolling on a phone and
sortable tables that sort. Screenshots go to $CIFARLAB_ARTIFACTS (default: the test's tmp dir).

The browser helpers (a probe script, no browser-driver library) live in tests/chromium.py."""

import os
import re
from pathlib import Path

import pytest
from chromium import check, chromium, run_chromium

from cifarlab.report import report_folder


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_tree, tmp_path):
    browser = chromium()
    artifacts = Path(os.environ.get("CIFARLAB_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    page = report_folder(report_tree["root"], tmp_path / "report.html")
    n_imgs = len(re.findall(r"<img ", page.read_text()))
    assert n_imgs >= 10
    for name, width in (("desktop", 1280), ("phone", 390)):
        result, console = check(browser, page, tmp_path / f"profile-{name}", width)
        assert result["errors"] == [] and console == [], (name, result["errors"], console)
        assert result["images"] == n_imgs and result["bad"] == [], (name, result["bad"])
        assert result["sorted"] is True, name
        # wide tables and figures scroll or shrink inside their cards; the page itself never scrolls sideways
        # (headless Chromium's window is at least 500 px wide: the narrow check runs at 500, the shot at 390)
        assert result["innerWidth"] <= max(width, 500)
        assert result["scrollWidth"] <= result["innerWidth"], (name, result["scrollWidth"], result["innerWidth"])
        shot = artifacts / f"report-{name}.png"
        height = min(int(result["height"]) + 40, 16000)  # the whole page (Chromium caps a capture near 16k px)
        res = run_chromium(
            browser,
            tmp_path / f"profile-{name}",
            width,
            height,
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            page.as_uri(),
        )
        assert shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
