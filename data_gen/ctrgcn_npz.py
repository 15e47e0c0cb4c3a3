"""CTR-GCN-style ``.npz`` files (``NTU60_CS.npz`` ...) to and from our prepared split folders.

    python data_gen/ctrgcn_npz.py export --data-root ROOT --dataset ntu60 --benchmark xsub --out NTU60_CS.npz
        [--keep-padding] [--compress] [--no-progress]
    python data_gen/ctrgcn_npz.py import --npz NTU60_CS.npz --dataset ntu60 --benchmark xsub --data-root ROOT
        [--no-progress]

The file is the one CTR-GCN's ``data/ntu/seq_transformation.py`` writes and the feeders of CTR-GCN,
InfoGCN, MAMP and MacDiff read (2s-AGCN and MS-G3D read our own layout): ``x_train`` / ``x_test``
float32 (N, T=300, 150), ``y_train`` / ``y_test`` one-hot (N, num_class; wider rows are accepted on
import when every class is below num_class). The 150 values of a frame are person-major, then joint,
then coordinate: ``x[n, t, m * 75 + v * 3 + c]`` = our ``data[n, c, t, v, m]``; those feeders read it back
with ``reshape(N, T, 2, 25, 3)`` and move the coordinate axis first. Export adds ``names_train`` /
``names_test`` (strings) and ``num_frame_train`` / ``num_frame_test`` (int64), which those feeders
ignore and import uses to restore our names and frame counts. Our train part is their ``train``, our
val part their ``test``.

Padding: our preparation fills the frames after a clip's end by repeating the clip (the 2s-AGCN
pre-normalisation), while those feeders take the number of non-zero frames as the clip length. Export
therefore writes zeros after ``num_frame`` frames; ``--keep-padding`` writes the stored frames as
they are, which makes ``export`` then ``import`` reproduce every file byte for byte. Without the extra
arrays (a file made by another tool), import names the samples ``train_<i>`` / ``test_<i>`` as those
feeders do and takes each frame count from the last non-zero frame.

Both directions stream row blocks: export reads blocks of our data file with plain reads and writes each
array into its zip member through a ``.npy`` header and row blocks; import reads the members' headers,
then row blocks from the (decompressing) member stream. Memory stays at a few blocks whatever the file
size. Export writes the ``.npz`` through ``common.io.atomic_write`` (a hidden temporary name, renamed
into place when complete). Import checks every header and the labels, names and frame counts first, then
streams the clips through ``data_gen.writer.RunOutputs`` (folder locked, run-private temporary names,
all six files renamed into place only when complete) and writes the folder's ``manifest.json``. Bad
input stops with one line naming the file and the array (exit 2) and leaves the previous files as they
were.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from common.constants import (
    DATASETS,
    NUM_COORDINATES,
    NUM_JOINTS,
    NUM_PERSONS,
    PARTS,
    VALUES_PER_FRAME,
)
from common.io import atomic_write
from common.split_folder import open_split, part_paths, read_npy_header
from data_gen import cli
from data_gen.writer import DataGenError, PartWriter, RunOutputs

NPZ_PART = {"train": "train", "val": "test"}  # our part -> the npz's
TOOL = "data_gen/ctrgcn_npz.py import"
ROWS_PER_BLOCK = 128  # 128 clips of 300 frames: 23 MB per block


@dataclass
class Part:
    """One part of a prepared split folder, opened for reading."""

    data: np.ndarray  # (N, 3, T, 25, 2) memory map
    names: list[str]
    labels: np.ndarray  # (N,) int64
    num_frame: np.ndarray  # (N,) int64
    path: Path  # the data file, for messages
    label_path: Path
    header_length: int  # bytes before the first row of the data file

    def read_rows(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) read with plain file reads: unlike pages of a memory map, they do not stay resident."""
        row_shape = self.data.shape[1:]
        row_bytes = int(np.prod(row_shape)) * self.data.dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.header_length + start * row_bytes)
            block = np.fromfile(f, dtype=self.data.dtype, count=(end - start) * row_bytes // self.data.dtype.itemsize)
        return block.reshape(end - start, *row_shape)


def benchmark_folder(dataset: str, benchmark: str) -> str:
    """The folder name of ``benchmark`` (a folder name such as xsub or a protocol such as cross_subject)."""
    if dataset not in DATASETS:
        raise DataGenError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    protocols = DATASETS[dataset]["protocols"]
    folders = {**{f: f for f in protocols.values()}, **protocols}
    if benchmark == "xset":  # pyskl's name
        benchmark = "xsetup"
    if benchmark not in folders:
        raise DataGenError(f"{dataset} has no benchmark {benchmark!r}; expected one of {', '.join(protocols.values())}")
    return folders[benchmark]


def split_folder(data_root: str | os.PathLike, dataset: str, benchmark: str) -> Path:
    """``<data_root>/<dataset folder>/<benchmark folder>``, where the feeders read the split."""
    folder = benchmark_folder(dataset, benchmark)  # checks both names
    return Path(data_root) / DATASETS[dataset]["folder"] / folder


def open_part(folder: str | os.PathLike, part: str) -> Part:
    """Open and check one part of a split folder; DataGenError (one line naming the file) otherwise."""
    paths = part_paths(Path(folder), part)
    try:
        split = open_split(paths, need_labels=True)  # existence, shapes, frame counts, labels (no pickle code)
        header_length = read_npy_header(paths.data).offset
    except (FileNotFoundError, ValueError) as error:
        raise DataGenError(str(error)) from None
    return Part(split.data, split.names, split.labels, split.num_frames, paths.data, paths.label, header_length)


# ----------------------------------------------------------------------------------------------
# Layout


def to_ctrgcn_rows(block: np.ndarray) -> np.ndarray:
    """(B, 3, T, 25, 2) -> float32 (B, T, 150): per frame, for each person, each joint, x y z."""
    b, c, t, v, m = block.shape
    return np.ascontiguousarray(np.transpose(block, (0, 2, 4, 3, 1)), dtype=np.float32).reshape(b, t, m * v * c)


def from_ctrgcn_rows(rows: np.ndarray) -> np.ndarray:
    """(B, T, 150) -> float32 (B, 3, T, 25, 2), the inverse of ``to_ctrgcn_rows``."""
    b, t, _ = rows.shape
    split = rows.reshape(b, t, NUM_PERSONS, NUM_JOINTS, NUM_COORDINATES)
    return np.ascontiguousarray(np.transpose(split, (0, 4, 1, 3, 2)), dtype=np.float32)


def zero_after(block: np.ndarray, num_frame: np.ndarray) -> np.ndarray:
    """Copy of (B, 3, T, 25, 2) ``block`` with every frame at or after ``num_frame[b]`` set to zero."""
    keep = np.arange(block.shape[2])[None, :] < np.asarray(num_frame)[:, None]  # (B, T)
    return np.where(keep[:, None, :, None, None], block, np.float32(0.0)).astype(np.float32, copy=False)


def last_nonzero_frame(block: np.ndarray) -> np.ndarray:
    """(B, T, 150) rows -> (B,) int64: one past the last frame with a non-zero value (0 for all-zero clips)."""
    nonzero = (block != 0).any(axis=2)  # (B, T)
    t = block.shape[1]
    last = t - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0).astype(np.int64)


