"""Skeleton normalisation of the 2s-AGCN / skeleton-contrast preprocessing, vectorised (pure NumPy).

Samples are laid out as the training tensors are, (C=3, T, V, M); an "empty" frame or joint is one whose
coordinates are all zero. ``normalize_sample`` is the whole chain, on person-major (M, C, T, V) float64
arrays (contiguous per person), stored as float32: ``pad_null_frames`` (a person whose first frame is
empty has its non-empty frames moved to the front; the frames after its last non-empty one repeat the
frames before, cyclically), ``center_on_joint`` (person 0's joint 1 subtracted per frame from every
non-zero joint), ``align_to_axes`` (one rotation from person 0's first frame turns the bone 0 -> 1 to +z,
then the bone 4 -> 8 to +x). ``select_bodies`` picks the two most energetic body slots of a file first.
"""

from __future__ import annotations

import numpy as np

from common.constants import NUM_FRAMES, NUM_PERSONS

ZERO_TOL = 1e-6  # below this (L1 norm or radians) a rotation is the identity, as in the reference
CENTER_JOINT = 1
# The largest |coordinate| an input may hold: centring can double it and the rotation multiply it by at
# most sqrt(3), and the result must stay finite in float32. Real skeletons are a few metres at most.
MAX_ABS_COORDINATE = float(np.finfo(np.float32).max) / 4
Z_BONE = (0, 1)  # base of the spine -> middle of the spine
X_BONE = (4, 8)  # left shoulder -> right shoulder


def _present(points: np.ndarray, axis: int) -> np.ndarray:
    """True where a point is not all zero (``axis``: its 3 coordinates); faster than ``any`` on length 3."""
    x, y, z = (np.take(points, i, axis=axis) for i in range(3))
    return (x != 0) | (y != 0) | (z != 0)


def body_energy(bodies: np.ndarray) -> np.ndarray:
    """Motion energy of each body slot, (B, T, V, 3) -> (B,): std(x) + std(y) + std(z) over all joints of the
    frames where the slot is non-empty (0 for a slot never present)."""
    slots, frames = bodies.shape[:2]
    return slot_energy(bodies.reshape(slots * frames, *bodies.shape[2:]), np.repeat(np.arange(slots), frames), slots)


def slot_energy(frames: np.ndarray, slots: np.ndarray, num_slots: int) -> np.ndarray:
    """:func:`body_energy` of (E, V, 3) frames with (E,) slots (absent frames count as empty): the reader weighs
    bodies without a dense (B, T, V, 3) array, whose size a file could make arbitrary."""
    energy = np.zeros(num_slots, dtype=np.float64)
    present = _present(frames, -1).any(-1)  # (E,)
    for b in np.unique(slots[present]):  # at most 4 slots
        chosen = frames[present & (slots == b)]  # (n, V, 3)
        energy[b] = chosen[..., 0].std() + chosen[..., 1].std() + chosen[..., 2].std()
    return energy


def select_bodies(
    bodies: np.ndarray, num_persons: int = NUM_PERSONS, max_frames: int = NUM_FRAMES, energy: np.ndarray | None = None
) -> np.ndarray:
    """The ``num_persons`` most energetic slots, highest first, laid out by :func:`layout`. Ties keep the
    reference's order (a stable ascending sort, reversed). ``energy``: the slots' :func:`body_energy`, when
    the caller has it (over all frames of a file whose ``bodies`` hold only the first ``max_frames``)."""
    order = np.argsort(body_energy(bodies) if energy is None else energy, kind="stable")[::-1][:num_persons]
    return layout(bodies[order], num_persons, max_frames)


def layout(bodies: np.ndarray, num_persons: int = NUM_PERSONS, max_frames: int = NUM_FRAMES) -> np.ndarray:
    """The first ``num_persons`` slots in their order: (B, T, V, 3) -> (3, max_frames, V, num_persons) float32,
    zero-padded, frames past ``max_frames`` dropped."""
    out = np.zeros((3, max_frames, bodies.shape[2], num_persons), dtype=np.float32)
    kept = bodies[:num_persons, :max_frames]
    out[:, : kept.shape[1], :, : kept.shape[0]] = kept.transpose(3, 1, 2, 0)
    return out


