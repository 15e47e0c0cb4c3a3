"""The NTU RGB+D skeleton graph (25 Kinect v2 joints) as plain data.

The bone list and the "spatial" partition are the ones 2s-AGCN (and hence the reference) uses:
three subsets -- identity, inward bones, outward bones -- each a 25x25 matrix. ``A[k][j, i] = 1``
when joint ``i`` sends to joint ``j`` in subset ``k``; the inward/outward subsets are then divided by
their column sums (a column with no edge stays zero). So ``(x @ A[k])[..., i] = sum_j x[..., j] A[k][j, i]``
(x: (..., V)) averages, for each joint ``i``, over the joints ``i`` sends to (its receivers).
"""

from __future__ import annotations

import numpy as np

from common.constants import NUM_JOINTS

# (child, parent) pairs, 1-based Kinect joint numbers, pointing towards the spine centre (joint 21).
NTU_BONES: tuple[tuple[int, int], ...] = (
    (1, 2),
    (2, 21),
    (3, 21),
    (4, 3),
    (5, 21),
    (6, 5),
    (7, 6),
    (8, 7),
    (9, 21),
    (10, 9),
    (11, 10),
    (12, 11),
    (13, 1),
    (14, 13),
    (15, 14),
    (16, 15),
    (17, 1),
    (18, 17),
    (19, 18),
    (20, 19),
    (22, 23),
    (23, 8),
    (24, 25),
    (25, 12),
)


def edges_to_matrix(edges: list[tuple[int, int]] | tuple[tuple[int, int], ...], num_nodes: int) -> np.ndarray:
    """0-based directed edges (src, dst) -> float64 (V, V) matrix with ``A[dst, src] = 1``."""
    adjacency = np.zeros((num_nodes, num_nodes), dtype=np.float64)
    for src, dst in edges:
        adjacency[dst, src] = 1.0
    return adjacency


def normalize_columns(adjacency: np.ndarray) -> np.ndarray:
    """Divide every column by its sum; all-zero columns are left at zero."""
    col_sum = adjacency.sum(axis=0)
    scale = np.divide(1.0, col_sum, out=np.zeros_like(col_sum), where=col_sum > 0)
    return adjacency * scale[None, :]


def spatial_adjacency(num_nodes: int = NUM_JOINTS, bones: tuple[tuple[int, int], ...] = NTU_BONES) -> np.ndarray:
    """(3, V, V) float32: identity, normalised inward, normalised outward (2s-AGCN's 'spatial' graph)."""
    inward = [(child - 1, parent - 1) for child, parent in bones]
    outward = [(parent, child) for child, parent in inward]
    identity = edges_to_matrix([(i, i) for i in range(num_nodes)], num_nodes)
    stacked = np.stack(
        (
            identity,
            normalize_columns(edges_to_matrix(inward, num_nodes)),
            normalize_columns(edges_to_matrix(outward, num_nodes)),
        )
    )
    return stacked.astype(np.float32)
