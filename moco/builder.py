"""The MoCo model of inter-skeleton contrast (two representations) and intra-skeleton contrast (one).

Inter-skeleton contrast (the paper's method). A clip x is augmented twice, into x_1 and x_2, and each
view is put in two skeleton representations S1 and S2 (e.g. seq-based and graph-based). Query encoders
f_q (S1) and f_r (S2) embed the first view; their momentum copies, the key encoders f_k (S1) and f_l (S2),
embed the second:

    q = f_q(S1(x_1))    r = f_r(S2(x_1))    k = f_k(S1(x_2))    l = f_l(S2(x_2))    each (N, dim), unit norm

Each query is contrasted with the key of the *other* representation, against that representation's
queue of past keys (the negatives):

    L = InfoNCE(q, l, Queue_S2) + InfoNCE(r, k, Queue_S1)

then k enters Queue_S1 and l enters Queue_S2. Intra-skeleton contrast (the paper's baseline, MoCo v2)
has one representation S: q = f_q(S(x_1)), k = f_k(S(x_2)), L = InfoNCE(q, k, queue), k enters queue.

A training step (:func:`moco.step.contrastive_step`) is split so that nn.DataParallel stays correct
(a replica's writes are lost):
  1. ``model.momentum_update()``   on the base model, before the keys are computed;
  2. ``model(*views)``             the replicated, side-effect-free part: (q, r), (k, l);
  3. ``model.loss(queries, keys)`` the InfoNCE terms, reading the queues only;
  4. backward, optimizer step;
  5. ``model.enqueue(keys)``       on the base model, with the whole batch of keys (all ranks' under DDP).

Attribute and buffer names are the reference's, so state dicts match its checkpoints:
inter ``encoder_q``/``encoder_k`` (S1), ``encoder_r``/``encoder_l`` (S2), ``Queue_S1``/``queue_ptr_S1``,
``Queue_S2``/``queue_ptr_S2``; intra ``encoder_q``/``encoder_k``, ``queue``/``queue_ptr``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.constants import CHECKPOINT_PREFIX, ENCODER_PAIRS, QUERY_ENCODERS
from common.io import UsageError
from moco.functional import contrastive_loss, enqueue, init_queue, momentum_update
from models import build_encoder, parse_representation

# (queue, pointer) buffer names per stream: stream i's keys go into its queue.
QUEUE_NAMES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("queue", "queue_ptr"),),
    2: (("Queue_S1", "queue_ptr_S1"), ("Queue_S2", "queue_ptr_S2")),
}


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
        raise TypeError(
            f"{type(encoder).__name__}.fc must be an nn.Linear to take an MLP head, found {type(fc).__name__}"
        )
    d = fc.in_features
    encoder.fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), fc)
    return encoder


def _embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # float32 before normalising: under bf16 autocast the unit vectors and logits keep full precision.
    return F.normalize(encoder(x).float(), dim=1)  # (N, dim)


class MoCo(nn.Module):
    """Query encoders, momentum key encoders and queues of one or two skeleton representations.

    query_encoders: [f_q] (intra-skeleton) or [f_q, f_r] (inter-skeleton), freshly built encoders whose
    last layer is an nn.Linear ``fc`` with ``dim`` outputs; the key encoders start as their copies and
    take no gradients. K: queue length (negatives per query); m: key encoder momentum; T: temperature;
    mlp: MoCo v2's two-layer projection head on every encoder.
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
        if not 1 <= n <= len(ENCODER_PAIRS):
            raise ValueError(f"MoCo takes 1 or 2 query encoders, got {n}")
        if K <= 0 or dim <= 0:
            raise ValueError(f"queue size K and dim must be positive, got K={K}, dim={dim}")
        self.K, self.m, self.T, self.dim = int(K), float(m), float(T), int(dim)
        self.num_streams = n
        # Registration order q, k, r, l (the reference's) fixes the optimizer's parameter order.
        for (query_name, key_name), encoder in zip(ENCODER_PAIRS[:n], query_encoders):
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
        """[f_q] or [f_q, f_r]."""
        return [getattr(self, q) for q, _ in ENCODER_PAIRS[: self.num_streams]]

    def key_encoders(self) -> list[nn.Module]:
        """[f_k] or [f_k, f_l], the momentum copies of :meth:`query_encoders`."""
        return [getattr(self, k) for _, k in ENCODER_PAIRS[: self.num_streams]]

    # -- the replicated, side-effect-free part -------------------------------------------------------
    def forward(self, *views: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Queries of the first view, keys of the second, in the datasets' order of views.

        inter: views (x1_S1, x1_S2, x2_S1, x2_S2) -> queries (q, r), keys (k, l);
        intra: views (x1, x2) -> queries (q,), keys (k,).
        A view is (N, T, 150) for seq-based, (N, C, T, V, M) = (N, 3, T, 25, 2) for graph- and
        image-based. Every output is (N, dim), L2-normalised, float32; keys carry no gradient.
        Parameters and queues are left untouched (BatchNorm running statistics update as in any
        training forward), so DataParallel replicas lose nothing.
        """
        n = self.num_streams
        if len(views) != 2 * n:
            raise ValueError(f"expected {2 * n} input views ({n} representation(s) x 2 views), got {len(views)}")
        if n == 1:
            x1, x2 = views  # each (N, T, 150) or (N, C, T, V, M)
            q = _embed(self.encoder_q, x1)  # (N, dim)
            with torch.no_grad():
                k = _embed(self.encoder_k, x2)  # (N, dim)
            return (q,), (k,)
        x1_s1, x1_s2, x2_s1, x2_s2 = views  # S1 and S2 of view 1, then of view 2
        q = _embed(self.encoder_q, x1_s1)  # (N, dim) query of S1
        r = _embed(self.encoder_r, x1_s2)  # (N, dim) query of S2
        with torch.no_grad():
            k = _embed(self.encoder_k, x2_s1)  # (N, dim) key of S1
            l = _embed(self.encoder_l, x2_s2)  # the paper's name; (N, dim) key of S2
        return (q, r), (k, l)

    def loss(
        self, queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The paper's loss of one batch, and each InfoNCE term's logits (N, 1+K), positive in column 0.

        inter: L = InfoNCE(q, l, Queue_S2) + InfoNCE(r, k, Queue_S1); intra: L = InfoNCE(q, k, queue).
        queries, keys: what :meth:`forward` returned. Reads the queues only.
        """
        if self.num_streams == 1:
            (q,), (k,) = queries, keys
            loss, logits = contrastive_loss(q, k, self.queue, self.T)  # (N, 1+K)
            return loss, (logits,)
        q, r = queries
        k, l = keys  # the paper's name
        loss_q, logits_q = contrastive_loss(q, l, self.Queue_S2, self.T)  # S1 query vs S2 key and queue
        loss_r, logits_r = contrastive_loss(r, k, self.Queue_S1, self.T)  # S2 query vs S1 key and queue
        return loss_q + loss_r, (logits_q, logits_r)

    # -- once per step, on the base model -----------------------------------------------------------
    @torch.no_grad()
    def momentum_update(self) -> None:
        """f_k <- m * f_k + (1 - m) * f_q (and f_l from f_r), parameter by parameter."""
        for query, key in zip(self.query_encoders(), self.key_encoders()):
            momentum_update(key.parameters(), query.parameters(), self.m)

    @torch.no_grad()
    def enqueue(self, keys: Sequence[torch.Tensor]) -> None:
        """Push the step's keys (each (B_global, dim)) into the queue of their own representation:
        inter k -> Queue_S1, l -> Queue_S2; intra k -> queue."""
        if len(keys) != self.num_streams:
            raise ValueError(f"expected keys of {self.num_streams} stream(s), got {len(keys)}")
        if self.num_streams == 1:
            (k,) = keys
            enqueue(self.queue, self.queue_ptr, k)
            return
        k, l = keys  # the paper's name
        enqueue(self.Queue_S1, self.queue_ptr_S1, k)
        enqueue(self.Queue_S2, self.queue_ptr_S2, l)


def query_slot(pretrain_representation: str, representation: str) -> str:
    """Which query encoder of a model pretrained as ``pretrain_representation`` encodes ``representation``:
    for ``A_and_B``, A is ``encoder_q`` and B ``encoder_r``; an intra-skeleton model has ``encoder_q`` only."""
    held = parse_representation(pretrain_representation)
    if representation not in held:
        raise UsageError(
            f"a model pretrained as {pretrain_representation!r} holds encoders for "
            f"{' and '.join(held)} only, not {representation!r}"
        )
    return QUERY_ENCODERS[held.index(representation)]


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
    names = parse_representation(representation)
    encoders = [build_encoder(name, dim, **encoder_kwargs) for name in names]
    return MoCo(encoders, dim=dim, K=K, m=m, T=T, mlp=mlp)


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with the reference's ``module.`` prefix, whatever wraps the model."""
    return {CHECKPOINT_PREFIX + key: value for key, value in model.state_dict().items()}


def strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without DataParallel's ``module.`` before its keys (the one place it is removed)."""
    return {key.removeprefix(CHECKPOINT_PREFIX): value for key, value in state.items()}


def encoder_state_dict(
    state_dict: Mapping[str, torch.Tensor], encoder_name: str = QUERY_ENCODERS[0]
) -> dict[str, torch.Tensor]:
    """The weights of one encoder (e.g. 'encoder_q', 'encoder_r') of a pretraining checkpoint, keys
    relative to that encoder (``fc.*`` included; with the MLP head, ``mlp=True``, ``fc.0.*``/``fc.2.*``)."""
    prefix = encoder_name + "."
    out = {key[len(prefix) :]: value for key, value in strip_prefix(state_dict).items() if key.startswith(prefix)}
    if not out:
        raise KeyError(f"the checkpoint holds no {encoder_name!r} weights")
    return out
