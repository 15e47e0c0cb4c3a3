"""Reader for NTU RGB+D ``.skeleton`` text files (Kinect v2 bodies, 25 joints).

Line 1 holds the frame count; each frame starts with its body count; each body is a line of 10 fields, a
line with the joint count, then a line of 12 fields per joint, of which ``x y z`` (camera space) are
kept. A Python walk over the frame and body headers, then one ``numpy.loadtxt`` over all joint lines
(x y z, and the 12 fields of the last line, where a truncated file is cut); only when that fails does a
line-by-line pass run, to name the offending line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

from common.constants import MAX_BODIES, NUM_JOINTS
from data_gen.normalize import MAX_ABS_COORDINATE, slot_energy
from data_gen.writer import DataGenError

BODY_FIELDS = 10
JOINT_FIELDS = 12
_LIMIT = f"{MAX_ABS_COORDINATE:.2g}"
COORDINATE_EXPECTED = f"x y z of magnitude at most {_LIMIT} (finite once normalised and stored as float32)"


class SkeletonFormatError(DataGenError):
    """A ``.skeleton`` file that is truncated or malformed; names the file, the line and what was expected."""

    def __init__(self, path: str | Path, line: int, expected: str, found: str):
        self.line = line
        super().__init__(f"{path}, line {line}: expected {expected}, found {found}")


@dataclass(frozen=True)
class RawSkeleton:
    """What a ``.skeleton`` file holds, body slots in order of appearance within each frame."""

    num_frames: int  # the frame count on line 1
    bodies: np.ndarray  # (max_bodies, T, num_joints, 3) float64, zeros where a slot is absent; T = num_frames,
    # or at most ``max_frames`` when read_skeleton was given that
    energy: np.ndarray  # (max_bodies,) each slot's motion energy over all frames (normalize.body_energy)


def _describe(line: bytes) -> str:
    """A line as it can be shown in a one-line message."""
    text = line.decode("utf-8", errors="replace").strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _read_count(path: Path, lines: list[bytes], index: int, what: str) -> int:
    """The non-negative integer on line ``index`` (0-based), or SkeletonFormatError."""
    if index >= len(lines):
        raise SkeletonFormatError(path, index + 1, what, "end of file (truncated file?)")
    try:
        value = int(lines[index])
    except ValueError:
        raise SkeletonFormatError(path, index + 1, what, _describe(lines[index])) from None
    if value < 0:
        raise SkeletonFormatError(path, index + 1, what, _describe(lines[index]))
    return value


def _raise_body_error(path: Path, lines: list[bytes], index: int, m: int, t: int) -> None:
    """Body ``m`` of frame ``t`` should start at line ``index``: say what is wrong there."""
    where = f"body {m + 1} of frame {t + 1}"
    if index >= len(lines):
        raise SkeletonFormatError(path, index + 1, f"the body line of {where}", "end of file (truncated file?)")
    if (fields := len(lines[index].split())) != BODY_FIELDS:
        found = f"{fields} fields: {_describe(lines[index])}"
        raise SkeletonFormatError(path, index + 1, f"a body line of {BODY_FIELDS} fields ({where})", found)
    expected = f"the joint count of {where} (an integer)"
    raise SkeletonFormatError(path, index + 2, expected, "end of file (truncated file?)")


def _parse_joint_lines(joint_lines: Sequence[bytes]) -> np.ndarray | None:
    """(L, 3) x y z of the joint lines with numpy's C reader, or None if it cannot parse them.

    Only the three columns used are converted (the reader then stops each line after its third field,
    a sixth faster than checking all 12). The field count is checked on the last line, the one a
    truncated file cuts short; a cut anywhere else breaks the line structure the caller checks.
    """
    if len(joint_lines[-1].split()) != JOINT_FIELDS:
        return None
    try:
        return np.loadtxt(joint_lines, dtype=np.float64, usecols=(0, 1, 2), comments=None, ndmin=2)
    except ValueError:
        return None


def _locate_bad_joint_line(path: Path, lines: list[bytes], line_indices: np.ndarray) -> SkeletonFormatError:
    """Slow pass over the joint lines that names the first malformed one."""
    expected = f"a joint line of {JOINT_FIELDS} numbers (x y z ... trackingState)"
    for index in line_indices.tolist():
        fields = lines[index].split()
        if len(fields) != JOINT_FIELDS:
            return SkeletonFormatError(path, index + 1, expected, f"{len(fields)} fields: {_describe(lines[index])}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            return SkeletonFormatError(path, index + 1, expected, _describe(lines[index]))
        if not all(np.isfinite(values[:3])):
            return SkeletonFormatError(path, index + 1, "finite x y z", _describe(lines[index]))
        if max(abs(v) for v in values[:3]) > MAX_ABS_COORDINATE:
            return SkeletonFormatError(path, index + 1, COORDINATE_EXPECTED, _describe(lines[index]))
    # The bulk parse failed but every line is fine on its own: report the file as a whole.
    return SkeletonFormatError(path, int(line_indices[0]) + 1, expected, "joint data that numpy cannot parse")


def read_skeleton(
    path: str | Path, max_bodies: int = MAX_BODIES, num_joints: int = NUM_JOINTS, max_frames: int | None = None
) -> RawSkeleton:
    """Parse one ``.skeleton`` file; SkeletonFormatError for a truncated or malformed one.

    Body slot ``m`` of frame ``t`` is the ``m``-th body listed in that frame (not a body ID), as in the
    reference. Bodies beyond ``max_bodies`` and joints beyond ``num_joints`` are checked but dropped;
    lines after the last frame are ignored. With ``max_frames``, ``bodies`` holds only the first
    ``max_frames`` frames (``energy`` covers all), so memory follows the file's size, not its frame count.
    """
    path = Path(path)
    with open(path, "rb") as f:
        lines = f.read().splitlines()  # bytes.splitlines: \n, \r\n and \r only

    num_frames = _read_count(path, lines, 0, "the frame count (an integer)")
    # A frame count beyond the file's lines stops this walk where the lines end (the message names that
    # line); nothing is allocated from the declared count.
    info = _body_layout(path, lines, num_frames)
    kept_frames = num_frames if max_frames is None else min(num_frames, max_frames)
    bodies = np.zeros((max_bodies, kept_frames, num_joints, 3), dtype=np.float64)
    slots, frames, starts, counts = info.T
    if counts.sum() == 0:
        return RawSkeleton(num_frames, bodies, np.zeros(max_bodies))

    # (L,) file line index of every joint line, in file order.
    offsets = np.cumsum(counts) - counts  # row of each body's first joint among all joint rows
    line_indices = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))
    joint_lines = itemgetter(*line_indices.tolist())(lines)
    if len(line_indices) == 1:
        joint_lines = (joint_lines,)
    values = _parse_joint_lines(joint_lines)
    # loadtxt skips blank lines; a short row count means one of them sat among the joint lines.
    if values is None or len(values) != len(joint_lines) or not np.abs(values).max() <= MAX_ABS_COORDINATE:
        raise _locate_bad_joint_line(path, lines, line_indices)

    # One (num_joints, 3) entry per kept body that has joints: proportional to the file's joint lines.
    kept = np.flatnonzero((slots < max_bodies) & (counts > 0))
    take = np.minimum(counts[kept], num_joints)  # joints kept per kept body
    joint = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)  # 0..take-1 per body
    entries = np.zeros((len(kept), num_joints, 3), dtype=np.float64)
    entries[np.repeat(np.arange(len(kept)), take), joint] = values[np.repeat(offsets[kept], take) + joint, :3]
    energy = slot_energy(entries, slots[kept], max_bodies)
    early = frames[kept] < kept_frames
    bodies[slots[kept][early], frames[kept][early]] = entries[early]
    return RawSkeleton(num_frames, bodies, energy)


def _body_layout(path: Path, lines: list[bytes], num_frames: int) -> np.ndarray:
    """(E, 4) int64: (slot within the frame, frame, first joint line, joint count) per body, in file order;
    runs for every body of every file, so messages are built on the error paths only."""
    body_info: list[tuple[int, int, int, int]] = []
    total_lines = len(lines)
    p = 1
    for t in range(num_frames):
        try:
            num_bodies = int(lines[p])
        except (IndexError, ValueError):
            num_bodies = -1
        if num_bodies < 0:
            _read_count(path, lines, p, f"the body count of frame {t + 1} (an integer)")
        p += 1
        for m in range(num_bodies):
            if p + 1 >= total_lines or len(lines[p].split()) != BODY_FIELDS:
                _raise_body_error(path, lines, p, m, t)
            try:
                num_body_joints = int(lines[p + 1])
            except ValueError:
                num_body_joints = -1
            if num_body_joints < 0:
                _read_count(path, lines, p + 1, f"the joint count of body {m + 1} of frame {t + 1} (an integer)")
            p += 2
            if p + num_body_joints > total_lines:
                expected = f"{num_body_joints} joint lines for body {m + 1} of frame {t + 1}"
                found = f"end of file after {total_lines - p} (truncated file?)"
                raise SkeletonFormatError(path, total_lines + 1, expected, found)
            body_info.append((m, t, p, num_body_joints))
            p += num_body_joints
    return np.asarray(body_info, dtype=np.int64).reshape(-1, 4)
