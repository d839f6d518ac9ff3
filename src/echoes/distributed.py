"""Data-parallel runs under torchrun: one process per rank, set up from torchrun's environment.

``torchrun --nproc-per-node N -m echoes train ...`` (or ``train.nproc=N``) starts N copies of the
same command; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Everything
here is a no-op in a plain, single process, so callers need no second code path.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def launched() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU) once; return this rank's device
    (``cuda:LOCAL_RANK`` when the run asks for CUDA)."""
    if not launched():
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (from torchrun's RANK before the process group is set up)."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that tracks, checkpoints and prints."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (and returned). Sums that must be exact (counts,
    sufficient statistics) should come in float64."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank, in place (and returned): decisions all ranks must share."""
    if active():
        dist.broadcast(tensor, src)
    return tensor


def shard(indices: np.ndarray, *, pad: bool = False) -> np.ndarray:
    """This rank's share of ``indices``: every world_size-th one, from position ``rank``.

    ``pad``: first repeat indices from the start so every rank gets the same number (as
    DistributedSampler does) — what lock-step gradient steps need; exact sums must not pad."""
    indices = np.asarray(indices)
    n, world = len(indices), world_size()
    if pad and n % world:
        indices = np.concatenate([indices, np.resize(indices, world - n % world)])
    return indices[rank()::world]
