"""The files of a prepared split folder, and the checks run before any of them is read.

A split folder (``<data_root>/<dataset folder>/<benchmark>/``, the reference's layout) holds per part
(train, val) ``{part}_data_joint.npy`` (float32 N x 3 x T x 25 x 2), ``{part}_label.pkl`` ((sample names,
labels)) and ``{part}_num_frame.npy`` (N frame counts), and ``manifest.json`` (``common.manifest``).
While a converter replaces its files, the folder holds :data:`COMMIT_MARKER`; every reader refuses a
folder that still holds it (the converter was stopped: the files may come from two runs). With
``common.manifest``, the format the converters and the readers (datasets, exporters) share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from common import safe_pickle
from common.constants import DATASETS, NUM_COORDINATES, NUM_JOINTS, NUM_PERSONS, PARTS
from common.io import UsageError

LABELS_HOLD = "label files hold (names, labels) only"
COMMIT_MARKER = ".skeleton-contrast.commit"


class SplitPaths(NamedTuple):
    """The three files of one part (train or val) of one split."""

    data: Path
    label: Path
    num_frame: Path


def part_paths(folder: str | os.PathLike, part: str) -> SplitPaths:
    """The three files of ``part`` ('train' or 'val') in a split folder (nothing is opened)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    folder = Path(folder)
    return SplitPaths(folder / f"{part}_data_joint.npy", folder / f"{part}_label.pkl", folder / f"{part}_num_frame.npy")


def prepare_hint(path: Path) -> str:
    """The data_gen command that writes ``path``, found from the dataset folder it lies in."""
    out = path.parent.parent
    for spec in DATASETS.values():
        if out.name == spec["folder"]:
            return spec["prepare"].format(out=out)
    return "the data_gen script for your dataset (see docs/datasets.md)"


class DataFileError(UsageError):
    """A data file that is empty, truncated, inconsistent, or cut short while a run reads it (one line;
    ``str()`` keeps only this line when a DataLoader re-raises it with the worker's traceback)."""

    def __str__(self) -> str:
        text = super().__str__()
        marker = f"{type(self).__name__}: "
        own = [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]
        return own[-1] if own else text


def check_committed(folder: Path) -> None:
    """DataFileError when a converter stopped while it replaced the files of ``folder``."""
    if os.path.lexists(folder / COMMIT_MARKER):
        stopped = f"a data preparation stopped while it replaced the files here ({COMMIT_MARKER} is left)"
        again = f"so they may come from two runs; make them again with: {prepare_hint(folder / 'x')}"
        raise DataFileError(f"{folder}: {stopped}, {again}")


def load_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """(sample names, int64 labels) of a label pickle, read without running code from it."""
    if path.stat().st_size == 0:
        again = f"make it again with: {prepare_hint(path)}"
        raise DataFileError(f"{path}: empty file (0 bytes), not a label pickle; {again}")
    try:
        content = safe_pickle.load(path, LABELS_HOLD)  # a label file is data, never code
    except safe_pickle.RefusedPickle:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways; all mean "not a label file"
        raise DataFileError(f"{path}: not a readable label pickle ({type(exc).__name__}: {exc})") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise DataFileError(f"{path}: expected a pickle of (sample_names, labels), got {type(content).__name__}")
    names, labels = content
    names = [str(n) for n in names]
    try:
        labels = np.asarray(labels)
    except ValueError as exc:
        raise DataFileError(f"{path}: labels are not a flat list of integers ({exc})") from None
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        got = f"got dtype {labels.dtype} shape {labels.shape}"
        raise DataFileError(f"{path}: labels must be a flat list of integers, {got}")
    if labels.size and labels.min() < 0:
        raise DataFileError(f"{path}: labels must be >= 0 (action number - 1), found {labels.min()}")
    if len(names) != len(labels):
        raise DataFileError(f"{path}: {len(names)} sample names but {len(labels)} labels")
    return names, labels.astype(np.int64)


class NpyHeader(NamedTuple):
    """What the header of a ``.npy`` file says about the array after it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # the header's length in bytes: where the array starts

    @property
    def file_size(self) -> int:
        """The size in bytes a file with this header must have."""
        return self.offset + int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


def read_npy_header(source: str | os.PathLike | BinaryIO) -> NpyHeader:
    """The header of a ``.npy`` file, or of a binary stream at one (an ``.npz`` member); DataFileError
    otherwise (for a stream without a path: the caller says which it is)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return read_npy_header(f)
        except OSError as error:
            raise DataFileError(f"{source}: cannot be read ({error.strerror or error})") from None
        except DataFileError as error:
            raise DataFileError(f"{source}: {error}") from None
    try:
        version = npy_format.read_magic(source)
        if version not in _HEADER_READERS:
            raise DataFileError(f"unsupported .npy version {version[0]}.{version[1]}")
        shape, fortran_order, dtype = _HEADER_READERS[version](source)
        offset = source.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise DataFileError(f"not a readable .npy array ({error})") from None
    return NpyHeader(tuple(int(n) for n in shape), np.dtype(dtype), bool(fortran_order), int(offset))


