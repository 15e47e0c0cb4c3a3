"""MoCo's arithmetic as pure functions: InfoNCE logits and loss, the momentum update, the key queue.

Nothing here knows about encoders, devices or processes; :mod:`moco.builder` applies these functions to
the tensors a model holds, once per training step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def info_nce_labels(logits: torch.Tensor) -> torch.Tensor:
    """The target class of every row of InfoNCE logits (N, 1+K): the positive's column, 0. (N,) long."""
    return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)


def info_nce_logits(
    query: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the (1+K)-way contrast of each query against its positive key and the queued negatives.

    query, positive: (N, C) L2-normalised; queue: (C, K) L2-normalised columns.
    Returns logits (N, 1+K) -- column 0 the positive, columns 1.. the queue -- divided by
    ``temperature``, and labels (N,) of zeros (the positive's index).
    """
    if query.dim() != 2 or positive.shape != query.shape:
        raise ValueError(
            f"query and positive must both be (N, C), got {tuple(query.shape)} and {tuple(positive.shape)}"
        )
    if queue.dim() != 2 or queue.shape[0] != query.shape[1]:
        raise ValueError(f"queue must be (C, K) with C = {query.shape[1]}, got {tuple(queue.shape)}")
    pos = (query * positive).sum(dim=1, keepdim=True)  # (N, 1)
    neg = query @ queue  # (N, K)
    logits = torch.cat((pos, neg), dim=1) / temperature  # (N, 1+K)
    return logits, info_nce_labels(logits)


def contrastive_loss(
    query: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of each query against its positive key and the queue; returns (loss, logits).

    loss = mean over n of -log( exp(q_n . k_n / T) / (exp(q_n . k_n / T) + sum_j exp(q_n . queue_j / T)) ),
    the cross-entropy of :func:`info_nce_logits` with the positive as the target class.
    """
    logits, labels = info_nce_logits(query, positive, queue, temperature)
    return F.cross_entropy(logits, labels), logits


# torch._foreach_* are private, but they are what torch.optim's own optimizers use for the same kind of
# update: one fused kernel per op over all tensors instead of two kernels per parameter, which matters
# on a GPU (the AGCN has 274 parameter tensors). The per-tensor loop computes the same numbers and takes
# over should a torch release drop them; tests/test_moco.py checks both paths against each other.
_HAS_FOREACH = hasattr(torch, "_foreach_mul_") and hasattr(torch, "_foreach_add_")


def _momentum_update_foreach(keys: list[torch.Tensor], queries: list[torch.Tensor], m: float) -> None:
    torch._foreach_mul_(keys, m)
    torch._foreach_add_(keys, queries, alpha=1.0 - m)


def _momentum_update_loop(keys: list[torch.Tensor], queries: list[torch.Tensor], m: float) -> None:
    for k, q in zip(keys, queries):
        k.mul_(m).add_(q, alpha=1.0 - m)


@torch.no_grad()
def momentum_update(key_params: Iterable[torch.Tensor], query_params: Iterable[torch.Tensor], m: float) -> None:
    """In place, for every pair: key <- m * key + (1 - m) * query (MoCo's momentum encoder)."""
    keys = [p.detach() for p in key_params]
    queries = [p.detach() for p in query_params]
    if len(keys) != len(queries):
        raise ValueError(f"momentum_update: {len(keys)} key tensors but {len(queries)} query tensors")
    for k, q in zip(keys, queries):
        if k.shape != q.shape:
            raise ValueError(
                f"momentum_update: key tensor {tuple(k.shape)} does not match query tensor {tuple(q.shape)}"
            )
    if not keys:
        return
    (_momentum_update_foreach if _HAS_FOREACH else _momentum_update_loop)(keys, queries, m)


def init_queue(dim: int, size: int) -> torch.Tensor:
    """A (dim, size) queue of random unit columns, as MoCo starts with."""
    return F.normalize(torch.randn(dim, size), dim=0)


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Write ``keys`` (B, C) into columns ptr, ptr+1, ... (mod K) of ``queue`` (C, K), oldest first out.

    ``ptr`` is a one-element long tensor, advanced in place by B (mod K) and returned. Both writes stay on
    the tensors' device: no host synchronisation, so a step can enqueue without waiting for the GPU.
    """
    batch, size = keys.shape[0], queue.shape[1]
    if keys.dim() != 2 or keys.shape[1] != queue.shape[0]:
        raise ValueError(f"keys must be (B, {queue.shape[0]}), got {tuple(keys.shape)}")
    if batch > size:
        raise ValueError(f"cannot enqueue {batch} keys into a queue of {size}")
    if ptr.numel() != 1 or ptr.dtype != torch.long:
        raise ValueError(f"ptr must be a one-element long tensor, got {ptr.dtype} of shape {tuple(ptr.shape)}")
    columns = (ptr + torch.arange(batch, device=ptr.device)) % size  # (B,)
    queue.index_copy_(1, columns.to(queue.device), keys.t().to(queue.dtype))
    ptr.add_(batch).remainder_(size)
    return ptr
