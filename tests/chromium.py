"""Headless Chromium for the report tests (Debian's chromium package, no browser-driver library).

A probe script is put first in a copy of the page; it records errors and the checks (images decoded,
the overview table sorts, page width) into the DOM, which Chromium prints with --dump-dom.
Used by tests/report/test_browser.py and tests/studies/test_pj2.py."""

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  __errors.push(t && t.tagName ? "failed to load " + t.tagName + " " + (t.getAttribute("alt") || "") : String(e.message));
}, true);
window.addEventListener("unhandledrejection", function (e) { __errors.push("rejection " + e.reason); });
["error", "warn"].forEach(function (k) {
  var orig = console[k];
  console[k] = function () { __errors.push("console." + k + " " + [].join.call(arguments, " ")); orig.apply(console, arguments); };
});
window.addEventListener("load", function () { setTimeout(function () {
  var imgs = [].slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  // sort the overview by "final test accuracy" (ascending): the numbers must come out in order
  var sorted = null, table = document.querySelector("#overview table.sortable");
  if (table) {
    var heads = [].slice.call(table.tHead.rows[0].cells);
    var k = heads.findIndex(function (h) { return h.textContent.indexOf("final test accuracy") === 0; });
    heads[k].click();
    var v = [].slice.call(table.tBodies[0].rows).map(function (r) { return parseFloat(r.cells[k].textContent); })
      .filter(function (x) { return !isNaN(x); });
    sorted = v.every(function (x, i) { return i === 0 || v[i - 1] <= x; }) && heads[k].getAttribute("aria-sort") === "ascending";
  }
  var out = document.createElement("div");
  out.id = "__probe";
  out.setAttribute("data-result", JSON.stringify({images: imgs.length, bad: bad, errors: __errors, sorted: sorted,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    height: document.documentElement.scrollHeight}));
  document.body.appendChild(out);
}, 0); });
</script>"""


def chromium() -> str:
    for name in (os.environ.get("CIFARLAB_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.skip("needs Chromium (apt-get install -y chromium), or CIFARLAB_CHROMIUM=/path/to/chrome")


def run_chromium(browser: str, profile: Path, width: int, height: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={width},{height}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


class ProbeResult(HTMLParser):
    def __init__(self, dom: str):
        super().__init__()
        self.result = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "__probe":
            self.result = json.loads(a["data-result"])


def check(browser: str, page: Path, profile: Path, width: int) -> tuple[dict, list[str]]:
    probed = page.with_name(page.stem + ".probe.html")
    html = page.read_text()
    probed.write_text(html.replace("<head>", "<head>\n" + PROBE, 1))
    res = run_chromium(browser, profile, width, 900, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    probed.unlink()
    result = ProbeResult(res.stdout).result
    assert result is not None, f"the probe did not run (exit {res.returncode}): {res.stderr[-2000:]}"
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln]  # anything the page logged
    return result, console
