import os
from pathlib import Path

import pytest
import torch

# Two cores are all CI has: keep every test single-threaded so parallel work does not thrash.
torch.set_num_threads(1)

SHARED = Path(os.environ.get("CIFARLAB_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def shared_file(name: str) -> Path:
    """A file of the offline data (CIFARLAB_SHARED, default ../shared/data); skip with the reason if absent."""
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"needs {p} (set CIFARLAB_SHARED to the shared data folder)")
    return p
