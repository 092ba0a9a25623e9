"""`cifarlab report DIR [--out report.html] [--markdown]`."""

from __future__ import annotations


def cmd_report(a) -> None:
    from ..report.build import report_folder

    out = report_folder(a.dir, a.out, markdown=a.markdown)
    print(f"report: {out}")
    if a.markdown:
        print(f"markdown: {out.with_suffix('.md')} (figures in {out.parent / (out.stem + '_figures')})")


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of run, sweep and study folders",
        description="Write one self-contained HTML file (figures embedded, sortable tables) "
        "from a run folder, a sweep folder, a study folder or a folder of them.",
    )
    p.add_argument("dir", help="a run, sweep or study folder, or a folder holding them (searched recursively)")
    p.add_argument("--out", help="the HTML file to write (default: DIR/report.html)")
    p.add_argument(
        "--markdown", action="store_true", help="also write OUT.md with the figures as PNG files in OUT_figures/"
    )
    p.set_defaults(fn=cmd_report)
