"""The `cifarlab` command: the top floor. Each subcommand parses, calls one library function, prints.

Every error a user can cause is a UserError: one line on stderr, exit status 2, no traceback.
Nothing below this package parses arguments.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys

from ..errors import UserError
from ..version import __version__
from . import inspect, report, sparsity, studies, sweep, train

# Each module adds its subcommands to the parser, in the order `cifarlab --help` lists them.
MODULES = [train, sweep, inspect, studies, sparsity, report]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cifarlab",
        description="Train, compare and look inside convolutional networks on CIFAR-10. "
        "`cifarlab COMMAND --help` tells what each command takes and writes.",
    )
    p.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return p


# torch.save reports a failed write as a RuntimeError whose message holds the OS's words
WRITE_FAILURES = (
    "No space left",
    "Permission denied",
    "Read-only file system",
    "file write failed",
    "unexpected pos",
    "Disk quota exceeded",
    "PytorchStreamWriter failed",
)


WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, None)


# the OS's words torch keeps in its message, and their errno
_ERRNOS = {"No space left": errno.ENOSPC, "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS,
           "Disk quota exceeded": errno.EDQUOT}  # fmt: skip


def is_write_failure(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and any(w in str(e) for w in WRITE_FAILURES)


def _shown_path(path) -> str:
    """The file the user asked for: atomic writes go through a temporary '.NAME.XXXX.tmp' beside it."""
    m = re.fullmatch(r"\.(.+)\.[a-z0-9_]{8}(?:\.tmp|\.onnx|\.torchscript\.pt)", os.path.basename(str(path)))
    return os.path.join(os.path.dirname(str(path)), m.group(1)) if m else str(path)


def _path_from_traceback(e: BaseException):
    """torch.save's message names no file: take it from the frames (run.atomic_write's path, torch.save's f)."""
    found, tb = None, e.__traceback__
    while tb is not None:
        f = tb.tb_frame
        if f.f_code.co_name == "atomic_write" and "path" in f.f_locals:
            found = f.f_locals["path"]
        elif found is None and f.f_code.co_name == "save" and isinstance(f.f_locals.get("f"), (str, os.PathLike)):
            found = f.f_locals["f"]
        tb = tb.tb_next
    return found


def write_error(e: BaseException) -> str:
    """'cannot write PATH: REASON', one line, for an OSError or torch.save's RuntimeError wrapping one."""
    if isinstance(e, OSError):
        path = e.filename if e.filename is not None else getattr(e.__cause__, "filename", None)
        reason = e.strerror or str(e) or type(e).__name__
        verb = "write" if e.errno in WRITE_ERRNOS else "open"
    else:  # torch.save given a path: its text ("inline_container.cc ... unexpected pos") says nothing to a user
        path, verb = _path_from_traceback(e), "write"
        reason = next((w for w in _ERRNOS if w in str(e)), None)
        reason = os.strerror(_ERRNOS[reason]) if reason else _why_write_failed(path)
    reason = reason or "write failed"
    return f"cannot {verb} {_shown_path(path)}: {reason}" if path is not None else f"cannot {verb}: {reason}"


def _why_write_failed(path) -> str:
    """torch lost the errno: a folder with no free space left is the usual cause."""
    try:
        st = os.statvfs(os.path.dirname(str(path)) or ".")
    except (OSError, TypeError):
        return "write failed"
    return os.strerror(errno.ENOSPC) if st.f_bavail * st.f_frsize < 2**20 else "write failed"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except UserError as e:
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the user: a read-only or full disk, no permission
        print(f"cifarlab: error: {write_error(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if not is_write_failure(e):
            raise
        print(f"cifarlab: error: {write_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", "a training run resumes with --resume --out RUN_DIR")
        print(f"cifarlab: interrupted ({hint})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
