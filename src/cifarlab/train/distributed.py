"""One run on several GPUs (or CPU processes): torchrun + DistributedDataParallel.

    torchrun --nproc_per_node=4 -m cifarlab train CONFIG --out runs/x

Every rank holds the whole dataset on its device and draws the same global batch (same seed), then
keeps its own contiguous slice of it. So data order and augmentation are exactly those of a
single-process run with the same global `data.batch_size`, and DDP's gradient average over equal
slices is the single-process gradient. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..data import Mixed
from ..errors import UserError


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_name: str) -> Dist | None:
    """Join the process group torchrun describes in the environment; None for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu"))


def shard(batches, d: Dist, batch_size: int):
    """Each rank's contiguous slice of every global batch."""
    if batch_size % d.world:
        raise UserError(f"data.batch_size {batch_size} must be divisible by the {d.world} processes")
    for x, y in batches:
        n = x.shape[0] // d.world
        sl = slice(d.rank * n, (d.rank + 1) * n)
        yield x[sl], (Mixed(y.y_a[sl], y.y_b[sl], y.lam) if isinstance(y, Mixed) else y[sl])


def broadcast(obj, d: Dist | None):
    """Rank 0's value of a picklable object, on every rank."""
    if d is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if d.device.type == "cuda":
        # Batch statistics over the global batch, as in the single-process run.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[d.device.index])
    return DDP(model)


def cleanup(d: Dist | None) -> None:
    if d is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
