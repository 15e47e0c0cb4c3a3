"""Skeleton clip augmentations of the paper, as pure NumPy functions.

Every clip is an array ``x`` of shape (C, T, V, M) = (3 coordinates, frames, 25 joints, 2 persons) of
which only the first ``num_frames`` frames are real (the rest is zero padding written by data_gen).
Randomness comes only from the ``rng`` argument, so a caller that seeds one generator per item gets
the same views in any process, worker or resumed run.

Semantics follow the reference implementation (fmthoker/skeleton-contrast, ``feeder/augmentations.py``):

* temporal crop-resize: scale ~ U(lo, hi), crop length min(max(floor(num_frames * scale), 64), num_frames),
  start ~ U{0 .. num_frames - length}, then resized to ``out_len`` frames by linear interpolation with
  ``align_corners=False`` (what the reference gets from ``F.interpolate(mode='bilinear')`` on a
  (1, C*V*M, length, 1) tensor);
* centre crop: start = int((1 - ratio) * num_frames / 2), frames [start, num_frames - start), resized;
* shear: x' = S @ x per joint and frame, S with unit diagonal and off-diagonal entries ~ U(-1, 1);
* joint corruption: 15 of the 25 joints (without replacement); with probability 0.5 zeroed, otherwise
  each chosen joint's coordinate vector c becomes A^T @ c with A ~ U(-1, 1)^(3x3) (the reference
  multiplies row vectors from the right).

A clip shorter than the 64-frame minimum crop is used whole (and upsampled), as in the reference. One
case is new: a clip with 0 frames, on which the reference's resize fails, resizes to zeros.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from common.constants import WINDOW_SIZE

MIN_CROP_LENGTH = 64  # the reference never crops fewer frames than this (unless the clip is shorter)
NUM_CORRUPTED_JOINTS = 15

Ratio = Sequence[float]
PRETRAIN_CROP_RATIO: Ratio = (0.1, 1.0)  # the reference's pretraining crops: 10-100 % of the valid frames


def _check_clip(x: np.ndarray, num_frames: int) -> int:
    """Validate a (C, T, V, M) clip and its frame count; return the count as a Python int."""
    if x.ndim != 4:
        raise ValueError(f"expected a clip of shape (C, T, V, M), got shape {tuple(x.shape)}")
    n = int(num_frames)
    if n != num_frames or not 0 <= n <= x.shape[1]:
        raise ValueError(
            f"num_frames must be an integer in [0, {x.shape[1]}] for a clip of shape {tuple(x.shape)}, "
            f"got {num_frames!r}"
        )
    return n


@functools.lru_cache(maxsize=8192)
def _linear_resize_table(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source frames and weights of a 1-D linear resize with align_corners=False.

    Computed as PyTorch's CPU upsampling kernel does (float32 scale = in/out, float32 source position
    max((dst + 0.5) * scale - 0.5, 0)); on the x86 build the weights are bit-identical to ``F.interpolate``'s.
    Returns (i0, i1, w0, w1): out[t] = w0[t] * in[i0[t]] + w1[t] * in[i1[t]].
    """
    scale = np.float32(in_len) / np.float32(out_len)
    # float32 scale, source position rounded once to float32 (PyTorch's kernel is compiled with a fused
    # multiply-add here; rounding each step separately moves weights by up to 1e-5 for long clips).
    src = (np.float64(scale) * (np.arange(out_len, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.intp), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    w0 = np.float32(1.0) - w1
    for a in (i0, i1, w0, w1):
        a.flags.writeable = False  # cached and shared: guard against accidental in-place edits
    return i0, i1, w0, w1


def resize_frames(x: np.ndarray, start: int, length: int, out_len: int) -> np.ndarray:
    """Frames [start, start + length) of a (C, T, V, M) clip linearly resized to ``out_len`` frames.

    Equal (to float32 rounding) to the reference's ``F.interpolate(..., mode='bilinear',
    align_corners=False)`` over time. Only the needed frames are read, so ``x`` may be a memory map.
    A zero-length crop gives zeros. Returns float32 (C, out_len, V, M).
    """
    c, _, v, m = x.shape
    if length <= 0:
        return np.zeros((c, out_len, v, m), dtype=np.float32)
    i0, i1, w0, w1 = _linear_resize_table(int(length), int(out_len))
    # (C, T, V*M): one long inner axis keeps NumPy's loops fast (a size-2 inner axis costs ~3x).
    # np.asarray drops the np.memmap subclass (a view, no copy), whose per-result bookkeeping is slow.
    flat = np.asarray(x).reshape(c, x.shape[1], v * m)
    a = np.take(flat, start + i0, axis=1).astype(np.float32, copy=False)  # (C, out_len, V*M)
    b = np.take(flat, start + i1, axis=1).astype(np.float32, copy=False)
    a *= w0[None, :, None]
    b *= w1[None, :, None]
    a += b
    return a.reshape(c, out_len, v, m)


def crop_length(num_frames: int, scale: float, min_length: int = MIN_CROP_LENGTH) -> int:
    """The reference's crop length: min(max(floor(num_frames * scale), min_length), num_frames)."""
    return min(max(math.floor(num_frames * scale), min_length), num_frames)


def sample_crop(
    num_frames: int, ratio: Ratio, rng: np.random.Generator, min_length: int = MIN_CROP_LENGTH
) -> tuple[int, int]:
    """Draw (start, length) of a random temporal crop: scale ~ U(ratio), start uniform over valid starts."""
    lo, hi = float(ratio[0]), float(ratio[1])
    scale = lo + (hi - lo) * rng.random()
    length = crop_length(num_frames, scale, min_length)
    start = int(rng.integers(0, num_frames - length + 1))
    return start, length


def temporal_crop_resize(
    x: np.ndarray, num_frames: int, ratio: Ratio, out_len: int, rng: np.random.Generator
) -> np.ndarray:
    """Random temporal crop of the valid frames, resized to ``out_len``: (C, T, V, M) -> float32 (C, out_len, V, M)."""
    n = _check_clip(x, num_frames)
    if n == 0:
        return np.zeros((x.shape[0], out_len, x.shape[2], x.shape[3]), dtype=np.float32)
    start, length = sample_crop(n, ratio, rng)
    return resize_frames(x, start, length, out_len)


def center_crop_bounds(num_frames: int, ratio: float = 0.95) -> tuple[int, int]:
    """(start, stop) of the reference's evaluation crop: start = int((1 - ratio) * num_frames / 2)."""
    start = int((1 - ratio) * num_frames / 2)
    return start, num_frames - start


def center_crop_resize(x: np.ndarray, num_frames: int, ratio: float = 0.95, out_len: int = WINDOW_SIZE) -> np.ndarray:
    """Deterministic centre crop keeping ``ratio`` of the valid frames, resized: -> float32 (C, out_len, V, M)."""
    n = _check_clip(x, num_frames)
    start, stop = center_crop_bounds(n, ratio)
    return resize_frames(x, start, stop - start, out_len)


def random_shear_matrix(rng: np.random.Generator) -> np.ndarray:
    """3x3 float64 matrix with unit diagonal and off-diagonal entries ~ U(-1, 1)."""
    s = rng.uniform(-1.0, 1.0, size=(3, 3))
    np.fill_diagonal(s, 1.0)
    return s


def apply_shear(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """x'[:, t, v, m] = S @ x[:, t, v, m] for every frame, joint and person; float32 (3, T, V, M)."""
    c = x.shape[0]
    # float64 product then one rounding, as the reference (float64 matrix times float32 data).
    out = s @ np.asarray(x, dtype=np.float64).reshape(c, -1)
    return out.reshape(x.shape).astype(np.float32)


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random shear of a (3, T, V, M) clip."""
    return apply_shear(x, random_shear_matrix(rng))


def corrupt_joints(x: np.ndarray, joints: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Copy of ``x`` with ``joints`` zeroed (``matrix`` None) or each of their coordinate vectors c replaced
    by ``matrix.T @ c`` (the reference's row-vector product ``c^T @ matrix``). float32 (3, T, V, M)."""
    c, t, v, m = x.shape
    chosen = np.zeros(v, dtype=bool)
    chosen[joints] = True
    chosen = np.repeat(chosen, m)  # over the flattened (V*M) axis
    flat = np.reshape(x, (c, t, v * m))
    if matrix is None:
        out = np.where(chosen, np.float32(0.0), flat)
    else:
        # Mixing every joint and keeping the chosen ones beats gathering 15 joints (small strided copies).
        mixed = (matrix.T @ flat.reshape(c, -1).astype(np.float64)).astype(np.float32)
        out = np.where(chosen, mixed.reshape(flat.shape), flat)
    return out.astype(np.float32, copy=False).reshape(x.shape)


def joint_corruption(x: np.ndarray, rng: np.random.Generator, num_joints: int = NUM_CORRUPTED_JOINTS) -> np.ndarray:
    """Corrupt ``num_joints`` random distinct joints: zero them (p = 0.5) or mix their coordinates by a
    random U(-1, 1) 3x3 matrix."""
    if x.shape[2] < num_joints:
        raise ValueError(f"cannot corrupt {num_joints} joints of a clip with {x.shape[2]} joints")
    zero = rng.random() < 0.5
    joints = rng.permutation(x.shape[2])[:num_joints]  # a uniform subset without replacement
    matrix = None if zero else rng.uniform(-1.0, 1.0, size=(3, 3))
    return corrupt_joints(x, joints, matrix)


# What follows the crop-resize in a pretraining view. The paper's choice is the first; the others exist
# for short runs on small data (the demo), where joint corruption and shear make the pretext task too
# hard to learn in a few hundred steps.
SPATIAL_AUGMENTS: tuple[str, ...] = ("shear_or_corruption", "shear", "corruption", "none")


def check_spatial_augment(value: str, name: str = "spatial") -> str:
    """``value`` if it is one of SPATIAL_AUGMENTS, else a ValueError naming ``name`` and the valid ones."""
    if value not in SPATIAL_AUGMENTS:
        raise ValueError(f"{name} must be one of {', '.join(SPATIAL_AUGMENTS)}, got {value!r}")
    return value


def pretrain_view(
    x: np.ndarray,
    num_frames: int,
    rng: np.random.Generator,
    ratio: Ratio = PRETRAIN_CROP_RATIO,
    out_len: int = WINDOW_SIZE,
    spatial: str = "shear_or_corruption",
) -> np.ndarray:
    """One pretraining view: its own temporal crop-resize, then (``spatial``, default the paper's) shear or
    joint corruption with probability 0.5 each; or always shear, always corruption, or nothing."""
    check_spatial_augment(spatial)
    clip = temporal_crop_resize(x, num_frames, ratio, out_len, rng)
    if spatial == "none":
        return clip
    if spatial == "shear" or (spatial == "shear_or_corruption" and rng.random() < 0.5):
        return shear(clip, rng)
    return joint_corruption(clip, rng)
