"""Subcommands beyond train/eval/models/data: each entry adds its parser to the CLI.

Each register function takes argparse's subparsers object and sets `fn` on its parser;
the work itself lives in the library module the command is named for.
"""

from .analysis.cli import add_export_parser, add_inspect_parser, add_predict_parser
from .report.cli import add_report_parser
from .sparsity.cli import add_dessilbi_parser, add_prune_parser
from .studies.cli import add_bn_study_parser
from .studies.pj2 import add_pj2_parser
from .sweep.cli import add_sweep_parser

REGISTER: list = [
    add_sweep_parser, add_inspect_parser, add_predict_parser, add_export_parser,
    add_bn_study_parser, add_prune_parser, add_dessilbi_parser, add_pj2_parser, add_report_parser,
]
