"""The settings a study records in its summary.json ("settings") for the report's "Key settings".

The study knows its config class, so it decides here what is worth showing: its essentials, and
whatever differs from the class's defaults. The report reads the result and imports no study.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import to_dict

ESSENTIALS = ("data", "dataset", "model", "models", "epochs", "lr", "lrs", "optimizer", "batch_size", "n_items", "seed")
SKIP = ("name", "progress", "cache_dir")


def _plain(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))  # as summary.json will hold it (tuples are lists)


def key_settings(cfg: Any, against_defaults: bool = True) -> dict[str, Any]:
    """{key: value} of a study config: the essentials and what differs from the defaults (every key but
    name, progress and cache_dir when against_defaults is False)."""
    values = _plain(to_dict(cfg))
    defaults = _plain(to_dict(type(cfg)())) if against_defaults else None
    return {
        k: v
        for k, v in values.items()
        if k not in SKIP and (defaults is None or k in ESSENTIALS or k not in defaults or defaults[k] != v)
    }
