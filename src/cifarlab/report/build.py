"""Render a scanned folder tree as one self-contained HTML file (and optionally Markdown + PNGs)."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from ..errors import UserError
from ..run import atomic_write_bytes, atomic_write_text
from ..version import __version__
from .scan import MARKER, Section, Table, fmt_acc, fmt_seconds, scan, shift_headings


def report_folder(dir: str | Path, out: str | Path | None = None, markdown: bool = False) -> Path:
    """Write the report of a run, sweep or study folder (or a folder of them) and return the HTML path.

    out: the HTML file (default DIR/report.html). markdown=True also writes OUT.md and the figures it
    shows as PNGs in OUT_figures/ beside it."""
    root = Path(dir)
    if not root.exists():
        raise UserError(f"report: folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"report: {root} is not a folder (give a run, sweep or study folder)")
    tree = scan(root)
    if not tree.has_content():
        raise UserError(f"report: nothing to report in {root} (no run, sweep or study folders, no figures)")
    out = Path(out) if out else root / "report.html"
    if out.is_dir():
        out = out / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        out = out.with_suffix(".html")
    fig_dir = out.parent / f"{out.stem}_figures"
    if markdown and fig_dir.exists() and not (fig_dir / MARKER).exists():  # before anything is written
        raise UserError(f"report: {fig_dir} exists and was not made by cifarlab report; choose another --out")
    ctx = context(tree, root)
    atomic_write_text(out, render_html(ctx))
    if markdown:
        write_figures(tree, fig_dir)
        atomic_write_text(out.with_suffix(".md"), render_markdown(ctx, fig_dir.name))
    return out


# ---------------------------------------------------------------- shared context


def context(tree: Section, root: Path) -> dict:
    sections = [s for s in tree.walk() if not s.compact]
    return {
        "title": tree.title,
        "root": str(root.resolve()),
        "version": __version__,
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "tree": tree,
        "sections": sections,
        "depth": {s.anchor: s.rel.count("/") + (s.rel != ".") for s in sections},
        "overview": overview(tree),
    }


def overview(tree: Section) -> Table | None:
    """One row per run (outside sweeps), sweep and model of a study: what each is and its final test
    accuracy (a sweep: its best configuration's, mean ± std over seeds)."""
    rows = []
    for s in tree.walk():
        o = s.overview
        if s.compact or not o:
            continue
        if o["kind"] == "sweep":
            rows.append(_sweep_row(s))
        elif o["kind"] == "run":
            head = [s.anchor, s.rel, "run", str(o["model"]), str(o["dataset"]), str(o["epochs"])]
            rows.append(head + [fmt_acc(o["final"]), fmt_seconds(o["seconds"]), f"{o['status']} ({o['device']})"])
        else:
            runs = f"{o['runs']} runs" if o.get("runs") else "-"
            for model, acc in (o["models"] or {"-": None}).items():  # each model its own row and accuracy
                head = [s.anchor, s.rel, s.label, model, str(o["dataset"]), "-"]
                rows.append(head + [fmt_acc(acc), fmt_seconds(o["seconds"]), runs])
    if not rows:
        return None
    return Table(
        title="overview",
        columns=["anchor", "folder", "kind", "model", "data", "epochs", "final test accuracy", "time", "status"],
        rows=rows,
    )


def _sweep_row(s: Section) -> list[str]:
    runs = [c.overview for c in s.children if c.kind == "run"]
    secs = [r["seconds"] for r in runs if isinstance(r.get("seconds"), (int, float))]
    epochs = sorted({str(r["epochs"]) for r in runs}, key=lambda e: (len(e), e))
    return [
        s.anchor,
        s.rel,
        "sweep",
        ", ".join(sorted({str(r["model"]) for r in runs})) or "-",
        ", ".join(sorted({str(r["dataset"]) for r in runs})) or "-",
        ", ".join(epochs) or "-",
        s.overview.get("final", "-"),
        fmt_seconds(sum(secs)) if secs else "-",
        f"{len(runs)} runs",
    ]


# ---------------------------------------------------------------- HTML


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cifarlab.report", "templates"),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = lambda f: "data:image/png;base64," + base64.b64encode(f.data()).decode("ascii")
    env.filters["markdown_html"] = markdown_html
    env.filters["shift_headings"] = shift_headings
    env.filters["md_cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    env.filters["status_class"] = lambda s: re.sub(r"[^a-z]+.*", "", s.lower()) or "none"
    return env


# Link targets a report keeps: web and mail links, in-page anchors, relative paths (no scheme at all).
# javascript:, data:, vbscript: ... would run or show code when clicked: the link keeps its text only.
_SAFE_URL = re.compile(r"(https?:|mailto:|#|[^:]*$)", re.IGNORECASE)


def _markdown():
    """Python-Markdown that treats raw HTML in the source as text (escaped, shown as written) and
    drops link and image targets that are not _SAFE_URL: a results.md or README.md holds names from
    folders (a sweep variant called `<script>...`), and the report must not run them."""
    import markdown as md_lib  # Python-Markdown (a dependency; tensorboard needs it too)
    from markdown.treeprocessors import Treeprocessor

    class SafeLinks(Treeprocessor):
        def run(self, root):
            for el in root.iter():
                for attr in ("href", "src"):
                    if el.get(attr) is not None and not _SAFE_URL.match(el.get(attr).strip()):
                        del el.attrib[attr]

    md = md_lib.Markdown(extensions=["tables", "sane_lists"], output_format="html")
    md.preprocessors.deregister("html_block")  # <div>...</div> blocks
    md.inlinePatterns.deregister("html")  # <script>, <img onerror=...>, comments inside a paragraph
    md.treeprocessors.register(SafeLinks(md), "safe_links", -1)  # last: after links are built and unescaped
    return md


def markdown_html(text: str) -> Markup:
    """A results.md or README.md as HTML: headings demoted under the section's own, tables sortable,
    raw HTML escaped (see _markdown), so the Markup holds only what Markdown itself writes."""
    try:
        md = _markdown()
    except ImportError:  # still readable: the Markdown source as it is
        return Markup(f"<pre>{escape(text)}</pre>")
    html = md.convert(shift_headings(text))
    html = html.replace("<table>", '<div class="table-wrap"><table class="sortable">').replace(
        "</table>", "</table></div>"
    )
    return Markup(html)


def render_html(ctx: dict) -> str:
    return _env(True).get_template("report.html").render(**ctx)


# ---------------------------------------------------------------- Markdown


def render_markdown(ctx: dict, fig_dir_name: str) -> str:
    return _env(False).get_template("report.md").render(fig_dir=fig_dir_name, **ctx)


def write_figures(tree: Section, fig_dir: Path) -> None:
    """Copy every figure the report shows into fig_dir (a folder only the report owns: marked, and
    emptied of the previous report's PNGs first; report_folder refuses a folder without the mark)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    (fig_dir / MARKER).write_text("figures of a cifarlab report; rewritten on every report\n")
    for old in fig_dir.glob("*.png"):
        old.unlink()
    for sec in tree.walk():
        for g in sec.groups:
            for f in g.figures:
                atomic_write_bytes(fig_dir / f.name, f.data())
