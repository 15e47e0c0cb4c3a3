"""Skeleton normalisation of the 2s-AGCN / skeleton-contrast preprocessing, vectorised.

Pure numpy functions; nothing here reads files or warns. ``normalize_sample`` is the whole chain for
one sample laid out as the training tensors are, (C=3, T, V, M):

1. ``pad_null_frames``: a person whose first frame is empty has its non-empty frames moved to the
   front; the frames after its last non-empty one are filled by repeating the frames before cyclically;
2. ``center_on_joint``: per frame, joint 1 (middle of the spine) of person 0 is subtracted from every
   non-zero joint of every person (zero joints stay zero);
3. ``align_to_axes``: one rotation, taken from person 0's first frame, turns the bone joint 0 -> 1
   to +z and then the bone joint 4 -> 8 (shoulder to shoulder) to +x, applied to every frame.

Inside, arrays are (M, T, V, C) float64 ("person-major"); the result is stored as float32. An "empty"
frame or joint is one whose coordinates are all zero.
"""
from __future__ import annotations

import numpy as np

ZERO_TOL = 1e-6  # below this (L1 norm or radians) a rotation is the identity, as in the reference
CENTER_JOINT = 1
Z_BONE = (0, 1)  # base of the spine -> middle of the spine
X_BONE = (4, 8)  # left shoulder -> right shoulder


def _present(a: np.ndarray) -> np.ndarray:
    """(..., 3) -> (...) bool: the point is not all zero (an or-chain: much faster than any(axis=-1))."""
    return (a[..., 0] != 0) | (a[..., 1] != 0) | (a[..., 2] != 0)


def body_energy(bodies: np.ndarray) -> np.ndarray:
    """Motion energy of each body slot: (B, T, V, 3) -> (B,).

    std(x) + std(y) + std(z), each std over all joints of the frames where the slot is non-empty;
    0 for a slot that is never present.
    """
    energy = np.zeros(bodies.shape[0], dtype=np.float64)
    present = _present(bodies).any(-1)  # (B, T)
    for b in range(bodies.shape[0]):  # at most 4 slots
        frames = bodies[b][present[b]]  # (n, V, 3)
        if len(frames):
            energy[b] = frames[..., 0].std() + frames[..., 1].std() + frames[..., 2].std()
    return energy


def select_bodies(bodies: np.ndarray, num_persons: int = 2, max_frames: int = 300) -> np.ndarray:
    """Keep the ``num_persons`` most energetic body slots, highest first: (B, T, V, 3) -> (3, max_frames, V, num_persons) float32.

    The sequence starts at frame 0 of a zero array; frames past ``max_frames`` are dropped. Ties keep
    the reference's order (a stable ascending sort, reversed: the later slot first).
    """
    num_slots, num_frames, num_joints, _ = bodies.shape
    order = np.argsort(body_energy(bodies), kind="stable")[::-1][:num_persons]
    out = np.zeros((3, max_frames, num_joints, num_persons), dtype=np.float32)
    kept = min(num_frames, max_frames)
    # (k, T', V, 3) -> (3, T', V, k); slots missing when B < num_persons stay zero
    out[:, :kept, :, : len(order)] = bodies[order, :kept].transpose(3, 1, 2, 0)
    return out


def pad_null_frames(s: np.ndarray) -> np.ndarray:
    """(M, T, V, C) -> (M, T, V, C): close leading gaps, then loop the sequence over the trailing empty frames.

    Empty frames in the middle of a sequence stay empty (and are repeated along with it).
    """
    s = s.copy()
    num_frames = s.shape[1]
    for p in range(s.shape[0]):  # at most 2 persons
        present = _present(s[p]).any(-1)  # (T,)
        if not present.any():
            continue
        if not present[0]:
            frames = s[p, present]
            s[p] = 0
            s[p, : len(frames)] = frames
            length = len(frames)
        else:
            length = int(np.flatnonzero(present)[-1]) + 1
        if length < num_frames:
            s[p, length:] = s[p, np.arange(num_frames - length) % length]
    return s


def center_on_joint(s: np.ndarray, joint: int = CENTER_JOINT) -> np.ndarray:
    """(M, T, V, C) -> (M, T, V, C): subtract person 0's ``joint`` per frame from every non-zero joint."""
    center = s[0, :, joint : joint + 1, :]  # (T, 1, C)
    present = _present(s)[..., None]  # (M, T, V, 1)
    return (s - center) * present


def rotation_between(vector: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3,), (3,) -> (3, 3): the axis-angle rotation that turns ``vector``'s direction onto ``target``'s.

    Axis = vector x target, angle = arccos of the clipped cosine. The identity when either vector, the
    axis or the angle is (L1 norm / radians) below 1e-6 -- so an anti-parallel pair is left alone, as
    in the reference.
    """
    v = np.asarray(vector, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if np.abs(v).sum() < ZERO_TOL or np.abs(t).sum() < ZERO_TOL:
        return np.eye(3)
    axis = np.array([v[1] * t[2] - v[2] * t[1], v[2] * t[0] - v[0] * t[2], v[0] * t[1] - v[1] * t[0]])  # v x t
    angle = np.arccos(np.clip(np.dot(v / np.linalg.norm(v), t / np.linalg.norm(t)), -1.0, 1.0))
    if np.abs(axis).sum() < ZERO_TOL or abs(angle) < ZERO_TOL:
        return np.eye(3)
    k = axis / np.linalg.norm(axis)
    cross_k = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    # Rodrigues: counter-clockwise rotation by `angle` about unit axis k.
    return np.eye(3) + np.sin(angle) * cross_k + (1.0 - np.cos(angle)) * (cross_k @ cross_k)


def align_to_axes(s: np.ndarray, z_bone: tuple[int, int] = Z_BONE, x_bone: tuple[int, int] = X_BONE) -> np.ndarray:
    """(M, T, V, C) -> (M, T, V, C): rotate so that person 0's ``z_bone`` in frame 0 points to +z, then its ``x_bone`` to +x."""
    first = s[0, 0]  # (V, C)
    to_z = rotation_between(first[z_bone[1]] - first[z_bone[0]], np.array([0.0, 0.0, 1.0]))
    # The second bone is measured after the first rotation, as the reference rotates in two passes.
    to_x = rotation_between(to_z @ (first[x_bone[1]] - first[x_bone[0]]), np.array([1.0, 0.0, 0.0]))
    rotation = to_x @ to_z
    # One (M*T*V, 3) x (3, 3) product; zero joints stay zero.
    return (np.reshape(s, (-1, 3)) @ rotation.T).reshape(s.shape)


def normalize_sample(x: np.ndarray) -> np.ndarray:
    """The whole normalisation of one sample: (3, T, V, M) -> (3, T, V, M) float32, computed in float64.

    A sample with no body at all comes back as zeros.
    """
    s = np.ascontiguousarray(np.asarray(x).transpose(3, 1, 2, 0), dtype=np.float64)  # (M, T, V, C)
    if not s.any():
        return np.zeros(x.shape, dtype=np.float32)
    s = align_to_axes(center_on_joint(pad_null_frames(s)))
    return np.ascontiguousarray(s.transpose(3, 1, 2, 0), dtype=np.float32)
