"""CTR-GCN-style ``.npz`` files (``NTU60_CS.npz`` ...) to and from our prepared split folders.

    python data_gen/ctrgcn_npz.py export --data-root ROOT --dataset ntu60 --benchmark xsub --out NTU60_CS.npz
        [--keep-padding] [--compress] [--no-progress]
    python data_gen/ctrgcn_npz.py import --npz NTU60_CS.npz --dataset ntu60 --benchmark xsub --data-root ROOT

The file CTR-GCN's ``data/ntu/seq_transformation.py`` writes and the feeders of CTR-GCN, InfoGCN, MAMP and
MacDiff read: ``x_train`` / ``x_test`` float32 (N, T=300, 150), ``y_train`` / ``y_test`` one-hot (N,
num_class; wider rows are accepted on import when every class is below num_class). Value ``m * 75 + v * 3
+ c`` of frame ``t`` is our ``data[n, c, t, v, m]``. Export adds ``names_*`` and ``num_frame_*``, which
those feeders ignore and import uses to restore our names and frame counts; our val part is their
``test``. Export writes zeros after each clip's ``num_frame`` frames (those feeders take the non-zero
frames as the clip; ``--keep-padding`` keeps our repeated padding, so that export then import gives every
file back byte for byte); a file without the extra arrays gets names ``train_<i>`` and frame counts from
its last non-zero frame.

Both directions stream blocks of rows, so memory stays at a few blocks whatever the file declares: import
checks every header against the layout (at most 300 frames a clip, names of at most 256 characters, the
member's size) and reads the labels, names and frame counts before any clip, then streams the clips
through ``data_gen.driver`` (the commit of every converter); export writes through
``common.io.atomic_write``.
"""

from __future__ import annotations

import argparse
import functools
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

from common.constants import DATASETS, NUM_COORDINATES, NUM_FRAMES, NUM_JOINTS, NUM_PERSONS, PARTS, VALUES_PER_FRAME
from common.io import UsageError, atomic_write, check_output_file
from common.split_folder import open_split, part_paths, read_npy_header
from data_gen import cli
from data_gen.driver import Job, Plan, Sample, check_input, run
from data_gen.writer import DataGenError

NPZ_PART = {"train": "train", "val": "test"}  # our part -> the npz's
TOOL = "data_gen/ctrgcn_npz.py import"
ROWS_PER_BLOCK = 128  # 128 clips of 300 frames: 23 MB per block
MAX_NAME = 256  # characters of a sample name


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
        row_shape, itemsize = self.data.shape[1:], self.data.dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.header_length + start * int(np.prod(row_shape)) * itemsize)
            block = np.fromfile(f, dtype=self.data.dtype, count=(end - start) * int(np.prod(row_shape)))
        return block.reshape(end - start, *row_shape)


def benchmark_folder(dataset: str, benchmark: str) -> str:
    """The folder name of ``benchmark`` (a folder name such as xsub or a protocol such as cross_subject)."""
    protocols = DATASETS[dataset]["protocols"]
    folders = {**{f: f for f in protocols.values()}, **protocols, "xset": "xsetup"}  # xset: pyskl's name
    if folders.get(benchmark) not in protocols.values():
        raise DataGenError(f"{dataset} has no benchmark {benchmark!r}; expected one of {', '.join(protocols.values())}")
    return folders[benchmark]


def split_folder(data_root: str | os.PathLike, dataset: str, benchmark: str) -> Path:
    """``<data_root>/<dataset folder>/<benchmark folder>``, where the feeders read the split."""
    return Path(data_root) / DATASETS[dataset]["folder"] / benchmark_folder(dataset, benchmark)


