"""The version: the one place it is written (pyproject.toml reads it; the package root re-exports it)."""

__version__ = "0.1.0"
