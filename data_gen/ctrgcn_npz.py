"""CTR-GCN-style ``.npz`` files (``NTU60_CS.npz`` ...) to and from our prepared split folders.

    python data_gen/ctrgcn_npz.py export --data-root ROOT --dataset ntu60 --benchmark xsub --out NTU60_CS.npz
    python data_gen/ctrgcn_npz.py import --npz NTU60_CS.npz --dataset ntu60 --benchmark xsub --data-root ROOT

What CTR-GCN's ``seq_transformation.py`` writes and CTR-GCN, InfoGCN, MAMP and MacDiff read: ``x_train`` /
``x_test`` float32 (N, T=300, 150), value ``m * 75 + v * 3 + c`` of frame ``t`` = our ``data[n, c, t, v,
m]``; ``y_train`` / ``y_test`` one-hot (N, at least num_class). Export adds ``names_*`` and ``num_frame_*``
(ignored by those readers, used by import) and writes zeros after each clip's frames (those readers take
the non-zero frames as the clip; ``--keep-padding`` keeps ours, so export then import gives every file
back byte for byte). Both directions stream blocks of rows: import checks every header against the layout
first (at most 300 frames a clip, names of at most 256 characters, the member's size), then the labels,
names and frame counts, then streams the clips through ``data_gen.driver``.
"""

from __future__ import annotations

import argparse
import functools
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
    NUM_FRAMES,
    NUM_JOINTS,
    NUM_PERSONS,
    PARTS,
    PYSKL_FOLDERS,
    VALUES_PER_FRAME,
)
from common.io import UsageError, atomic_write, check_output_file
from common.split_folder import NpyHeader, open_split, part_paths, read_npy_header
from data_gen import cli
from data_gen.driver import Job, Plan, Sample, check_input, check_out_folder, run
from data_gen.writer import DataGenError, npy_header

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
        shape, dtype = self.data.shape[1:], self.data.dtype
        offset = self.header_length + start * int(np.prod(shape)) * dtype.itemsize
        return np.fromfile(self.path, dtype, (end - start) * int(np.prod(shape)), offset=offset).reshape(-1, *shape)


def benchmark_folder(dataset: str, benchmark: str) -> str:
    """The folder name of ``benchmark`` (a folder name such as xsub or a protocol such as cross_subject)."""
    protocols = DATASETS[dataset]["protocols"]
    folders = {**{f: f for f in protocols.values()}, **protocols, **PYSKL_FOLDERS}
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
    return Part(split.data, split.names, split.labels, split.num_frames, paths.data, paths.label, split.header.offset)


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


