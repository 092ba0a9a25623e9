"""Names from folders are text in report.html, never markup (issue 22): a sweep whose variants are called
`<script>alert(1)</script>` and `<img src=x onerror=alert(1)>`, a run folder of such a name and a
README.md holding raw HTML and a javascript: link give a report with no script but its own and no
event attribute, the names shown as written."""

import json
import shutil
from html.parser import HTMLParser

import pytest
from conftest import tiny_dataset

from cifarlab.report import report_folder
from cifarlab.sweeps import load_sweep, run_sweep

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
RUN = {
    "model.name": "plainnet",
    "model.args": {"stages": [8, 16]},
    "data.batch_size": 64,
    "data.device": "cpu",
    "optim.name": "momentum",
    "train.epochs": 1,
    "train.progress": False,
    "train.log_tensorboard": False,
}
README = f"""# notes {SCRIPT}

<div onmouseover="alert(2)">block html</div>

| variant | note |
|---|---|
| {IMG} | [click](javascript:alert(3)) [ok](https://example.org) |
"""


class Tags(HTMLParser):
    """Every start tag with its attributes, the text inside each script, and all text."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self.text, self._in_script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("xss")
    spec = root / "xss.yaml"
    variants = {SCRIPT: {"optim.lr": 0.1}, IMG: {"optim.lr": 0.02}}
    spec.write_text(json.dumps({"name": "xss", "set": RUN, "seeds": [0], "variants": variants}))
    sweep = root / "task" / "xss"
    run_sweep(load_sweep(spec), sweep, engine="local", data=tiny_dataset(n_train=64, n_test=32))
    spec.unlink()
    (sweep / "README.md").write_text(README)
    first = sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())[0]
    shutil.copytree(first, root / "task" / IMG)  # a run folder named like markup
    html = report_folder(root).read_text()
    parser = Tags()
    parser.feed(html)
    return {"html": html, "parser": parser, "sweep": sweep}


def test_the_sweep_and_its_names_are_in_the_report(report):
    results = (report["sweep"] / "results.md").read_text()
    assert SCRIPT in results and IMG in results  # the names reach the report through results.md
    text = "".join(report["parser"].text)
    assert SCRIPT in text and IMG in text  # shown as written, as text
    assert "block html" in text and '<div onmouseover="alert(2)">' in text


def test_no_script_but_the_reports_own(report):
    p = report["parser"]
    assert [t for t, _ in p.tags].count("script") == 1  # the sortable-tables script at the end
    assert all("alert" not in s for s in p.scripts)
    assert "<script>alert" not in report["html"]


def test_no_event_attribute_and_no_javascript_link(report):
    p = report["parser"]
    events = [(t, a) for t, attrs in p.tags for a in attrs if a.lower().startswith("on")]
    assert not events
    targets = [v for _, attrs in p.tags for k, v in attrs.items() if k in ("href", "src") and v]
    assert not [v for v in targets if v.strip().lower().startswith(("javascript:", "vbscript:"))]
    assert "https://example.org" in targets  # an ordinary link stays a link
    own = ("data:image/png;base64,", "data:,")  # embedded figures, the empty favicon
    assert not [v for v in targets if v.startswith("data:") and not v.startswith(own)]
