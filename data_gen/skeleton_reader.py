"""Reader for NTU RGB+D ``.skeleton`` text files (Kinect v2 bodies, 25 joints).

Layout: line 1 holds the frame count; each frame starts with its body count; each body is one line of
10 body fields, one line with the joint count, then one line per joint with 12 fields
(``x y z depthX depthY colorX colorY orientationW orientationX orientationY orientationZ
trackingState``). Only the camera-space ``x y z`` are kept.

The common case is parsed in bulk: a Python walk over frame and body headers, then one C-level
``numpy.loadtxt`` over all joint lines. Only when that bulk parse fails does a line-by-line pass
run, to name the offending line. (The bulk parse accepts joint lines with more than 12 fields.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_JOINTS = 25
MAX_BODIES = 4  # bodies the Kinect tracks at most; later bodies of a frame are dropped
BODY_FIELDS = 10
JOINT_FIELDS = 12


class SkeletonFormatError(ValueError):
    """A ``.skeleton`` file that is truncated or malformed; names the file, the line and what was expected."""

    def __init__(self, path: str | Path, line: int, expected: str, found: str):
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}, line {line}: expected {expected}, found {found}")


@dataclass(frozen=True)
class RawSkeleton:
    """What a ``.skeleton`` file holds, body slots in order of appearance within each frame."""

    num_frames: int  # the frame count on line 1
    bodies: np.ndarray  # (max_bodies, num_frames, num_joints, 3) float64, zeros where a slot is absent


def _describe(line: bytes | None) -> str:
    if line is None:
        return "end of file"
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


def _fast_count(lines: list[bytes], index: int) -> int:
    """The integer on line ``index``, or -1 when there is none (the caller then asks _read_count why)."""
    try:
        return int(lines[index])
    except (IndexError, ValueError):
        return -1


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
    # The bulk parse failed but every line is fine on its own: report the file as a whole.
    return SkeletonFormatError(path, int(line_indices[0]) + 1, expected, "joint data that numpy cannot parse")


def read_skeleton(path: str | Path, max_bodies: int = MAX_BODIES, num_joints: int = NUM_JOINTS) -> RawSkeleton:
    """Parse one ``.skeleton`` file.

    Body slot ``m`` of frame ``t`` is the ``m``-th body listed in that frame (not a body ID), as in the
    reference preprocessing. Bodies beyond ``max_bodies`` and joints beyond ``num_joints`` are read
    (and checked) but dropped. Trailing lines after the last frame are ignored.
    Raises SkeletonFormatError for a truncated or malformed file, OSError if it cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        lines = f.read().splitlines()  # bytes.splitlines: \n, \r\n and \r only

    num_frames = _read_count(path, lines, 0, "the frame count (an integer)")
    # One entry per body in file order: its slot within the frame, its frame, its first joint line
    # and its joint count. Every body's joint lines are checked, kept or not.
    body_slot: list[int] = []
    body_frame: list[int] = []
    body_start: list[int] = []
    body_joints: list[int] = []
    total_lines = len(lines)
    p = 1
    for t in range(num_frames):
        num_bodies = _fast_count(lines, p)
        if num_bodies < 0:  # build the message only on the error path
            _read_count(path, lines, p, f"the body count of frame {t + 1} (an integer)")
        p += 1
        for m in range(num_bodies):
            if p >= total_lines or len(lines[p].split()) != BODY_FIELDS:
                found = "end of file (truncated file?)" if p >= total_lines else \
                    f"{len(lines[p].split())} fields: {_describe(lines[p])}"
                raise SkeletonFormatError(path, p + 1, f"a body line of {BODY_FIELDS} fields "
                                          f"(body {m + 1} of frame {t + 1})", found)
            num_body_joints = _fast_count(lines, p + 1)
            if num_body_joints < 0:
                _read_count(path, lines, p + 1, f"the joint count of body {m + 1} of frame {t + 1} (an integer)")
            p += 2
            if p + num_body_joints > total_lines:
                raise SkeletonFormatError(path, total_lines + 1,
                                          f"{num_body_joints} joint lines for body {m + 1} of frame {t + 1}",
                                          f"end of file after {total_lines - p} (truncated file?)")
            body_slot.append(m)
            body_frame.append(t)
            body_start.append(p)
            body_joints.append(num_body_joints)
            p += num_body_joints

    bodies = np.zeros((max_bodies, num_frames, num_joints, 3), dtype=np.float64)
    counts = np.asarray(body_joints, dtype=np.int64)
    if counts.sum() == 0:
        return RawSkeleton(num_frames, bodies)

    # (L,) file line index of every joint line, in file order.
    offsets = np.cumsum(counts) - counts  # row of each body's first joint among all joint rows
    line_indices = np.repeat(np.asarray(body_start, dtype=np.int64) - offsets, counts) + np.arange(int(counts.sum()))
    joint_lines: list[bytes] = []
    for start, count in zip(body_start, body_joints):
        joint_lines.extend(lines[start:start + count])
    try:
        # numpy's C reader; converting only the columns used keeps it fast. Asking for the last
        # column (trackingState) checks that every line has at least 12 fields.
        values = np.loadtxt(joint_lines, dtype=np.float64, usecols=(0, 1, 2, JOINT_FIELDS - 1),
                            comments=None, ndmin=2)
    except ValueError:
        values = None
    # loadtxt skips blank lines; a short row count means one of them sat among the joint lines.
    if values is None or len(values) != len(joint_lines) or not np.isfinite(values[:, :3]).all():
        raise _locate_bad_joint_line(path, lines, line_indices)

    slots = np.asarray(body_slot, dtype=np.int64)
    kept = np.flatnonzero(slots < max_bodies)
    take = np.minimum(counts[kept], num_joints)  # joints kept per kept body
    joint = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)  # 0..take-1 per body
    rows = np.repeat(offsets[kept], take) + joint
    frames = np.asarray(body_frame, dtype=np.int64)
    bodies[np.repeat(slots[kept], take), np.repeat(frames[kept], take), joint] = values[rows, :3]
    return RawSkeleton(num_frames, bodies)
