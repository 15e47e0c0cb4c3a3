"""MoCo's arithmetic as pure functions: InfoNCE logits and loss, the momentum update, the key queue.

Nothing here knows about encoders, devices or processes; :mod:`moco.builder` applies these functions to
the tensors a model holds, once per training step.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F


def info_nce_logits(
    query: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the (1+K)-way contrast of each query against its positive key and the queued negatives.

    query, positive: (N, C) L2-normalised; queue: (C, K) L2-normalised columns.
    Returns logits (N, 1+K) -- column 0 the positive, columns 1.. the queue -- divided by
    ``temperature``, and labels (N,) of zeros (the positive's index).
    """
    if query.dim() != 2 or positive.shape != query.shape:
        raise ValueError(f"query and positive must both be (N, C), got {tuple(query.shape)} and {tuple(positive.shape)}")
    if queue.dim() != 2 or queue.shape[0] != query.shape[1]:
        raise ValueError(f"queue must be (C, K) with C = {query.shape[1]}, got {tuple(queue.shape)}")
    pos = (query * positive).sum(dim=1, keepdim=True)  # (N, 1)
    neg = query @ queue  # (N, K)
    logits = torch.cat((pos, neg), dim=1) / temperature  # (N, 1+K)
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return logits, labels


def contrastive_loss(
    query: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE: mean cross-entropy of :func:`info_nce_logits`; returns (loss, logits)."""
    logits, labels = info_nce_logits(query, positive, queue, temperature)
    return F.cross_entropy(logits, labels), logits


@torch.no_grad()
def momentum_update(key_params: Iterable[torch.Tensor], query_params: Iterable[torch.Tensor], m: float) -> None:
    """In place, for every pair: key <- m * key + (1 - m) * query (fused over all tensors)."""
    keys = [p.detach() for p in key_params]
    queries = [p.detach() for p in query_params]
    if len(keys) != len(queries):
        raise ValueError(f"momentum_update: {len(keys)} key tensors but {len(queries)} query tensors")
    for k, q in zip(keys, queries):
        if k.shape != q.shape:
            raise ValueError(f"momentum_update: key tensor {tuple(k.shape)} does not match query tensor {tuple(q.shape)}")
    if not keys:
        return
    torch._foreach_mul_(keys, m)
    torch._foreach_add_(keys, queries, alpha=1.0 - m)


def init_queue(dim: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (dim, size) queue of random unit columns, as MoCo starts with."""
    return F.normalize(torch.randn(dim, size, generator=generator), dim=0)


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
