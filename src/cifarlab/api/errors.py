"""Errors raised from Python name Python arguments: the library's messages speak the command line's
words (--out, --set, --resume, --data), so the API rewrites those words on the way out."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

_WORDS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"--set (\S+?)=\.\.\."), r"overrides={'\1': ...}"),
    (re.compile(r"--set expects key=value"), "overrides expects {'key': value}"),
    (re.compile(r"--set\b"), "overrides="),
    (re.compile(r"--resume --out RUN_DIR"), "resume=True with out=RUN_DIR"),
    (re.compile(r"--resume\b"), "resume=True"),
    (re.compile(r"--out\b( RUN_DIR)?"), "out="),
    (re.compile(r"--data\b"), "data="),
    (re.compile(r"--split\b"), "split="),
    (re.compile(r"--layer\b"), "layer="),
    # any other flag names the keyword argument of the same name (--iters -> iters=, --batch-size -> batch_size=)
    (re.compile(r"--([a-z][a-z0-9-]*)\b"), lambda m: m[1].replace("-", "_") + "="),
]


def python_words(message: str) -> str:
    """A library message with its command-line flags replaced by the API's argument names."""
    for pattern, repl in _WORDS:
        message = pattern.sub(repl, message)
    return message


@contextlib.contextmanager
def python_errors() -> Iterator[None]:
    """Re-raise a UserError (the same object, so its type and fields stay) in the API's words."""
    try:
        yield
    except UserError as e:
        if e.args and isinstance(e.args[0], str):
            e.args = (python_words(e.args[0]), *e.args[1:])
        raise


def speaks_python(fn: F) -> F:
    """Decorator form of python_errors for the API's public functions."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with python_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
