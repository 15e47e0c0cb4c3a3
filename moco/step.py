"""One MoCo training step, correct on one device, under nn.DataParallel and under DistributedDataParallel.

The state changes (momentum update, queue writes) happen here on the base model, never inside the
(possibly replicated) forward. Nothing in a step waits for the device: the loss comes back as a
device tensor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from common.distributed import concat_all_gather, shared_permutation
from moco.builder import MoCo


class StepOutput(NamedTuple):
    loss: torch.Tensor  # 0-d, detached
    logits: tuple[torch.Tensor, ...]  # per InfoNCE term (N_local, 1+K), positive at index 0, detached


def _shuffle_key_views(
    key_views: Sequence[torch.Tensor], rank: int, seed: int | None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Shuffling BN (MoCo): permute the global batch of key views so each device's BatchNorm sees a
    different mix of clips than its queries do. Returns this rank's share and the inverse permutation
    of the global batch."""
    local = key_views[0].shape[0]
    gathered = [concat_all_gather(v) for v in key_views]  # (world*B, ...)
    perm = shared_permutation(gathered[0].shape[0], gathered[0].device, seed)
    mine = perm[rank * local : (rank + 1) * local]
    return [g[mine] for g in gathered], torch.argsort(perm)


def _gather_keys(
    keys: Sequence[torch.Tensor], rank: int, unshuffle: torch.Tensor | None
) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """(this rank's keys, in its queries' order; every rank's keys, for the queues).

    keys: per representation (B, dim), computed from the (possibly shuffled) key views of this rank.
    """
    local = keys[0].shape[0]
    all_keys = [concat_all_gather(k) for k in keys]  # (world*B, dim), in rank order
    if unshuffle is None:
        return tuple(keys), all_keys
    all_keys = [k[unshuffle] for k in all_keys]  # back in the order the clips were drawn
    return tuple(k[rank * local : (rank + 1) * local] for k in all_keys), all_keys


def _check_place(rank: int, world_size: int) -> None:
    """rank and world_size must be this process's in the process group (0 and 1 without one): the
    shuffling-BN slices and the queues' global batch are computed from them."""
    if dist.is_available() and dist.is_initialized():
        actual = (dist.get_rank(), dist.get_world_size())
    else:
        actual = (0, 1)
    if (rank, world_size) != actual:
        raise ValueError(
            f"contrastive_step: rank={rank}, world_size={world_size} but this process is rank {actual[0]} "
            f"of {actual[1]}"
        )


def contrastive_step(
    model: nn.Module,
    base: MoCo,
    views: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle_bn: bool = False,
    shuffle_seed: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> StepOutput:
    """One step of MoCo: momentum update, queries and keys, the InfoNCE loss, SGD step, enqueue.

    Inter-skeleton: L = InfoNCE(q, l, Queue_S2) + InfoNCE(r, k, Queue_S1) (see :meth:`MoCo.loss`);
    intra-skeleton: L = InfoNCE(q, k, queue).

    model: ``base`` itself, or a DataParallel/DDP wrapper of it. views: the dataset's tuple, on the
    device (inter: s1_v1, s2_v1, s1_v2, s2_v2; intra: v1, v2). rank, world_size: this process's place
    in the process group (0 and 1 without one); under DDP every rank's keys are gathered before they
    enter the queues, so all ranks' queues stay identical and advance by the global batch.
    shuffle_seed: seeds the shuffling-BN permutation (e.g. from seed, epoch and step, so that a resumed
    run shuffles as the uninterrupted one); None draws it from the global generator.
    """
    _check_place(rank, world_size)
    n = base.num_streams
    query_views, key_views = list(views[:n]), list(views[n:])
    base.momentum_update()  # before the keys, as MoCo prescribes
    unshuffle = None
    if shuffle_bn:
        key_views, unshuffle = _shuffle_key_views(key_views, rank, shuffle_seed)
    device_type = query_views[0].device.type
    amp = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    with amp:
        queries, keys = model(*query_views, *key_views)  # inter (q, r), (k, l); intra (q,), (k,)
    keys, all_keys = _gather_keys(keys, rank, unshuffle)
    loss, logits = base.loss(queries, keys)  # float32, outside autocast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    base.enqueue(all_keys)  # after backward: the logits' graph read the queues
    return StepOutput(loss.detach(), tuple(lg.detach() for lg in logits))
