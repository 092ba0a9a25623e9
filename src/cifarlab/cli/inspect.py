"""`cifarlab inspect | predict | export` (parsers in analysis/cli.py until the analysis library moves)."""

from ..analysis.cli import add_export_parser, add_inspect_parser, add_predict_parser


def register(sub) -> None:
    for add in (add_inspect_parser, add_predict_parser, add_export_parser):
        add(sub)