def pad_null_frames(s: np.ndarray) -> np.ndarray:
    """(M, C, T, V): close a person's leading gap (all its non-empty frames to the front; otherwise gaps
    inside stay), then loop the sequence over the trailing empty frames."""
    s = s.copy()
    num_frames = s.shape[2]
    frame_present = _present(s, 1).any(-1)  # (M, T)
    for p, present in enumerate(frame_present):  # at most 2 persons
        if not present.any():
            continue
        person = s[p]  # (C, T, V) view
        if not present[0]:
            frames = np.flatnonzero(present)
            person[:, : len(frames)] = person[:, frames]
            person[:, len(frames) :] = 0
            length = len(frames)
        else:
            length = int(np.flatnonzero(present)[-1]) + 1
        if length < num_frames:
            person[:, length:] = person[:, np.arange(num_frames - length) % length]
    return s


def center_on_joint(s: np.ndarray, joint: int = CENTER_JOINT) -> np.ndarray:
    """(M, C, T, V) -> (M, C, T, V): subtract person 0's ``joint`` per frame from every non-zero joint."""
    center = s[0, :, :, joint : joint + 1]  # (C, T, 1)
    return (s - center) * _present(s, 1)[:, None]  # zero joints stay zero


def rotation_between(vector: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3): the rotation about vector x target by the angle between them; the identity when a vector, the
    axis or the angle is below 1e-6 (an anti-parallel pair is left alone, as in the reference). A float32
    ``vector`` is made a unit vector in float32, as the reference does with its float32 data."""
    v_in = np.asarray(vector)
    v_in = v_in if v_in.dtype == np.float32 else v_in.astype(np.float64)
    v = v_in.astype(np.float64)
    t = np.asarray(target, dtype=np.float64)
    if np.abs(v).sum() < ZERO_TOL or np.abs(t).sum() < ZERO_TOL:
        return np.eye(3)
    axis = np.array([v[1] * t[2] - v[2] * t[1], v[2] * t[0] - v[0] * t[2], v[0] * t[1] - v[1] * t[0]])  # v x t
    unit = (v_in / np.linalg.norm(v_in)).astype(np.float64)
    angle = np.arccos(np.clip(np.dot(unit, t / np.linalg.norm(t)), -1.0, 1.0))
    if np.abs(axis).sum() < ZERO_TOL or abs(angle) < ZERO_TOL:
        return np.eye(3)
    k = axis / np.linalg.norm(axis)
    cross_k = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    # Rodrigues: counter-clockwise rotation by `angle` about unit axis k.
    return np.eye(3) + np.sin(angle) * cross_k + (1.0 - np.cos(angle)) * (cross_k @ cross_k)


def align_to_axes(s: np.ndarray, z_bone: tuple[int, int] = Z_BONE, x_bone: tuple[int, int] = X_BONE) -> np.ndarray:
    """Rotate so that person 0's ``z_bone`` in frame 0 points to +z, then its ``x_bone`` to +x. The bones are
    taken from float32-rounded joints, as the reference (float32 throughout) takes them: for a bone nearly
    anti-parallel to its axis a float64 derivation would differ by more than 1e-5. Applied in float64."""
    first = s[0, :, 0, :].T.astype(np.float32)  # (V, C) person 0, frame 0, as the reference holds it
    to_z = rotation_between(first[z_bone[1]] - first[z_bone[0]], np.array([0.0, 0.0, 1.0]))
    # The second bone is measured after the first rotation (the reference rotates in two passes).
    turned = (first[list(x_bone)].astype(np.float64) @ to_z.T).astype(np.float32)
    to_x = rotation_between(turned[1] - turned[0], np.array([1.0, 0.0, 0.0]))
    # Per person one (3, 3) x (3, T*V) product; zero joints stay zero.
    return np.matmul(to_x @ to_z, s.reshape(s.shape[0], 3, -1)).reshape(s.shape)


def normalize_sample(x: np.ndarray) -> np.ndarray:
    """The whole normalisation of one sample, (3, T, V, M) -> float32 (zeros for a sample without a body)."""
    s = np.ascontiguousarray(np.asarray(x).transpose(3, 0, 1, 2), dtype=np.float64)  # (M, C, T, V)
    if not s.any():
        return np.zeros(np.shape(x), dtype=np.float32)
    return np.ascontiguousarray(align_to_axes(center_on_joint(pad_null_frames(s))).transpose(1, 2, 3, 0), np.float32)
