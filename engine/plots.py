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


def read_action_names(path: str | os.PathLike = ACTION_NAMES_FILE) -> list[str]:
    """Names from a ``<number>\\t<name>`` file (numbers 1..N, in order)."""
    path = Path(path)
    names = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            number, sep, name = line.rstrip("\n").partition("\t")
            if not sep or not number.strip().isdigit() or int(number) != len(names) + 1:
                raise ValueError(f"{path}:{line_number}: expected '<{len(names) + 1}>\\t<action name>', got {line!r}")
            names.append(name.strip())
    return names


def action_names(dataset: str, num_class: int, path: str | os.PathLike = ACTION_NAMES_FILE) -> list[str]:
    """``num_class`` display names: NTU action names for NTU datasets, ``action N`` otherwise or when
    the names file is unavailable (a warning, not an error: a figure must not sink an evaluation)."""
    generic = [f"action {i + 1}" for i in range(num_class)]
    if dataset not in NTU_DATASETS:
        return generic
    try:
        names = read_action_names(path)
    except (OSError, ValueError) as exc:
        warnings.warn(f"NTU action names unavailable ({exc}); plots use action numbers", stacklevel=2)
        return generic
    if len(names) < num_class:
        warnings.warn(
            f"{path} lists {len(names)} actions, fewer than {num_class}; plots use action numbers", stacklevel=2
        )
        return generic
    return [f"{i + 1}. {n}" for i, n in enumerate(names[:num_class])]


def confusion_matrix(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, num_class: int
) -> np.ndarray:
    """(num_class, num_class) counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    for what, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_class):
            raise ValueError(f"{what} must lie in [0, {num_class}), found [{values.min()}, {values.max()}]")
    counts = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; set before pyplot is imported anywhere
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def plot_confusion_matrix(counts: np.ndarray, names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per true class) as a PNG; returns the path."""
    plt = _pyplot()
    counts = np.asarray(counts)
    n = counts.shape[0]
    if counts.shape != (n, n) or len(names) != n:
        raise ValueError(f"confusion matrix {counts.shape} needs {counts.shape[0]} names, got {len(names)}")
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    side = min(max(6.0, 0.22 * n + 3.0), 40.0)  # 120 classes need room for their names
    fontsize = 8 if n <= 30 else max(3, int(8 - n / 30))
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
        ax.set_yticklabels(names, fontsize=fontsize)
        ax.set_xlabel("predicted action")
        ax.set_ylabel("true action")
        if title:
            ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        return _save_figure(fig, Path(path))
    finally:
        plt.close(fig)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE of (N, D) features with cosine distances (the retrieval metric)."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    n = features.shape[0]
    if n < TSNE_MIN_SAMPLES:
        raise ValueError(f"t-SNE needs at least {TSNE_MIN_SAMPLES} samples, got {n}")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))  # sklearn requires perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(features)


def plot_tsne(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    seed: int = 0,
) -> Path:
    """2-D t-SNE of ``features`` coloured by action, as a PNG; returns the path."""
    plt = _pyplot()
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    points = tsne_embedding(features, seed=seed)
    present = np.unique(labels)
    # tab20, tab20b and tab20c give 60 distinguishable colours (NTU 60); NTU 120 repeats them with a
    # second marker shape.
    palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    markers = ("o", "^", "s")
    fig, ax = plt.subplots(figsize=(11, 8))
    try:
        for cls in present:  # colour and marker follow the action number, the same in every plot
            mask = labels == cls
            name = names[cls] if cls < len(names) else f"action {cls + 1}"
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=8,
                color=palette[cls % len(palette)],
                marker=markers[(cls // len(palette)) % len(markers)],
                label=name,
                alpha=0.85,
                linewidths=0,
            )
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title)
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=6 if len(present) <= 60 else 4,
            ncol=1 if len(present) <= 60 else 2,
            markerscale=2,
            frameon=False,
        )
        return _save_figure(fig, Path(path))
    finally:
        plt.close(fig)
