"""The `cifarlab` command: the top floor. Each subcommand parses, calls one library function, prints.

Every error a user can cause is a UserError: one line on stderr, exit status 2, no traceback.
Nothing below this package parses arguments.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import UserError
from . import inspect, report, sparsity, studies, sweep, train

# Each module adds its subcommands to the parser, in the order `cifarlab --help` lists them.
MODULES = [train, sweep, inspect, studies, sparsity, report]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cifarlab",
        description="Train, compare and look inside convolutional networks on CIFAR-10. "
                    "`cifarlab COMMAND --help` tells what each command takes and writes.")
    p.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except UserError as e:
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", "a training run resumes with --resume --out RUN_DIR")
        print(f"cifarlab: interrupted ({hint})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
