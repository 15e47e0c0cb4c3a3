"""The MoCo model of inter-skeleton (two representations) and intra-skeleton (one) contrast.

One class serves both. A model holds, per representation ("stream"), a query encoder, its momentum key
encoder and a queue of past keys. Stream i's query is contrasted with the keys and the queue of its
partner stream: the other representation (inter-skeleton: q vs l and Queue_S2, r vs k and Queue_S1) or
itself (intra-skeleton, standard MoCo v2).

A training step is split so that nn.DataParallel stays correct (replicas' writes are lost):
  1. ``model.momentum_update()``   on the base model, before the keys are computed;
  2. ``model(*views)``             the replicated, side-effect-free part: normalised query and key features;
  3. ``model.contrast_logits(...)`` logits against the queues (read only);
  4. backward, optimizer step;
  5. ``model.enqueue(keys)``       on the base model, with the whole batch of keys (all ranks' under DDP).

Attribute and buffer names are the reference's, so state dicts match its checkpoints:
inter ``encoder_q``/``encoder_k`` (first representation), ``encoder_r``/``encoder_l`` (second),
``Queue_S1``/``queue_ptr_S1``, ``Queue_S2``/``queue_ptr_S2``; intra ``encoder_q``/``encoder_k``,
``queue``/``queue_ptr``.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from moco.functional import enqueue, info_nce_logits, init_queue, momentum_update

# (query encoder, key encoder) attribute names per stream, by number of streams.
ENCODER_NAMES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("encoder_q", "encoder_k"),),
    2: (("encoder_q", "encoder_k"), ("encoder_r", "encoder_l")),
}
# (queue, pointer) buffer names per stream: stream i's keys go into its queue.
QUEUE_NAMES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("queue", "queue_ptr"),),
    2: (("Queue_S1", "queue_ptr_S1"), ("Queue_S2", "queue_ptr_S2")),
}
# Stream whose positive key and queue each stream's query is contrasted with.
PARTNER: dict[int, tuple[int, ...]] = {1: (0,), 2: (1, 0)}

CHECKPOINT_PREFIX = "module."


def _last_linear(encoder: nn.Module) -> nn.Linear:
    fc = getattr(encoder, "fc", None)
    if isinstance(fc, nn.Sequential):
        fc = fc[-1]
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"{type(encoder).__name__} must end in an nn.Linear attribute `fc`, found {type(fc).__name__}")
    return fc


def attach_mlp_head(encoder: nn.Module) -> nn.Module:
    """Replace ``encoder.fc`` by Linear(d, d) -> ReLU -> fc (MoCo v2's projection head); returns ``encoder``.

    The old fc keeps its weights and becomes ``fc.2`` (the reference's key layout ``fc.0.*``, ``fc.2.*``).
    """
    fc = encoder.fc
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"{type(encoder).__name__}.fc must be an nn.Linear to take an MLP head, found {type(fc).__name__}")
    d = fc.in_features
    encoder.fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), fc)
    return encoder


def _embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # float32 before normalising: under bf16 autocast the unit vectors and logits keep full precision.
    return F.normalize(encoder(x).float(), dim=1)  # (N, dim)


class MoCo(nn.Module):
    """Query encoders, momentum key encoders and queues of one or two skeleton representations.

    query_encoders: 1 (intra-skeleton) or 2 (inter-skeleton) freshly built encoders whose last layer is
    an nn.Linear ``fc`` with ``dim`` outputs; the key encoders start as copies and take no gradients.
    """

    def __init__(
        self,
        query_encoders: Sequence[nn.Module],
        dim: int = 128,
        K: int = 16384,
        m: float = 0.999,
        T: float = 0.07,
        mlp: bool = False,
    ) -> None:
        super().__init__()
        n = len(query_encoders)
        if n not in ENCODER_NAMES:
            raise ValueError(f"MoCo takes 1 or 2 query encoders, got {n}")
        if K <= 0 or dim <= 0:
            raise ValueError(f"queue size K and dim must be positive, got K={K}, dim={dim}")
        self.K, self.m, self.T, self.dim = int(K), float(m), float(T), int(dim)
        self.num_streams = n
        # Registration order q, k, r, l (the reference's) fixes the optimizer's parameter order.
        for (query_name, key_name), encoder in zip(ENCODER_NAMES[n], query_encoders):
            out = _last_linear(encoder).out_features
            if out != dim:
                raise ValueError(f"{query_name} outputs {out} features but the queue dimension is {dim}")
            if mlp:
                attach_mlp_head(encoder)
            key_encoder = copy.deepcopy(encoder)
            key_encoder.requires_grad_(False)
            setattr(self, query_name, encoder)
            setattr(self, key_name, key_encoder)
        for queue_name, ptr_name in QUEUE_NAMES[n]:
            self.register_buffer(queue_name, init_queue(dim, K))
            self.register_buffer(ptr_name, torch.zeros(1, dtype=torch.long))

    # -- parts -------------------------------------------------------------------------------------
    def query_encoders(self) -> list[nn.Module]:
        return [getattr(self, q) for q, _ in ENCODER_NAMES[self.num_streams]]

    def key_encoders(self) -> list[nn.Module]:
        return [getattr(self, k) for _, k in ENCODER_NAMES[self.num_streams]]

    def queues(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(queue (dim, K), ptr (1,))] per stream; looked up each call so it follows .to() and loads."""
        return [(getattr(self, q), getattr(self, p)) for q, p in QUEUE_NAMES[self.num_streams]]

    # -- the replicated, side-effect-free part -------------------------------------------------------
    def forward(self, *views: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """views: the n first views then the n second views, in the datasets' order
        (inter: s1_v1, s2_v1, s1_v2, s2_v2; intra: v1, v2).

        Returns (queries, keys): per stream, (N, dim) L2-normalised float32 features; keys carry no
        gradient. Parameters and queues are left untouched (BatchNorm running statistics update as
        in any training forward), so DataParallel replicas lose nothing.
        """
        n = self.num_streams
        if len(views) != 2 * n:
            raise ValueError(f"expected {2 * n} input views ({n} representation(s) x 2 views), got {len(views)}")
        queries = tuple(_embed(enc, x) for enc, x in zip(self.query_encoders(), views[:n]))
        with torch.no_grad():
            keys = tuple(_embed(enc, x) for enc, x in zip(self.key_encoders(), views[n:]))
        return queries, keys

    def contrast_logits(
        self, queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """Per stream, (N, 1+K) logits of its query against the partner stream's key and queue
        (positive at index 0). Reads the queues only."""
        out = []
        for i, partner in enumerate(PARTNER[self.num_streams]):
            queue, _ = self.queues()[partner]
            logits, _ = info_nce_logits(queries[i], keys[partner], queue, self.T)
            out.append(logits)
        return tuple(out)

    # -- once per step, on the base model -----------------------------------------------------------
    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query for every key encoder's parameters."""
        for query, key in zip(self.query_encoders(), self.key_encoders()):
            momentum_update(key.parameters(), query.parameters(), self.m)

    @torch.no_grad()
    def enqueue(self, keys: Sequence[torch.Tensor]) -> None:
        """Push each stream's keys (the whole step's batch, B_global x dim) into its own queue."""
        if len(keys) != self.num_streams:
            raise ValueError(f"expected keys of {self.num_streams} stream(s), got {len(keys)}")
        for k, (queue, ptr) in zip(keys, self.queues()):
            enqueue(queue, ptr, k)


def build_moco(
    representation: str,
    *,
    dim: int = 128,
    K: int = 16384,
    m: float = 0.999,
    T: float = 0.07,
    mlp: bool = False,
    **encoder_kwargs: Any,
) -> MoCo:
    """The MoCo model of ``representation`` ('seq-based_and_graph-based', ..., or one base name) with
    encoders from ``models.build_encoder`` (``encoder_kwargs``: the size options)."""
    from common.representations import parse_representation
    from models import build_encoder

    names = parse_representation(representation)
    encoders = [build_encoder(name, dim, **encoder_kwargs) for name in names]
    return MoCo(encoders, dim=dim, K=K, m=m, T=T, mlp=mlp)


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with the reference's ``module.`` prefix, whatever wraps the model."""
    return {CHECKPOINT_PREFIX + key: value for key, value in model.state_dict().items()}


def load_checkpoint_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a ``module.``-prefixed state dict (ours or the reference's) into an unwrapped model, strictly."""
    stripped = {
        (key[len(CHECKPOINT_PREFIX):] if key.startswith(CHECKPOINT_PREFIX) else key): value
        for key, value in state_dict.items()
    }
    model.load_state_dict(stripped, strict=True)


def encoder_state_dict(state_dict: Mapping[str, torch.Tensor], encoder_name: str = "encoder_q") -> dict[str, torch.Tensor]:
    """The weights of one encoder (e.g. 'encoder_q', 'encoder_r') of a pretraining checkpoint, keys
    relative to that encoder (``fc.*`` included; with --mlp they are ``fc.0.*``/``fc.2.*``)."""
    out = {}
    for key, value in state_dict.items():
        key = key[len(CHECKPOINT_PREFIX):] if key.startswith(CHECKPOINT_PREFIX) else key
        if key.startswith(encoder_name + "."):
            out[key[len(encoder_name) + 1:]] = value
    if not out:
        raise KeyError(f"the checkpoint holds no {encoder_name!r} weights")
    return out