def one_hot(labels: np.ndarray, num_class: int) -> np.ndarray:
    """(N,) int -> float32 (N, num_class) one-hot."""
    out = np.zeros((len(labels), num_class), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ----------------------------------------------------------------------------------------------
# .npy streams


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The bytes of a C-order ``.npy`` header (version 1.0 when it fits, as ``np.save`` writes)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # header over 64 KiB
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def write_npy_stream(f: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable[np.ndarray]) -> None:
    """Write a ``.npy`` array of ``shape`` to ``f`` from row blocks; the rows must add up to shape[0]."""
    dtype = np.dtype(dtype)
    f.write(npy_header(dtype, shape))
    rows = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.shape[1:] != tuple(shape[1:]):
            raise ValueError(f"block of shape {block.shape} does not fit an array of shape {shape}")
        f.write(memoryview(block).cast("B"))
        rows += block.shape[0]
    if rows != shape[0]:
        raise ValueError(f"{rows} rows written for an array of {shape[0]}")


def _blocks(n: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    size = size or ROWS_PER_BLOCK  # read at call time
    for start in range(0, n, size):
        yield start, min(start + size, n)


# ----------------------------------------------------------------------------------------------
# Export


def _export_rows(part: Part, keep_padding: bool, bar: tqdm) -> Iterator[np.ndarray]:
    """The part's clips as CTR-GCN rows, one block at a time; non-finite values stop the export."""
    for start, end in _blocks(len(part.names)):
        block = part.read_rows(start, end).astype(np.float32, copy=False)
        bad = ~np.isfinite(block).reshape(end - start, -1).all(axis=1)
        if bad.any():
            raise DataGenError(
                f"{part.path}: sample {start + int(np.argmax(bad))} "
                f"({part.names[start + int(np.argmax(bad))]}) holds NaN or infinite values"
            )
        if not keep_padding:
            block = zero_after(block, part.num_frame[start:end])
        yield to_ctrgcn_rows(block)
        bar.update(end - start)


def _write_member(
    zf: zipfile.ZipFile, key: str, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable[np.ndarray]
) -> None:
    # force_zip64: the size is not known when the member is opened, and x can exceed 2 GiB.
    with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
        write_npy_stream(member, dtype, shape, blocks)


def _write_part(zf: zipfile.ZipFile, part: Part, key: str, num_class: int, keep_padding: bool, bar: tqdm) -> None:
    n, t = part.data.shape[0], part.data.shape[2]
    _write_member(zf, f"x_{key}", np.float32, (n, t, VALUES_PER_FRAME), _export_rows(part, keep_padding, bar))
    labels = part.labels
    _write_member(
        zf, f"y_{key}", np.float32, (n, num_class), (one_hot(labels[s:e], num_class) for s, e in _blocks(n, 1 << 14))
    )
    names = np.array(part.names, dtype=str) if part.names else np.zeros(0, dtype="<U1")
    _write_member(zf, f"names_{key}", names.dtype, names.shape, [names])
    _write_member(zf, f"num_frame_{key}", np.int64, part.num_frame.shape, [part.num_frame])


def export_npz(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    num_class: int,
    *,
    keep_padding: bool = False,
    compress: bool = False,
    progress: bool = False,
) -> dict[str, int]:
    """Write the split in ``folder`` as a CTR-GCN ``.npz`` at ``out``; returns samples per npz part.

    Raises DataGenError (one line) for a bad split folder, ``common.io.OutputError`` when ``out`` cannot
    be written; ``out`` is only replaced once complete (``common.io.atomic_write``).
    """
    parts = {part: open_part(folder, part) for part in PARTS}
    for part in parts.values():
        if part.labels.size and part.labels.max() >= num_class:
            raise DataGenError(
                f"{part.label_path}: label {part.labels.max()} is outside 0..{num_class - 1} "
                "(the classes of the chosen dataset)"
            )
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    total = sum(len(p.names) for p in parts.values())

    def write(f: BinaryIO) -> None:
        with (
            tqdm(total=total, unit="clip", desc="export", disable=not progress) as bar,
            zipfile.ZipFile(f, "w", compression=compression, allowZip64=True) as zf,
        ):
            for part_name, part in parts.items():
                _write_part(zf, part, NPZ_PART[part_name], num_class, keep_padding, bar)

    atomic_write(out, write)
    return {NPZ_PART[name]: len(part.names) for name, part in parts.items()}


# ----------------------------------------------------------------------------------------------
# Import


@dataclass
class Member:
    """One array of an .npz archive, from its header."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class NpzPart:
    """The arrays of one npz part (train or test); the extras may be absent."""

    x: Member
    y: Member
    names: Member | None
    num_frame: Member | None


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _member_header(zf: zipfile.ZipFile, npz: Path, key: str) -> Member:
    try:
        with zf.open(f"{key}.npy") as f:
            shape, dtype, fortran_order, _ = read_npy_header(f)
    except ValueError as error:
        raise DataGenError(f"{npz}: {key}: {error}") from None
    except _ZIP_ERRORS as error:
        raise DataGenError(f"{npz}: {key}: unreadable archive member ({error})") from None
    if fortran_order:
        raise DataGenError(f"{npz}: {key} is stored in Fortran order; expected C order (as np.savez writes)")
    if dtype.hasobject:
        raise DataGenError(
            f"{npz}: {key} holds Python objects (readable only with pickle, which is not used); "
            "expected numbers or strings"
        )
    return Member(key, shape, dtype)


def _iter_rows(zf: zipfile.ZipFile, npz: Path, member: Member, rows: int | None = None) -> Iterator[np.ndarray]:
    """Row blocks of a member, read from the (decompressing) member stream."""
    row_bytes = member.dtype.itemsize * int(np.prod(member.shape[1:], dtype=np.int64))
    try:
        with zf.open(f"{member.key}.npy") as f:
            read_npy_header(f)
            for start, end in _blocks(member.shape[0], rows):
                buffer = f.read((end - start) * row_bytes)
                if len(buffer) < (end - start) * row_bytes:
                    raise DataGenError(
                        f"{npz}: {member.key} ends after {start + len(buffer) // max(row_bytes, 1)} "
                        f"rows; its header announces {member.shape[0]}"
                    )
                yield np.frombuffer(buffer, dtype=member.dtype).reshape(end - start, *member.shape[1:])
    except _ZIP_ERRORS as error:
        raise DataGenError(f"{npz}: {member.key}: unreadable archive member ({error})") from None


def _read_whole(zf: zipfile.ZipFile, npz: Path, member: Member) -> np.ndarray:
    blocks = list(_iter_rows(zf, npz, member, rows=1 << 16))
    return np.concatenate(blocks) if blocks else np.zeros(member.shape, dtype=member.dtype)


def _check_part(npz: Path, members: dict[str, Member], key: str, num_class: int, dataset: str) -> NpzPart:
    x, y = members[f"x_{key}"], members[f"y_{key}"]
    if len(x.shape) != 3 or x.shape[2] != VALUES_PER_FRAME or x.shape[1] < 1:
        raise DataGenError(
            f"{npz}: x_{key} has shape {x.shape}, expected (N, T, {VALUES_PER_FRAME}): "
            f"per frame {NUM_PERSONS} persons x {NUM_JOINTS} joints x xyz"
        )
    if x.dtype.kind != "f":
        raise DataGenError(f"{npz}: x_{key} has dtype {x.dtype}, expected floats (float32)")
    # Wider is accepted (MAMP's PKU-MMD phase 2 files are 51 wide for 41 classes); the labels are checked.
    if len(y.shape) != 2 or y.shape[0] != x.shape[0] or y.shape[1] < num_class or y.dtype.kind not in "fiub":
        raise DataGenError(
            f"{npz}: y_{key} has shape {y.shape} dtype {y.dtype}, expected ({x.shape[0]}, {num_class}):"
            f" one-hot over the {num_class} classes of {dataset}, one row per sample of x_{key}"
        )
    names, frames = members.get(f"names_{key}"), members.get(f"num_frame_{key}")
    if names is not None and (names.shape != (x.shape[0],) or names.dtype.kind not in "US"):
        raise DataGenError(
            f"{npz}: names_{key} has shape {names.shape} dtype {names.dtype}, expected ({x.shape[0]},) strings"
        )
    if frames is not None and (frames.shape != (x.shape[0],) or frames.dtype.kind not in "iu"):
        raise DataGenError(
            f"{npz}: num_frame_{key} has shape {frames.shape} dtype {frames.dtype}, expected ({x.shape[0]},) integers"
        )
    return NpzPart(x, y, names, frames)


def check_npz(npz: Path, zf: zipfile.ZipFile, num_class: int, dataset: str) -> dict[str, NpzPart]:
    """Headers of every array checked against the CTR-GCN layout: npz part name -> its arrays."""
    keys = [name[:-4] for name in zf.namelist() if name.endswith(".npy")]
    required = [f"{a}_{k}" for k in NPZ_PART.values() for a in ("x", "y")]
    missing = [k for k in required if k not in keys]
    if missing:
        raise DataGenError(
            f"{npz}: missing array {missing[0]!r} (a CTR-GCN npz holds {', '.join(required)}; "
            f"found {', '.join(keys) or 'none'})"
        )
    members = {k: _member_header(zf, npz, k) for k in keys if k in required or k.startswith(("names_", "num_frame_"))}
    return {key: _check_part(npz, members, key, num_class, dataset) for key in NPZ_PART.values()}


def read_one_hot(zf: zipfile.ZipFile, npz: Path, member: Member, num_class: int) -> np.ndarray:
    """(N,) int64 labels of a one-hot member; DataGenError naming the first row that is not one-hot or
    whose class is ``num_class`` or more."""
    labels = []
    row = 0
    for block in _iter_rows(zf, npz, member, rows=1 << 14):
        ones, zeros = block == 1, block == 0
        good = (ones.sum(axis=1) == 1) & (ones | zeros).all(axis=1)
        if not good.all():
            bad = row + int(np.argmin(good))
            raise DataGenError(
                f"{npz}: {member.key} row {bad} is not one-hot (expected a single 1 and 0 elsewhere, "
                f"found values {np.unique(block[bad - row])[:4].tolist()})"
            )
        labels.append(np.argmax(ones, axis=1))
        if labels[-1].max(initial=0) >= num_class:
            bad = row + int(np.argmax(labels[-1] >= num_class))
            raise DataGenError(
                f"{npz}: {member.key} row {bad} is class {labels[-1][bad - row]}, "
                f"outside the {num_class} classes (0..{num_class - 1}) of the chosen --dataset"
            )
        row += len(block)
    return np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, dtype=np.int64)


@dataclass
class PartMeta:
    """What import writes beside the data of one part."""

    names: list[str]
    labels: np.ndarray
    num_frame: np.ndarray | None  # None: taken from the last non-zero frame while the data streams


def read_part_meta(zf: zipfile.ZipFile, npz: Path, key: str, arrays: NpzPart, num_class: int) -> PartMeta:
    """Labels, and names and frame counts from the extra arrays where present (checked)."""
    labels = read_one_hot(zf, npz, arrays.y, num_class)
    n, t = arrays.x.shape[:2]
    if arrays.names is not None:
        names = [str(v) for v in _read_whole(zf, npz, arrays.names).astype(str)]
    else:
        names = [f"{key}_{i}" for i in range(n)]
    frames = None
    if arrays.num_frame is not None:
        frames = _read_whole(zf, npz, arrays.num_frame).astype(np.int64)
        if frames.size and (frames.min() < 0 or frames.max() > t):
            raise DataGenError(
                f"{npz}: num_frame_{key} must lie in [0, {t}] (T of x_{key}), found [{frames.min()}, {frames.max()}]"
            )
    return PartMeta(names, labels, frames)


def import_part(zf: zipfile.ZipFile, npz: Path, writer: PartWriter, arrays: NpzPart, meta: PartMeta, bar: tqdm) -> None:
    """Stream one part's clips from the npz into ``writer`` (our layout), block by block."""
    row = 0
    for rows in _iter_rows(zf, npz, arrays.x):
        bad = ~np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
        if bad.any():
            raise DataGenError(f"{npz}: {arrays.x.key} sample {row + int(np.argmax(bad))} holds NaN or infinite values")
        last = last_nonzero_frame(rows) if meta.num_frame is None else meta.num_frame[row : row + len(rows)]
        for j, clip in enumerate(from_ctrgcn_rows(rows)):
            writer.append(meta.names[row + j], int(meta.labels[row + j]), clip, int(last[j]))
        row += len(rows)
        bar.update(len(rows))


def _open_zip(npz: Path) -> zipfile.ZipFile:
    if not npz.is_file():
        raise DataGenError(f"{npz}: no such file")
    try:
        return zipfile.ZipFile(npz)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataGenError(f"{npz}: not an .npz (zip) archive ({error})") from None


def import_npz(
    npz: str | os.PathLike,
    folder: str | os.PathLike,
    num_class: int,
    *,
    dataset: str = "",
    progress: bool = False,
    arguments: dict | None = None,
) -> dict[str, int]:
    """Write the CTR-GCN ``npz`` as our split files into ``folder`` (plus its manifest); samples per part.

    The headers, labels, names and frame counts are checked before any clip is written; the clips then
    stream into ``data_gen.writer.RunOutputs``, which renames the six files into place only once all
    are complete (the folder is locked meanwhile). Raises DataGenError (one line) for bad input.
    """
    npz, folder = Path(npz), Path(folder)
    with _open_zip(npz) as zf:
        arrays = check_npz(npz, zf, num_class, dataset or f"a {num_class}-class dataset")
        metas = {part: read_part_meta(zf, npz, NPZ_PART[part], arrays[NPZ_PART[part]], num_class) for part in PARTS}
        total = sum(a.x.shape[0] for a in arrays.values())
        arguments = arguments if arguments is not None else {"npz": str(npz)}
        with (
            RunOutputs(folder.parent, purpose="ctrgcn_npz import", tool=TOOL, arguments=arguments) as out,
            tqdm(total=total, unit="clip", desc="import", disable=not progress) as bar,
        ):
            for part in PARTS:
                x = arrays[NPZ_PART[part]].x
                row_shape = (NUM_COORDINATES, x.shape[1], NUM_JOINTS, NUM_PERSONS)
                writer = out.add_part(part, folder.name, part, x.shape[0], row_shape=row_shape)
                import_part(zf, npz, writer, arrays[NPZ_PART[part]], metas[part], bar)
            out.commit()  # the six files and the folder's manifest.json, renamed into place together
    return {part: len(meta.names) for part, meta in metas.items()}


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Prepared split folders <-> CTR-GCN-style .npz files (x_train (N, 300, 150), one-hot y_train, "
        "x_test, y_test), as read by CTR-GCN, InfoGCN, MAMP and MacDiff."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a prepared split as one .npz")
    imp = sub.add_parser("import", help="write an .npz as a prepared split folder (with manifest.json)")
    for p in (export, imp):
        cli.add_split_folder_args(p)
        p.add_argument(
            "--benchmark",
            required=True,
            help="xsub, xview (ntu60, pku1), xsetup (ntu120), or a protocol name such as cross_subject",
        )
        cli.add_progress_arg(p)
    export.add_argument("--out", required=True, help="the .npz to write, e.g. NTU60_CS.npz")
    export.add_argument(
        "--keep-padding",
        action="store_true",
        help="write the stored frames after each clip's end (repeats of the clip) instead of zeros",
    )
    export.add_argument("--compress", action="store_true", help="deflate the members (as np.savez_compressed)")
    imp.add_argument("--npz", required=True, help="the .npz to read")
    return parser


def run(args: argparse.Namespace) -> list[str]:
    """Carry out a parsed command; returns the summary line."""
    folder = split_folder(args.data_root, args.dataset, args.benchmark)
    num_class = DATASETS[args.dataset]["num_class"]
    if args.command == "export":
        counts = export_npz(
            folder, args.out, num_class, keep_padding=args.keep_padding, compress=args.compress, progress=args.progress
        )
        return [f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    arguments = {"npz": str(args.npz), "dataset": args.dataset, "benchmark": args.benchmark}
    counts = import_npz(args.npz, folder, num_class, dataset=args.dataset, progress=args.progress, arguments=arguments)
    return [f"{folder}: " + ", ".join(f"{k} {v}" for k, v in counts.items())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return cli.run_tool(parser.prog, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
