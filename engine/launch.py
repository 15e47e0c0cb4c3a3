"""Process-group plumbing for torchrun (DistributedDataParallel) runs; every function is a no-op or the
identity in a single process, so training code calls them unconditionally.

Launch: ``torchrun --nproc_per_node=N [--nnodes=M --node_rank=R --master_addr=A --master_port=P] script.py``.
torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`setup` reads them. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from common.distributed import broadcast_module_state
from common.io import UsageError
from engine.training import select_device

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def distributed(self) -> bool:
        """True under torchrun (even with one process): collectives are live."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def env_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun), readable before :func:`setup`."""
    return int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1


def batch_world_size(batch_size: int) -> int:
    """:func:`env_world_size`, checked to divide ``--batch-size`` evenly (UsageError when it does not)."""
    world_size = env_world_size()
    if batch_size % world_size:
        raise UsageError(f"--batch-size {batch_size} must be divisible by the {world_size} processes")
    return world_size


def setup(requested_device: str = "auto") -> DistContext:
    """Pick the device and, under torchrun, join the process group.

    Single process: :func:`engine.training.select_device`. torchrun: ``cuda:LOCAL_RANK`` when CUDA is
    available and not refused by ``--device cpu`` (NCCL), else the CPU (gloo). A device that cannot be
    had raises :class:`common.io.UsageError`.
    """
    if not launched_by_torchrun():
        return DistContext(device=select_device(requested_device))
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if requested_device not in ("auto", "cpu", "cuda"):
        raise UsageError(
            f"--device {requested_device}: under torchrun each process takes cuda:LOCAL_RANK; "
            "pass --device auto, cuda or cpu"
        )
    use_cuda = select_device(requested_device).type == "cuda"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistContext(rank=rank, world_size=world_size, device=device)


def wrap_model(
    model: nn.Module,
    ctx: DistContext,
    *,
    trainable: bool,
    requested_device: str = "auto",
    broadcast_buffers: bool = True,
) -> nn.Module:
    """``model`` on ``ctx.device``, wrapped for the launch mode.

    Under torchrun every rank's parameters and buffers first become rank 0's (without ``--seed`` each
    rank initialised its own), then a ``trainable`` model is wrapped in DistributedDataParallel (a
    frozen one needs no wrapper: inference on a shard needs no gradient averaging).
    ``broadcast_buffers=False`` for models whose buffers are kept equal by other means (MoCo's queues,
    filled with keys gathered from every rank). In one process: DataParallel over every visible GPU when
    the device is plain ``cuda`` or ``auto`` (as the reference runs), else the model itself (the CPU,
    or one chosen GPU such as ``cuda:1``).
    """
    device = ctx.device
    model = model.to(device)
    if ctx.distributed:
        broadcast_module_state(model)
        if not trainable:
            return model
        ids = [device.index] if device.type == "cuda" else None
        # DDP registers only parameters with requires_grad, so a frozen encoder under a trained head
        # needs no find_unused_parameters.
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, **_buffer_sync_kwargs(broadcast_buffers))
    several_gpus = device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1
    return nn.DataParallel(model) if several_gpus and requested_device in ("auto", "cuda") else model


def _buffer_sync_kwargs(broadcast_buffers: bool) -> dict[str, bool]:
    # Newer torch renames the per-forward buffer broadcast (and warns about the old name); the
    # difference, a sync at construction, is moot after broadcast_module_state.
    if broadcast_buffers:
        return {}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel or DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def parallel_mode(model: nn.Module, ctx: DistContext) -> str:
    """How :func:`wrap_model` runs ``model``, for the start-up line."""
    if ctx.distributed:
        return f"DistributedDataParallel over {ctx.world_size} processes"
    if isinstance(model, nn.DataParallel):
        return f"DataParallel over {len(model.device_ids)} GPUs"
    return "single device"


@contextmanager
def process_context(requested_device: str = "auto") -> Iterator[DistContext]:
    """:func:`setup` for the block; the process group is left however the block ends (every entry point
    runs inside one)."""
    ctx = setup(requested_device)
    try:
        yield ctx
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def rank0_printer(ctx: DistContext) -> Callable[[str], None]:
    """``print`` (flushed) on rank 0, nothing on the other ranks."""
    return (lambda line: print(line, flush=True)) if ctx.is_main else (lambda line: None)


def progress_bars(ctx: DistContext) -> Callable[[Iterable[Any], str], tqdm]:
    """Progress bars on stderr for the loops of :mod:`engine.evaluation`, shown on rank 0 only."""

    def bar(iterable: Iterable[Any], desc: str) -> tqdm:
        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, disable=not ctx.is_main)

    return bar
