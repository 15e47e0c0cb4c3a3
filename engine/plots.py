"""Evaluation figures: a confusion matrix (classification) and a t-SNE map of features (retrieval).

Both are written as PNG files with matplotlib's non-interactive Agg backend, atomically (a temporary file
renamed into place), labelled with the NTU action names from ``data_gen/resources/ntu_action_names.tsv``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.constants import ACTION_NAMES_FILE, NTU_DATASETS
from common.io import atomic_write

# t-SNE's perplexity must stay below the number of points.
TSNE_MIN_SAMPLES = 3


def action_names(dataset: str, num_class: int, path: str | os.PathLike = ACTION_NAMES_FILE) -> list[str]:
    """``num_class`` display names: ``1. drink water`` ... for NTU datasets from the ``<number>\\t<name>``
    file, ``action N`` otherwise or when the file cannot serve (a warning: a figure must not sink a run)."""
    generic = [f"action {i + 1}" for i in range(num_class)]
    if dataset not in NTU_DATASETS:
        return generic
    try:
        rows = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if [row[0] for row in rows[:num_class]] != [str(i + 1) for i in range(num_class)] or min(map(len, rows)) != 2:
            raise ValueError(f"{path} does not list actions 1 to {num_class} as NUMBER<tab>NAME")
    except (OSError, ValueError) as exc:
        warnings.warn(f"NTU action names unavailable ({exc}); plots use action numbers", stacklevel=2)
        return generic
    return [f"{i + 1}. {row[1].strip()}" for i, row in enumerate(rows[:num_class])]


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_class: int) -> np.ndarray:
    """(num_class, num_class) counts: row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    counts = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)  # IndexError for a label outside the classes
    return counts


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; set before pyplot is imported anywhere
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike) -> Path:
    try:
        return atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_confusion_matrix(counts: np.ndarray, names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per true class) as a PNG; returns the path."""
    plt = _pyplot()
    n = len(names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix {counts.shape} needs {counts.shape[0]} names, got {n}")
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    side = min(max(6.0, 0.22 * n + 3.0), 40.0)  # 120 classes need room for their names
    fontsize = 8 if n <= 30 else max(3, int(8 - n / 30))
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set(xlabel="predicted action", ylabel="true action", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return _save(plt, fig, path)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE of (N, D) features with cosine distances (the retrieval metric)."""
    from sklearn.manifold import TSNE

    n = len(features)
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))  # sklearn requires perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def plot_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    seed: int = 0,
) -> Path:
    """2-D t-SNE of ``features`` coloured by action, as a PNG; returns the path."""
    plt = _pyplot()
    points = tsne_embedding(features, seed=seed)
    present = np.unique(labels)
    # tab20, tab20b and tab20c give 60 distinguishable colours (NTU 60); NTU 120 repeats them with a
    # second marker shape. Colour and marker follow the action number, the same in every plot.
    palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    fig, ax = plt.subplots(figsize=(11, 8))
    for cls in present:
        mask = labels == cls
        marker = ("o", "^", "s")[(cls // len(palette)) % 3]
        style = dict(s=8, color=palette[cls % len(palette)], marker=marker, alpha=0.85, linewidths=0)
        ax.scatter(points[mask, 0], points[mask, 1], label=names[cls], **style)
    ax.set(xticks=[], yticks=[], title=title)
    many = len(present) > 60
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=4 if many else 6,
        ncol=2 if many else 1,
        markerscale=2,
        frameon=False,
    )
    return _save(plt, fig, path)
