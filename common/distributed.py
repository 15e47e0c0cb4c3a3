"""Collectives over the torchrun process group; each is the identity (or a no-op) in a single process,
so the contrastive step and the evaluation loops call them unconditionally."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """Whether a process group with more than one process is live."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) of every rank along dim 0, in rank order -> (world*B, ...).

    No gradient flows through. Every rank must pass the same shape. Identity in a single process.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``op`` 'sum' or 'max') across ranks; identity in a single process."""
    if is_distributed():
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def shared_permutation(n: int, device: torch.device, seed: int | None = None) -> torch.Tensor:
    """A random permutation of range(n), identical on every rank.

    With ``seed`` every rank draws the same permutation from its own generator (no communication, and
    a resumed run draws what the uninterrupted one did); without, rank 0 draws from the global
    generator and broadcasts.
    """
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randperm(n, generator=generator).to(device)
    perm = torch.randperm(n).to(device)
    if is_distributed():
        dist.broadcast(perm, src=0)
    return perm


@torch.no_grad()
def broadcast_module_state(module: nn.Module) -> None:
    """Make every rank's parameters and buffers equal to rank 0's (call before wrapping in DDP with
    ``broadcast_buffers=False``, which would otherwise leave buffers such as queues unsynced)."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (a seed drawn per process, whether a file rank 0 wrote exists);
    ``value`` itself in a single process. ``device``: where the backend communicates (CUDA for NCCL)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()
