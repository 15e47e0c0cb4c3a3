"""Cosine k-nearest-neighbour classification with chunked matrix products.

Gives the predictions of ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k, metric='cosine')`` (the
reference's retrieval metric) without building the full query x train distance matrix: queries are
processed in chunks, each one a single matrix product on whatever device the features live on.

Semantics kept from scikit-learn:
- all-zero vectors have cosine similarity 0 with everything (distance 1), as ``cosine_distances`` does;
- uniform votes among the k nearest; a tie between classes goes to the smallest class label (sklearn
  takes ``argmax`` over the sorted ``classes_``).
Exactly equal distances to several training samples (duplicated features) are broken by
``torch.topk``; scikit-learn's order is implementation-defined there too.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

# typing.Union: a runtime alias, and ``X | Y`` of classes needs Python 3.10.
ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike, device: torch.device | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(x) if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device) if device is not None else t


def _l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; zero rows stay zero (sklearn's ``normalize`` behaviour)."""
    norms = x.norm(dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


@torch.no_grad()
def cosine_knn_indices(
    train_features: ArrayLike,
    query_features: ArrayLike,
    k: int = 1,
    *,
    chunk_size: int = 2048,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices of the ``k`` most cosine-similar training rows for every query, nearest first.

    train_features: (N, D); query_features: (Q, D). Returns (Q, k) int64 on CPU.
    """
    device = torch.device(device) if device is not None else None
    train = _l2_normalise(_as_tensor(train_features, device))  # (N, D)
    if device is None:
        device = train.device
    query = _as_tensor(query_features, device, dtype=train.dtype)  # (Q, D)
    _check_shapes(train, query, k)
    out = []
    for start in range(0, query.shape[0], chunk_size):
        chunk = _l2_normalise(query[start : start + chunk_size])  # (c, D)
        similarity = chunk @ train.T  # (c, N): largest similarity = smallest cosine distance
        out.append(similarity.topk(k, dim=1, largest=True, sorted=True).indices.cpu())
    if not out:
        return torch.empty(0, k, dtype=torch.long)
    return torch.cat(out)


def _check_shapes(train: torch.Tensor, query: torch.Tensor, k: int) -> None:
    if train.dim() != 2 or query.dim() != 2:
        raise ValueError(
            f"KNN expects 2-D feature matrices, got train {tuple(train.shape)} and query {tuple(query.shape)}"
        )
    if train.shape[1] != query.shape[1]:
        raise ValueError(f"KNN feature sizes differ: train has {train.shape[1]}, query has {query.shape[1]}")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(
            f"--knn-neighbours must be between 1 and the number of training samples ({train.shape[0]}), got {k}"
        )


@torch.no_grad()
def cosine_knn_predict(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    query_features: ArrayLike,
    k: int = 1,
    *,
    chunk_size: int = 2048,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Majority vote of the ``k`` cosine-nearest training samples; (Q,) labels as a numpy array."""
    labels = np.asarray(train_labels)
    if labels.ndim != 1 or len(labels) != len(train_features):
        raise ValueError(f"train_labels must be 1-D with one label per training row, got shape {labels.shape}")
    classes, encoded = np.unique(labels, return_inverse=True)  # classes sorted, like sklearn's classes_
    neighbours = cosine_knn_indices(train_features, query_features, k, chunk_size=chunk_size, device=device)
    if k == 1:
        return classes[encoded[neighbours[:, 0].numpy()]]
    votes = torch.from_numpy(encoded.reshape(-1))[neighbours]  # (Q, k) class indices
    counts = torch.zeros(votes.shape[0], len(classes), dtype=torch.long)
    counts.scatter_add_(1, votes, torch.ones_like(votes))
    # argmax returns the first maximum, i.e. the smallest class label on a tie -- as sklearn does
    return classes[counts.argmax(dim=1).numpy()]


def knn_accuracy(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    query_features: ArrayLike,
    query_labels: ArrayLike,
    k: int = 1,
    *,
    chunk_size: int = 2048,
    device: torch.device | str | None = None,
) -> tuple[float, np.ndarray]:
    """Top-1 accuracy in [0, 1] of cosine KNN, and the predictions."""
    predictions = cosine_knn_predict(
        train_features, train_labels, query_features, k, chunk_size=chunk_size, device=device
    )
    query_labels = np.asarray(query_labels)
    if len(query_labels) != len(predictions):
        raise ValueError(f"{len(query_labels)} query labels for {len(predictions)} query rows")
    accuracy = float((predictions == query_labels).mean()) if len(predictions) else float("nan")
    return accuracy, predictions
