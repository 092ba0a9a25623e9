"""The run folder: atomic writes, metrics.jsonl, summary.json, environment facts."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_folder(path: str | Path) -> Path:
    """An output folder (--out) may exist or not; a file in its place is the user's error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder")
    return path


def make_folder(path: str | Path) -> Path:
    """Create the output folder a run, sweep or study writes into (after check_folder)."""
    path = check_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | Path, write) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file.

    write(tmp) writes the content to the temporary path tmp (a name ending in .tmp: a writer that picks
    its format by the file name, as savefig does, must be told the format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def environment(device: torch.device | str) -> dict:
    """Versions and hardware, recorded in every summary so a result can be traced."""
    device = torch.device(device)
    env = {
        "cifarlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except Exception:  # torchvision is optional at run time
        pass
    return env
