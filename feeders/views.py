"""The views the encoders read, made from one (3, T, 25, 2) clip; ``models.ENCODERS`` says which each takes.

* ``sequence`` (the seq-based BiGRU): (T, 150), one row per frame, each frame flattened joint-major, then
  channel, then person: row[t][v * 6 + c * 2 + m] = x[c, t, v, m] (the reference's ``transpose(1, 2, 0, 3)``);
* ``clip`` (the graph-based AGCN, the image-based HCN, which makes its pseudo-image layout itself): the
  clip itself, (3, T, 25, 2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ViewTransform = Callable[[np.ndarray], np.ndarray]


def to_seq_view(x: np.ndarray) -> np.ndarray:
    """(C, T, V, M) -> float32 (T, V*C*M), frame-major; (3, T, 25, 2) -> (T, 150)."""
    c, t, v, m = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    if m == 2:
        # Move each person pair as one 8-byte unit: a transpose whose innermost axis has 2 elements is
        # ~3x slower in NumPy than this (C, T*V) -> (T*V, C) transpose of 64-bit words.
        pairs = x.view(np.uint64).reshape(c, t * v)
        return np.ascontiguousarray(pairs.T).view(np.float32).reshape(t, v * c * m)
    return np.ascontiguousarray(np.transpose(x, (1, 2, 0, 3))).reshape(t, v * c * m)


def to_clip_view(x: np.ndarray) -> np.ndarray:
    """(3, T, 25, 2) clip as contiguous float32 (no copy when it already is)."""
    return np.ascontiguousarray(x, dtype=np.float32)


VIEWS: dict[str, ViewTransform] = {"sequence": to_seq_view, "clip": to_clip_view}


def view_transform(view: str) -> ViewTransform:
    """The transform of a view; ValueError listing the views otherwise."""
    try:
        return VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r}; expected one of: {', '.join(VIEWS)}") from None
