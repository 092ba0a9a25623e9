"""Decode a source once: one torch file per source, reused while the source files are unchanged.

The fingerprint covers (path, size, mtime_ns) of every source file plus a format version, so a
replaced archive or a code change that alters decoding rebuilds the cache instead of serving stale
arrays. Writes are atomic: an interrupted build never leaves a cache file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import torch

from ..run import atomic_torch_save
from .sources import Source

FORMAT = 1  # bump when decoding changes what ends up in the arrays
KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "name", "mean", "std", "fingerprint")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIFARLAB_CACHE") or Path.home() / ".cache" / "cifarlab").expanduser()


def fingerprint(src: Source) -> str:
    stats = []
    for f in src.files:
        st = f.stat()
        stats.append([str(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps([FORMAT, src.kind, str(src.path), src.name, stats])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_file(src: Source, cache_dir: Path) -> Path:
    """<source name>-<hash of its location>.pt: readable, and two sources never share a file."""
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar)$", "", src.path.name, flags=re.I) or "data"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{src.name}-{stem}" if src.name not in ("", stem) else stem)
    where = hashlib.sha256(f"{src.kind}:{src.path}:{src.name}".encode()).hexdigest()[:8]
    return cache_dir / f"{slug}-{where}.pt"


def read_cache(path: Path, fp: str) -> dict | None:
    """The cached arrays if the file exists, loads and matches the fingerprint; else None."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable cache is just a miss: rebuild it
        return None
    if not isinstance(blob, dict) or blob.get("fingerprint") != fp or any(k not in blob for k in KEYS):
        return None
    if (why := damage(blob)) is not None:  # decoded from a checked source, so rebuilding it cures this
        print(f"cifarlab: warning: the data cache {path} is damaged ({why}); rebuilding it", file=sys.stderr)
        return None
    return blob


def damage(blob: dict) -> str | None:
    """What is wrong with a cache's arrays (shapes, types, labels outside the classes), or None: a bad
    label would fail deep inside a training step, or silently index another class."""
    tx, ty, vx, vy, classes = (blob[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes"))
    if not all(isinstance(t, torch.Tensor) for t in (tx, ty, vx, vy)) or not isinstance(classes, list):
        return "arrays of the wrong type"
    if tx.dtype != torch.uint8 or vx.dtype != torch.uint8 or tx.ndim != 4 or tx.shape[1:] != vx.shape[1:]:
        return f"images of shapes {tuple(tx.shape)} and {tuple(vx.shape)}, not N x H x W x C uint8"
    if ty.dtype != torch.int64 or vy.dtype != torch.int64 or ty.shape != tx.shape[:1] or vy.shape != vx.shape[:1]:
        return f"labels of shapes {tuple(ty.shape)} and {tuple(vy.shape)} for {len(tx)} and {len(vx)} images"
    labels = torch.cat([ty, vy])
    top = len(classes) or None  # a source without class names: the labels make them (data._name_classes)
    if len(labels) and (int(labels.min()) < 0 or (top is not None and int(labels.max()) >= top)):
        return f"labels span {int(labels.min())}..{int(labels.max())} for {len(classes)} classes"
    return None


def write_cache(path: Path, blob: dict) -> None:
    atomic_torch_save({k: blob[k] for k in KEYS}, path)
