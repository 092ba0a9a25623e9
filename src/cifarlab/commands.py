"""Subcommands beyond train/eval/models/data: each entry adds its parser to the CLI.

Each register function takes argparse's subparsers object and sets `fn` on its parser;
the work itself lives in the library module the command is named for.
"""

from .sweep.cli import add_sweep_parser

REGISTER: list = [add_sweep_parser]