def npy_size(path: Path) -> int:
    """The size a ``.npy`` file must have by its header; DataFileError when it is shorter (checked before it
    is mapped: a mapped page past the end is a SIGBUS, which kills a DataLoader worker misleadingly)."""
    return _checked_header(path, exact=False).file_size


def _checked_header(path: Path, exact: bool = True) -> NpyHeader:
    """The header of ``path``, whose size must match it (``exact``: not be longer either), in C order."""
    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path}: empty file (0 bytes), not a .npy array; make it again with: {prepare_hint(path)}")
    header = read_npy_header(path)
    needed = header.file_size
    declares = f"its header declares shape {header.shape} {header.dtype} ({needed:,} bytes) but the file has {size:,}"
    again = f"make it again with: {prepare_hint(path)}"
    if size < needed:
        raise DataFileError(f"{path}: truncated: {declares} bytes (an interrupted copy?); {again}")
    if exact and (size > needed or header.fortran_order or header.dtype.hasobject):
        what = f"{declares} bytes" if size > needed else "it is not a C-order array of numbers"
        raise DataFileError(f"{path}: not written by a data preparation: {what}; {again}")
    return header


class OpenedSplit(NamedTuple):
    """One part of a split, checked: the data memory-mapped, the small files read."""

    data: np.ndarray  # memory map (N, 3, T, 25, 2)
    num_frames: np.ndarray  # (N,) int64
    names: list[str] | None
    labels: np.ndarray | None
    header: NpyHeader  # the data file's


def _load(path: Path, mmap: bool) -> np.ndarray:
    """A ``.npy`` file whose header :func:`_checked_header` has accepted."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError) as exc:
        raise DataFileError(f"{path}: not a readable .npy array ({exc})") from None


def open_split(paths: SplitPaths, need_labels: bool) -> OpenedSplit:
    """Open and check a split; every error (DataFileError, one line) names the files and shapes."""
    paths = SplitPaths(*(Path(p) for p in paths))
    check_committed(paths.data.parent)
    for path in [paths.data, paths.num_frame] + ([paths.label] if need_labels else []):
        if not path.is_file():
            raise DataFileError(f"{path} not found; make it with: {prepare_hint(path)}")
    header = _checked_header(paths.data)
    shape = header.shape
    if len(shape) != 5 or (shape[1], shape[3], shape[4]) != (NUM_COORDINATES, NUM_JOINTS, NUM_PERSONS):
        expected = f"(N, {NUM_COORDINATES}, T, {NUM_JOINTS}, {NUM_PERSONS})"
        raise DataFileError(f"{paths.data}: expected shape {expected}, got {shape}")
    data = _load(paths.data, mmap=True)
    _checked_header(paths.num_frame)
    num_frames = _load(paths.num_frame, mmap=False)
    if num_frames.ndim != 1 or not np.issubdtype(num_frames.dtype, np.integer):
        got = f"got dtype {num_frames.dtype} shape {num_frames.shape}"
        raise DataFileError(f"{paths.num_frame}: expected N integer frame counts, {got}")
    if len(num_frames) != shape[0]:
        other = f"{paths.num_frame} has shape {num_frames.shape}"
        raise DataFileError(f"{paths.data} has shape {shape} but {other}: sample counts disagree")
    if num_frames.size and (num_frames.min() < 0 or num_frames.max() > shape[2]):
        found = f"found [{num_frames.min()}, {num_frames.max()}]"
        raise DataFileError(f"{paths.num_frame}: frame counts must lie in [0, {shape[2]}] (T of {paths.data}), {found}")
    names = labels = None
    if need_labels:
        names, labels = load_labels(paths.label)
        if len(labels) != shape[0]:
            other = f"{paths.label} holds {len(labels)} labels"
            raise DataFileError(f"{paths.data} has shape {shape} but {other}: sample counts disagree")
    return OpenedSplit(data, num_frames.astype(np.int64), names, labels, header)


def check_split(paths: SplitPaths, need_labels: bool = True) -> int:
    """Check that a split's files exist and agree (the data is memory-mapped, not read); its sample count."""
    return int(open_split(paths, need_labels).data.shape[0])
