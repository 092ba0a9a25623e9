"""Options several subcommands share: --set and --data mean the same thing everywhere."""

from __future__ import annotations

from ..errors import UserError


def add_set(p, example: str) -> None:
    # nargs="+" with extend: `--set a=1 b=2`, `--set "a=1 b=2"` and `--set a=1 --set b=2` all work
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config values, e.g. {example}",
    )


def overrides(a, positional: str | None = None) -> list[str]:
    """The --set items; a word without '=' that --set swallowed is the missing positional argument."""
    items, words = [], []
    for item in a.set or []:
        (items if "=" in item else words).append(item)
    if words and positional and getattr(a, positional) is None and len(words) == 1:
        setattr(a, positional, words[0])
    elif words:
        raise UserError(f"--set expects key=value, got '{words[0]}'")
    return items


def add_parallel(p) -> None:
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="independent runs at once on this machine, each in its own process "
        "(default: as GPU memory and CPU cores allow; 1 on a CPU)",
    )
