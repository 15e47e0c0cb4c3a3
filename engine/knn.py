"""Retrieval's two figures: cosine k-nearest-neighbour classification of features, and the same on the
codes of the reference's auto-encoder.

The KNN predicts what ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k, metric='cosine')`` (the
reference's) predicts, in chunks of queries, each one matrix product on the features' device: an
all-zero vector is at cosine similarity 0 from everything, votes are uniform, a tie between classes goes
to the smallest label. Exactly equal distances are broken by ``torch.topk`` (scikit-learn's order is
implementation-defined there)."""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

# typing.Union: a runtime alias, and ``X | Y`` of classes needs Python 3.10.
ArrayLike = Union[np.ndarray, torch.Tensor]
AE_CODE_SIZE = 125


def _unit_rows(x: ArrayLike, device: torch.device | str | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows scaled to unit norm; zero rows stay zero (sklearn's ``normalize``)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.to(device=device, dtype=dtype)
    norms = t.norm(dim=1, keepdim=True)
    return t / torch.where(norms > 0, norms, torch.ones_like(norms))


@torch.no_grad()
def cosine_knn_indices(
    train: ArrayLike, query: ArrayLike, k: int = 1, chunk_size: int = 2048, device: torch.device | str | None = None
) -> torch.Tensor:
    """(Q, k) int64 indices (on the CPU) of the ``k`` most cosine-similar of the (N, D) training rows for
    each of the (Q, D) queries, nearest first."""
    train = _unit_rows(train, device)
    query = _unit_rows(query, train.device, train.dtype)
    if train.dim() != 2 or query.dim() != 2 or train.shape[1] != query.shape[1]:
        raise ValueError(f"KNN feature sizes differ: train {tuple(train.shape)}, query {tuple(query.shape)}")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must be between 1 and the number of training samples ({train.shape[0]}), got {k}")
    chunks = [
        (query[start : start + chunk_size] @ train.T).topk(k, dim=1).indices.cpu()  # (c, N) similarities
        for start in range(0, query.shape[0], chunk_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, k, dtype=torch.long)


def cosine_knn_predict(
    train: ArrayLike, train_labels: ArrayLike, query: ArrayLike, k: int = 1, **options: Any
) -> np.ndarray:
    """Majority vote of the ``k`` cosine-nearest training samples; (Q,) labels. ``options``:
    :func:`cosine_knn_indices`' ``chunk_size`` and ``device``."""
    labels = np.asarray(train_labels)
    if labels.shape != (len(train),):
        raise ValueError(f"train_labels must be 1-D with one label per training row, got shape {labels.shape}")
    classes, encoded = np.unique(labels, return_inverse=True)  # classes sorted, like sklearn's classes_
    votes = torch.from_numpy(encoded.reshape(-1))[cosine_knn_indices(train, query, k, **options)]
    counts = torch.zeros(votes.shape[0], len(classes), dtype=torch.long).scatter_add_(1, votes, torch.ones_like(votes))
    return classes[counts.argmax(dim=1).numpy()]  # the first maximum: the smallest label on a tie


def knn_accuracy(
    train: ArrayLike, train_labels: ArrayLike, query: ArrayLike, query_labels: ArrayLike, k: int = 1, **options: Any
) -> tuple[float, np.ndarray]:
    """Top-1 accuracy in [0, 1] of cosine KNN, and the predictions."""
    predictions = cosine_knn_predict(train, train_labels, query, k, **options)
    query_labels = np.asarray(query_labels)
    if len(query_labels) != len(predictions):
        raise ValueError(f"{len(query_labels)} query labels for {len(predictions)} query rows")
    return (float((predictions == query_labels).mean()) if len(predictions) else float("nan")), predictions


class FeatureAutoencoder(nn.Module):
    """The reference's auto-encoder: D -> 1024 -> 512 -> code (tanh after each) and the mirror back."""

    def __init__(self, input_size: int, code_size: int = AE_CODE_SIZE) -> None:
        super().__init__()
        sizes = (input_size, 1024, 512, code_size)
        self.encoder = nn.Sequential(*(m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.Tanh())))
        back = sizes[::-1]
        self.decoder = nn.Sequential(*(m for a, b in zip(back, back[1:]) for m in (nn.Linear(a, b), nn.Tanh())))
        del self.decoder[-1]  # the reconstruction is linear

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)  # (B, code_size)
        return self.decoder(code), code


class AutoencoderFit(NamedTuple):
    model: FeatureAutoencoder  # in eval mode
    train_mse: float  # mean training loss of the last epoch
    lr: float  # learning rate at the end


def train_autoencoder(
    features: torch.Tensor,
    epochs: int,
    *,
    batch_size: int = 64,
    lr: float = 1e-3,
    lr_step: str = "iteration",
    decay_every: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> AutoencoderFit:
    """Fit a :class:`FeatureAutoencoder` to (N, D) ``features`` (on their device) with MSE and Adam; the
    learning rate is multiplied by 0.95 every ``decay_every`` scheduler steps, a step being an iteration
    (the reference) or an epoch."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global stream
        torch.manual_seed(seed)
        model = FeatureAutoencoder(features.shape[1]).to(features.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.95 ** (step // decay_every))
    mean_loss = float("nan")
    for _ in tqdm(range(epochs), desc="auto-encoder", leave=False, disable=not progress, file=sys.stderr):
        order = torch.randperm(features.shape[0], generator=generator).to(features.device)
        total = torch.zeros((), device=features.device)
        for start in range(0, features.shape[0], batch_size):
            batch = features[order[start : start + batch_size]]  # (B, D)
            loss = nn.functional.mse_loss(model(batch)[0], batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if lr_step == "iteration":
                scheduler.step()
            total += loss.detach() * batch.shape[0]
        if lr_step == "epoch":
            scheduler.step()
        mean_loss = (total / features.shape[0]).item()
    return AutoencoderFit(model.eval(), mean_loss, optimizer.param_groups[0]["lr"])


@torch.no_grad()
def encode(model: FeatureAutoencoder, features: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, float]:
    """(N, code) codes in input order, and the mean reconstruction MSE."""
    codes, squared = [], 0.0
    for start in range(0, features.shape[0], batch_size):
        batch = features[start : start + batch_size]
        reconstruction, code = model(batch)
        codes.append(code)
        squared += float(((reconstruction - batch) ** 2).mean(dim=1).sum())
    return torch.cat(codes), squared / max(features.shape[0], 1)
