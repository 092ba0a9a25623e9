"""The run folder: atomic writes, metrics.jsonl, summary.json, environment facts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .version import __version__

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


# The files that make a folder a run's: one holding any of them is taken (train refuses it unless resumed).
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt")
LOCK_NAME = ".lock"


def holds_run(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in RUN_FILES)


@contextlib.contextmanager
def lock_folder(path: str | Path) -> Iterator[Path]:
    """Hold path/.lock for the whole block: a second writer into the same folder gets a UserError at once.

    An flock, not an O_EXCL file: the kernel drops it when its process dies (kill -9, OOM), so a
    stale lock needs no pid check (no pid reuse, no two processes racing to take one over); the
    pid and host written in it only name the holder. The file is removed when the block ends (and the
    folder, when the block made it and left it empty)."""
    created = not Path(path).exists()
    path = make_folder(path)
    lock = path / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except FileNotFoundError:  # a first writer that failed at once removed the folder it made
            path.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(
                f"{path} is being written by another process (pid and host: {holder}); "
                "wait for it to end or use another --out"
            ) from None
        try:  # the holder may have removed the file between our open and flock: lock the new one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {platform.node()}\n".encode())
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # still locked here, so no other process holds this file
        os.close(fd)
        if created:  # a refused or failed first run leaves no empty folder behind
            with contextlib.suppress(OSError):
                path.rmdir()


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno is not None and e.filename in (None, tmp):  # name the file asked for, not its temporary
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
        raise
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
    # Through a Python file: a full disk is then an OSError with its errno (ENOSPC), where torch.save
    # given a path reports only "[enforce fail at inline_container.cc] unexpected pos".
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def append_jsonl(path: str | Path, record: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
    except OSError as e:  # a failed write names no file: name it
        if e.errno is None or e.filename is not None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from None


def read_jsonl(path: str | Path, partial_tail: bool = False) -> list[dict]:
    """The records of a JSON-lines file. partial_tail: a last line that is not JSON (a write cut off
    by a kill) is dropped instead of raising."""
    p = Path(path)
    if not p.exists():
        return []
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    out = [json.loads(line) for line in lines[:-1]]
    if lines:
        try:
            out.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            if not partial_tail:
                raise
    return out


def read_summary(path: str | Path, keys: tuple[str, ...] = ()) -> dict | None:
    """summary.json as a dict, or None when it is missing, not JSON, or lacks one of keys (a partial file)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) and all(k in d for k in keys) else None


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
