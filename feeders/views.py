"""The three skeleton representations the encoders read, made from one (3, T, 25, 2) clip.

* ``seq-based`` (BiGRU): (T, 150), one row per frame, each frame flattened joint-major, then channel,
  then person: row[t][v * 6 + c * 2 + m] = x[c, t, v, m] (the reference's ``transpose(1, 2, 0, 3)``);
* ``graph-based`` (AGCN) and ``image-based`` (HCN): the clip itself, (3, T, 25, 2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common.constants import NUM_COORDINATES, NUM_JOINTS, NUM_PERSONS, WINDOW_SIZE

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
    """(3, T, 25, 2) clip as contiguous float32 (no copy when it already is): the graph-based and the
    image-based view, which are the same array (HCN makes its pseudo-image layout itself)."""
    return np.ascontiguousarray(x, dtype=np.float32)


# The two representations' names for the one transform.
to_graph_view = to_clip_view
to_image_view = to_clip_view

VIEW_TRANSFORMS: dict[str, ViewTransform] = {
    "seq-based": to_seq_view,
    "graph-based": to_clip_view,
    "image-based": to_clip_view,
}


def view_transform(representation: str) -> ViewTransform:
    """The transform for a base representation name; ValueError listing the valid names otherwise."""
    try:
        return VIEW_TRANSFORMS[representation]
    except KeyError:
        raise ValueError(
            f"unknown skeleton representation {representation!r}; expected one of: {', '.join(VIEW_TRANSFORMS)}"
        ) from None


def view_shape(
    representation: str,
    input_size: int = WINDOW_SIZE,
    num_joints: int = NUM_JOINTS,
    num_persons: int = NUM_PERSONS,
    channels: int = NUM_COORDINATES,
) -> tuple[int, ...]:
    """Shape of one item's view (without the batch axis), e.g. ('seq-based', 64) -> (64, 150)."""
    view_transform(representation)
    if representation == "seq-based":
        return (input_size, channels * num_joints * num_persons)
    return (channels, input_size, num_joints, num_persons)