def _blocks(n: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    size = size or ROWS_PER_BLOCK  # read at call time
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _write_member(zf: zipfile.ZipFile, key: str, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable) -> None:
    # force_zip64: the size is not known when the member is opened, and x can exceed 2 GiB.
    with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
        member.write(npy_header(shape, dtype))
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
            outside = f"is outside 0..{num_class - 1} (--dataset)"
            raise DataGenError(f"{part.label_path}: label {part.labels.max()} {outside}")

    def write(f: BinaryIO) -> None:
        total = sum(len(p.names) for p in parts.values())
        compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with (
            tqdm(total=total, unit="clip", desc="export", disable=not progress) as bar,
            zipfile.ZipFile(f, "w", compression=compression, allowZip64=True) as zf,
        ):
            for name, part in parts.items():
                key, (n, _, t, _, _) = NPZ_PART[name], part.data.shape
                rows = _export_rows(part, keep_padding, bar)
                _write_member(zf, f"x_{key}", np.float32, (n, t, VALUES_PER_FRAME), rows)
                one_hot = (np.eye(num_class, dtype=np.float32)[part.labels[s:e]] for s, e in _blocks(n, 1 << 14))
                _write_member(zf, f"y_{key}", np.float32, (n, num_class), one_hot)
                names = np.array(part.names, dtype=str) if part.names else np.zeros(0, dtype="<U1")
                _write_member(zf, f"names_{key}", names.dtype, names.shape, [names])
                _write_member(zf, f"num_frame_{key}", np.int64, part.num_frame.shape, [part.num_frame])

    atomic_write(out, write)
    return {NPZ_PART[name]: len(part.names) for name, part in parts.items()}


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class _Npz:
    """An ``.npz`` being imported: the headers of its members, then their rows in blocks."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_input(path, "--npz")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise DataGenError(f"{self.path}: not an .npz (zip) archive ({error})") from None
        self.headers: dict[str, NpyHeader] = {}

    def _error(self, key: str, error: Exception) -> DataGenError:
        what = error if isinstance(error, UsageError) else f"unreadable archive member ({error})"
        return DataGenError(f"{self.path}: {key}: {what}")

    def header(self, key: str) -> NpyHeader:
        """The header of ``key``: C-order numbers or strings, exactly as long as the member."""
        try:
            with self.zip.open(f"{key}.npy") as f:
                header = read_npy_header(f)
        except (UsageError, *_ZIP_ERRORS) as error:
            raise self._error(key, error) from None
        if header.fortran_order or header.dtype.hasobject:
            what = "is not a C-order array of numbers or strings (objects are not read)"
            raise DataGenError(f"{self.path}: {key} {what}")
        if (size := self.zip.getinfo(f"{key}.npy").file_size) != header.file_size:
            declares = f"its header declares shape {header.shape} {header.dtype} ({header.file_size:,} bytes)"
            raise DataGenError(f"{self.path}: {key}: {declares} but the member holds {size:,} bytes")
        return header

    def rows(self, key: str, size: int | None = None) -> Iterator[np.ndarray]:
        """Blocks of rows of ``key``, read from the (decompressing) member stream."""
        shape, dtype, _, offset = self.headers[key]
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        try:
            with self.zip.open(f"{key}.npy") as f:
                f.read(offset)
                for start, end in _blocks(shape[0], size):
                    buffer = f.read((end - start) * row_bytes)
                    if len(buffer) < (end - start) * row_bytes:
                        raise DataGenError(f"{self.path}: {key} ends after {start + len(buffer) // row_bytes} rows")
                    yield np.frombuffer(buffer, dtype=dtype).reshape(end - start, *shape[1:])
        except _ZIP_ERRORS as error:
            raise self._error(key, error) from None

    def whole(self, key: str) -> np.ndarray:
        shape, dtype = self.headers[key][:2]
        return np.concatenate([np.zeros((0, *shape[1:]), dtype), *self.rows(key, 1 << 16)])

    def check(self, num_class: int, dataset: str) -> None:
        """Every header against the CTR-GCN layout, before any array is read."""
        keys = [name[:-4] for name in self.zip.namelist() if name.endswith(".npy")]
        required = [f"{a}_{k}" for k in NPZ_PART.values() for a in ("x", "y")]
        if missing := [k for k in required if k not in keys]:
            holds = f"a CTR-GCN npz holds {', '.join(required)}; found {', '.join(keys) or 'none'}"
            raise DataGenError(f"{self.path}: missing array {missing[0]!r} ({holds})")
        self.headers = {k: self.header(k) for k in keys if k in required or k.startswith(("names_", "num_frame_"))}
        for key in NPZ_PART.values():
            x, y = self.headers[f"x_{key}"], self.headers[f"y_{key}"]
            good = len(x.shape) == 3 and x.shape[2] == VALUES_PER_FRAME and 1 <= x.shape[1] <= NUM_FRAMES
            if not good or x.dtype.kind != "f":
                expected = f"floats (N, T, {VALUES_PER_FRAME}) with T at most {NUM_FRAMES}: 2 persons x 25 joints x xyz"
                raise DataGenError(f"{self.path}: x_{key} has shape {x.shape} dtype {x.dtype}, expected {expected}")
            n = x.shape[0]
            # Wider is accepted (MAMP's PKU-MMD phase 2 files are 51 wide for 41 classes); the labels are checked.
            if len(y.shape) != 2 or y.shape[0] != n or y.shape[1] < num_class or y.dtype.kind not in "fiub":
                expected = f"({n}, {num_class}): one-hot over the {num_class} classes of {dataset}, a row per sample"
                raise DataGenError(f"{self.path}: y_{key} has shape {y.shape} dtype {y.dtype}, expected {expected}")
            extras = {"names": ("US", f"strings of at most {MAX_NAME} characters"), "num_frame": ("iu", "integers")}
            for extra, (kinds, what) in extras.items():
                shape, dtype = self.headers[f"{extra}_{key}"][:2] if f"{extra}_{key}" in self.headers else ((n,), None)
                if dtype is not None and (shape != (n,) or dtype.kind not in kinds or dtype.itemsize > 4 * MAX_NAME):
                    got = f"has shape {shape} dtype {dtype}, expected ({n},) {what}"
                    raise DataGenError(f"{self.path}: {extra}_{key} {got}")
        if len({self.headers[f"x_{key}"].shape[1] for key in NPZ_PART.values()}) > 1:
            raise DataGenError(f"{self.path}: x_train and x_test hold clips of different lengths; expected one")

    def labels(self, key: str, num_class: int) -> np.ndarray:
        """(N,) int64 classes of a one-hot member; DataGenError naming the first row that is not one-hot or
        whose class is ``num_class`` or more."""
        labels = [np.zeros(0, dtype=np.int64)]
        for block in self.rows(key, 1 << 14):
            row, ones = sum(map(len, labels)), block == 1
            good = (ones.sum(axis=1) == 1) & (ones | (block == 0)).all(axis=1)
            if not good.all():
                bad = int(np.argmin(good))
                found = f"expected a single 1 and 0 elsewhere, found values {np.unique(block[bad])[:4].tolist()}"
                raise DataGenError(f"{self.path}: {key} row {row + bad} is not one-hot ({found})")
            labels.append(np.argmax(ones, axis=1).astype(np.int64))
            if labels[-1].max(initial=0) >= num_class:
                bad = int(np.argmax(labels[-1] >= num_class))
                outside = f"outside the {num_class} classes (0..{num_class - 1}) of the chosen --dataset"
                raise DataGenError(f"{self.path}: {key} row {row + bad} is class {labels[-1][bad]}, {outside}")
        return np.concatenate(labels)

    def meta(self, key: str, num_class: int) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """(names, labels, frame counts or None: taken from the clips) of one npz part, checked."""
        n, t = self.headers[f"x_{key}"].shape[:2]
        names = [f"{key}_{i}" for i in range(n)]
        if f"names_{key}" in self.headers:
            names = [str(v) for v in self.whole(f"names_{key}").astype(str)]
        frames = self.whole(f"num_frame_{key}").astype(np.int64) if f"num_frame_{key}" in self.headers else None
        if frames is not None and frames.size and (frames.min() < 0 or frames.max() > t):
            found = f"[{frames.min()}, {frames.max()}]"
            raise DataGenError(f"{self.path}: num_frame_{key} must lie in [0, {t}] (T of x_{key}), found {found}")
        return names, self.labels(f"y_{key}", num_class), frames


def _import_block(npz: _Npz, metas: dict, streams: dict, payload: tuple[str, int, int]) -> list[Sample]:
    """The clips of rows [start, end) of one part (the next block of its stream), finite as float32."""
    part, start, end = payload
    names, labels, frames = metas[part]
    with np.errstate(over="ignore", invalid="ignore"):
        rows = next(streams[part]).astype(np.float32, copy=False)
    bad = ~np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
    if bad.any():
        values = "holds values that are not finite as float32 (NaN, infinite, or beyond 3.4e38 in magnitude)"
        raise DataGenError(f"{npz.path}: x_{NPZ_PART[part]} row {start + int(np.argmax(bad))} {values}")
    counts = last_nonzero_frame(rows) if frames is None else frames[start:end]
    clips = from_ctrgcn_rows(rows)
    return [Sample(names[start + j], int(labels[start + j]), clips[j], int(counts[j]), 0) for j in range(len(rows))]


def import_npz(npz: _Npz, folder: Path, dataset: str, progress: bool, arguments: dict) -> dict[str, int]:
    """Write the CTR-GCN ``npz`` as our split files into ``folder`` (samples per part): the headers, labels,
    names and frame counts are checked before a clip is read; the clips then stream through the driver."""
    num_class = DATASETS[dataset]["num_class"]
    with npz.zip:
        npz.check(num_class, dataset)
        metas = {part: npz.meta(key, num_class) for part, key in NPZ_PART.items()}
        seen: dict[str, str] = {}
        for part, key in NPZ_PART.items():
            for i, name in enumerate(metas[part][0]):
                if (first := seen.setdefault(name, f"names_{key} row {i}")) != f"names_{key} row {i}":
                    raise DataGenError(f"{npz.path}: names_{key} row {i} is {name!r}, as {first} is; names must differ")
        streams = {part: npz.rows(f"x_{key}") for part, key in NPZ_PART.items()}
        blocks = [(p, s, e) for p, key in NPZ_PART.items() for s, e in _blocks(npz.headers[f"x_{key}"].shape[0])]
        jobs = [Job(f"x_{NPZ_PART[p]}", ((folder.name, p),), e - s, (p, s, e)) for p, s, e in blocks]
        work = functools.partial(_import_block, npz, metas, streams)
        row_shape = (NUM_COORDINATES, npz.headers["x_train"].shape[1], NUM_JOINTS, NUM_PERSONS)
        parts = [(folder.name, p) for p in PARTS]
        steps = Plan(folder.parent, TOOL, arguments, str(npz.path), parts, jobs, work, row_shape=row_shape)
        return run(steps, progress=progress).written[folder.name]


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
        check_out_folder(folder, "--data-root")
        out, counts = folder, import_npz(_Npz(args.npz), folder, args.dataset, args.progress, arguments)
    return [f"{out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