def open_part(folder: str | os.PathLike, part: str) -> Part:
    """Open and check one part of a split folder (``common.split_folder.open_split``)."""
    paths = part_paths(Path(folder), part)
    split = open_split(paths, need_labels=True)
    offset = read_npy_header(paths.data).offset
    return Part(split.data, split.names, split.labels, split.num_frames, paths.data, paths.label, offset)


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
    last = block.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0).astype(np.int64)


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The bytes of a C-order ``.npy`` header (version 1.0 when it fits, as ``np.save`` writes)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # header over 64 KiB
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _blocks(n: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    size = size or ROWS_PER_BLOCK  # read at call time
    for start in range(0, n, size):
        yield start, min(start + size, n)


# -- export ---------------------------------------------------------------------------------------


def _write_member(zf: zipfile.ZipFile, key: str, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable) -> None:
    # force_zip64: the size is not known when the member is opened, and x can exceed 2 GiB.
    with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
        member.write(npy_header(dtype, shape))
        for block in blocks:
            member.write(memoryview(np.ascontiguousarray(block, dtype=dtype)).cast("B"))


def _export_rows(part: Part, keep_padding: bool, bar: tqdm) -> Iterator[np.ndarray]:
    """The part's clips as CTR-GCN rows, one block at a time; non-finite values stop the export."""
    for start, end in _blocks(len(part.names)):
        block = part.read_rows(start, end).astype(np.float32, copy=False)
        bad = ~np.isfinite(block).reshape(end - start, -1).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise DataGenError(f"{part.path}: sample {row} ({part.names[row]}) holds NaN or infinite values")
        yield to_ctrgcn_rows(block if keep_padding else zero_after(block, part.num_frame[start:end]))
        bar.update(end - start)


def export_npz(folder: Path, out: Path, num_class: int, keep_padding: bool, compress: bool, progress: bool) -> dict:
    """Write the split in ``folder`` as a CTR-GCN ``.npz`` at ``out`` (replaced only once complete)."""
    parts = {part: open_part(folder, part) for part in PARTS}
    for part in parts.values():
        if part.labels.size and part.labels.max() >= num_class:
            raise DataGenError(
                f"{part.label_path}: label {part.labels.max()} is outside 0..{num_class - 1} (--dataset)"
            )

    def write(f: BinaryIO) -> None:
        total = sum(len(p.names) for p in parts.values())
        compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with (
            tqdm(total=total, unit="clip", desc="export", disable=not progress) as bar,
            zipfile.ZipFile(f, "w", compression=compression, allowZip64=True) as zf,
        ):
            for name, part in parts.items():
                key, (n, _, t, _, _) = NPZ_PART[name], part.data.shape
                _write_member(
                    zf, f"x_{key}", np.float32, (n, t, VALUES_PER_FRAME), _export_rows(part, keep_padding, bar)
                )
                one_hot = (np.eye(num_class, dtype=np.float32)[part.labels[s:e]] for s, e in _blocks(n, 1 << 14))
                _write_member(zf, f"y_{key}", np.float32, (n, num_class), one_hot)
                names = np.array(part.names, dtype=str) if part.names else np.zeros(0, dtype="<U1")
                _write_member(zf, f"names_{key}", names.dtype, names.shape, [names])
                _write_member(zf, f"num_frame_{key}", np.int64, part.num_frame.shape, [part.num_frame])

    atomic_write(out, write)
    return {NPZ_PART[name]: len(part.names) for name, part in parts.items()}


# -- import ---------------------------------------------------------------------------------------


@dataclass
class Member:
    """One array of an .npz archive, from its header."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _member_header(zf: zipfile.ZipFile, npz: Path, key: str) -> Member:
    """The header of ``key``, which must be C-order numbers or strings and as long as the member."""
    try:
        with zf.open(f"{key}.npy") as f:
            header = read_npy_header(f)
    except UsageError as error:  # the header reader's own message
        raise DataGenError(f"{npz}: {key}: {error}") from None
    except _ZIP_ERRORS as error:
        raise DataGenError(f"{npz}: {key}: unreadable archive member ({error})") from None
    if header.fortran_order or header.dtype.hasobject:
        raise DataGenError(f"{npz}: {key} is not a C-order array of numbers or strings (pickled objects are not read)")
    size = zf.getinfo(f"{key}.npy").file_size
    if size != header.file_size:
        raise DataGenError(
            f"{npz}: {key}: its header declares shape {header.shape} {header.dtype} ({header.file_size:,} bytes) "
            f"but the member holds {size:,} bytes"
        )
    return Member(key, header.shape, header.dtype, header.offset)


def _iter_rows(zf: zipfile.ZipFile, npz: Path, member: Member, rows: int | None = None) -> Iterator[np.ndarray]:
    """Row blocks of a member, read from the (decompressing) member stream."""
    row_bytes = member.dtype.itemsize * int(np.prod(member.shape[1:], dtype=np.int64))
    try:
        with zf.open(f"{member.key}.npy") as f:
            f.read(member.offset)
            for start, end in _blocks(member.shape[0], rows):
                buffer = f.read((end - start) * row_bytes)
                if len(buffer) < (end - start) * row_bytes:
                    raise DataGenError(
                        f"{npz}: {member.key} ends after {start + len(buffer) // max(row_bytes, 1)} rows"
                    )
                yield np.frombuffer(buffer, dtype=member.dtype).reshape(end - start, *member.shape[1:])
    except _ZIP_ERRORS as error:
        raise DataGenError(f"{npz}: {member.key}: unreadable archive member ({error})") from None


def _check_part(npz: Path, members: dict[str, Member], key: str, num_class: int, dataset: str) -> dict[str, Member]:
    """The arrays of one npz part, their headers checked against the layout (x, y, and names, num_frame if there)."""
    x, y = members[f"x_{key}"], members[f"y_{key}"]
    if len(x.shape) != 3 or x.shape[2] != VALUES_PER_FRAME or not 1 <= x.shape[1] <= NUM_FRAMES or x.dtype.kind != "f":
        raise DataGenError(
            f"{npz}: x_{key} has shape {x.shape} dtype {x.dtype}, expected floats (N, T, {VALUES_PER_FRAME}) with T at "
            f"most {NUM_FRAMES}: per frame {NUM_PERSONS} persons x {NUM_JOINTS} joints x xyz"
        )
    # Wider is accepted (MAMP's PKU-MMD phase 2 files are 51 wide for 41 classes); the labels are checked.
    if len(y.shape) != 2 or y.shape[0] != x.shape[0] or y.shape[1] < num_class or y.dtype.kind not in "fiub":
        raise DataGenError(
            f"{npz}: y_{key} has shape {y.shape} dtype {y.dtype}, expected ({x.shape[0]}, {num_class}):"
            f" one-hot over the {num_class} classes of {dataset}, one row per sample of x_{key}"
        )
    arrays = {"x": x, "y": y}
    for extra, kinds, what in (
        ("names", "US", f"strings of at most {MAX_NAME} characters"),
        ("num_frame", "iu", "integers"),
    ):
        member = members.get(f"{extra}_{key}")
        if member is None:
            continue
        width = member.dtype.itemsize // (4 if member.dtype.kind == "U" else 1)
        if member.shape != (x.shape[0],) or member.dtype.kind not in kinds or (extra == "names" and width > MAX_NAME):
            raise DataGenError(
                f"{npz}: {member.key} has shape {member.shape} dtype {member.dtype}, expected ({x.shape[0]},) {what}"
            )
        arrays[extra] = member
    return arrays


def check_npz(npz: Path, zf: zipfile.ZipFile, num_class: int, dataset: str) -> dict[str, dict[str, Member]]:
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
    parts = {key: _check_part(npz, members, key, num_class, dataset) for key in NPZ_PART.values()}
    lengths = [parts[key]["x"].shape[1] for key in NPZ_PART.values()]
    if lengths[0] != lengths[1]:
        raise DataGenError(
            f"{npz}: x_train holds clips of {lengths[0]} frames, x_test of {lengths[1]}; expected one length"
        )
    return parts


def read_one_hot(zf: zipfile.ZipFile, npz: Path, member: Member, num_class: int) -> np.ndarray:
    """(N,) int64 labels of a one-hot member; DataGenError naming the first row that is not one-hot or
    whose class is ``num_class`` or more."""
    labels = [np.zeros(0, dtype=np.int64)]
    for block in _iter_rows(zf, npz, member, rows=1 << 14):
        row = sum(len(b) for b in labels)
        ones = block == 1
        good = (ones.sum(axis=1) == 1) & (ones | (block == 0)).all(axis=1)
        if not good.all():
            bad = int(np.argmin(good))
            raise DataGenError(
                f"{npz}: {member.key} row {row + bad} is not one-hot (expected a single 1 and 0 elsewhere, "
                f"found values {np.unique(block[bad])[:4].tolist()})"
            )
        labels.append(np.argmax(ones, axis=1).astype(np.int64))
        if labels[-1].max(initial=0) >= num_class:
            bad = int(np.argmax(labels[-1] >= num_class))
            raise DataGenError(
                f"{npz}: {member.key} row {row + bad} is class {labels[-1][bad]}, "
                f"outside the {num_class} classes (0..{num_class - 1}) of the chosen --dataset"
            )
    return np.concatenate(labels)


def _read_small(zf: zipfile.ZipFile, npz: Path, member: Member) -> np.ndarray:
    blocks = list(_iter_rows(zf, npz, member, rows=1 << 16))
    return np.concatenate(blocks) if blocks else np.zeros(member.shape, dtype=member.dtype)


def read_part_meta(zf: zipfile.ZipFile, npz: Path, key: str, arrays: dict[str, Member], num_class: int) -> tuple:
    """(names, labels, frame counts or None) of one npz part, checked; names from the extra array or
    ``<key>_<i>``; frame counts None when they must come from the clips."""
    labels = read_one_hot(zf, npz, arrays["y"], num_class)
    n, t = arrays["x"].shape[:2]
    names = [f"{key}_{i}" for i in range(n)]
    if "names" in arrays:
        names = [str(v) for v in _read_small(zf, npz, arrays["names"]).astype(str)]
    frames = _read_small(zf, npz, arrays["num_frame"]).astype(np.int64) if "num_frame" in arrays else None
    if frames is not None and frames.size and (frames.min() < 0 or frames.max() > t):
        raise DataGenError(
            f"{npz}: num_frame_{key} must lie in [0, {t}] (T of x_{key}), found [{frames.min()}, {frames.max()}]"
        )
    return names, labels, frames


def _import_block(npz: Path, metas: dict, streams: dict, payload: tuple[str, int, int]) -> list[Sample]:
    """The clips of rows [start, end) of one part (the next block of its stream), finite as float32."""
    part, start, end = payload
    names, labels, frames = metas[part]
    with np.errstate(over="ignore", invalid="ignore"):
        rows = next(streams[part]).astype(np.float32)
    bad = ~np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
    if bad.any():
        raise DataGenError(
            f"{npz}: x_{NPZ_PART[part]} row {start + int(np.argmax(bad))} holds values that are not finite as "
            "float32 (NaN, infinite, or beyond 3.4e38 in magnitude)"
        )
    counts = last_nonzero_frame(rows) if frames is None else frames[start:end]
    clips = from_ctrgcn_rows(rows)
    return [Sample(names[start + j], int(labels[start + j]), clips[j], int(counts[j]), 0) for j in range(len(rows))]


def import_npz(npz: str | os.PathLike, folder: Path, dataset: str, progress: bool, arguments: dict) -> dict[str, int]:
    """Write the CTR-GCN ``npz`` as our split files into ``folder``; samples per part. Every header, the
    labels, names and frame counts are checked before a clip is read; the clips then stream through
    the driver. DataGenError (one line naming the file, the array and the row) for bad input."""
    npz, num_class = check_input(npz, "--npz"), DATASETS[dataset]["num_class"]
    try:
        zf = zipfile.ZipFile(npz)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataGenError(f"{npz}: not an .npz (zip) archive ({error})") from None
    with zf:
        arrays = check_npz(npz, zf, num_class, dataset)
        metas = {part: read_part_meta(zf, npz, key, arrays[key], num_class) for part, key in NPZ_PART.items()}
        seen: dict[str, str] = {}
        for part, key in NPZ_PART.items():
            for i, name in enumerate(metas[part][0]):
                if seen.setdefault(name, f"names_{key} row {i}") != f"names_{key} row {i}":
                    raise DataGenError(f"{npz}: names_{key} row {i} is {name!r}, as {seen[name]} is; names must differ")
        streams = {part: _iter_rows(zf, npz, arrays[key]["x"]) for part, key in NPZ_PART.items()}
        blocks = [(part, s, e) for part, key in NPZ_PART.items() for s, e in _blocks(arrays[key]["x"].shape[0])]
        jobs = [Job(f"x_{NPZ_PART[p]}", ((folder.name, p),), e - s, (p, s, e)) for p, s, e in blocks]
        work = functools.partial(_import_block, npz, metas, streams)
        shape = (NUM_COORDINATES, arrays["train"]["x"].shape[1], NUM_JOINTS, NUM_PERSONS)
        parts = [(folder.name, part) for part in PARTS]
        summary = run(
            Plan(folder.parent, TOOL, arguments, str(npz), parts, jobs, work, row_shape=shape), progress=progress
        )
    return summary.written[folder.name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Prepared split folders <-> CTR-GCN-style .npz files.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a prepared split as one .npz")
    imp = sub.add_parser("import", help="write an .npz as a prepared split folder (with manifest.json)")
    for p in (export, imp):
        cli.add_split_folder_args(p)
        p.add_argument("--benchmark", required=True, help="xsub, xview, xsetup, or a protocol name")
        cli.add_progress_arg(p)
    export.add_argument("--out", required=True, help="the .npz to write, e.g. NTU60_CS.npz")
    export.add_argument("--keep-padding", action="store_true", help="the frames after a clip's end as stored")
    export.add_argument("--compress", action="store_true", help="deflate the members (as np.savez_compressed)")
    imp.add_argument("--npz", required=True, help="the .npz to read")
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    folder = split_folder(args.data_root, args.dataset, args.benchmark)
    if args.command == "export":
        out = check_output_file(args.out, "--out")
        num_class = DATASETS[args.dataset]["num_class"]
        counts = export_npz(folder, out, num_class, args.keep_padding, args.compress, args.progress)
    else:
        arguments = {"npz": str(args.npz), "dataset": args.dataset, "benchmark": args.benchmark}
        out, counts = folder, import_npz(args.npz, folder, args.dataset, args.progress, arguments)
    return [f"{out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
