"""NTU RGB+D 60/120 raw ``.skeleton`` files -> the training tensors of every benchmark.

    python data_gen/ntu_gendata.py --data-path RAW_DIR --dataset ntu60 [--out-folder OUT]
        [--ignored-sample-path LIST] [--benchmarks xsub xview] [--workers N] [--skip-bad]

Writes, for each benchmark B and part in (train, val), into OUT/B/:
  {part}_data_joint.npy  float32 (N, 3, 300, 25, 2), normalised as the 2s-AGCN preprocessing does
  {part}_label.pkl       pickle of (sample names with '.skeleton', labels = action number - 1)
  {part}_num_frame.npy   int64 (N,), the frame count of each file (at most 300)
Samples are in sorted name order. Each file is read and normalised once for all benchmarks, in
``--workers`` processes; arrays go to disk in chunks through ``numpy.lib.format.open_memmap``, so
memory stays flat whatever the dataset size. Every output is written under a ``.partial`` name and
renamed into place only once all of them are complete.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from data_gen.normalize import normalize_sample, select_bodies
from data_gen.parallel import imap_ordered
from data_gen.ntu_splits import (
    DATASET_BENCHMARKS,
    DATASET_NUM_ACTIONS,
    DEFAULT_IGNORED_LISTS,
    DEFAULT_OUT_FOLDERS,
    SKELETON_SUFFIX,
    is_training,
    parse_sample_name,
    read_ignored_list,
    strip_suffix,
)
from data_gen.skeleton_reader import MAX_BODIES, NUM_JOINTS, SkeletonFormatError, read_skeleton
from data_gen.writer import DataGenError

MAX_FRAMES = 300
NUM_PERSONS = 2
PARTS = ("train", "val")
PARTIAL_SUFFIX = ".partial"
SKIPPED_LIST = "skipped_samples.txt"
SAMPLE_SHAPE = (3, MAX_FRAMES, NUM_JOINTS, NUM_PERSONS)


@dataclass
class PreparedSample:
    """One file, read and normalised."""

    data: np.ndarray  # (3, 300, 25, 2) float32
    num_frame: int  # frames kept (the file's count, at most MAX_FRAMES)
    file_frames: int  # the file's frame count
    has_body: bool


def prepare_sample(path: str | Path, max_frames: int = MAX_FRAMES) -> PreparedSample:
    """Read one ``.skeleton`` file, keep its two most energetic bodies and normalise: the data of one sample."""
    raw = read_skeleton(path, max_bodies=MAX_BODIES, num_joints=NUM_JOINTS)
    # Stored as float32 before normalising, as the reference does (selection uses the float64 values).
    selected = select_bodies(raw.bodies, num_persons=NUM_PERSONS, max_frames=max_frames)  # (C, T, V, M)
    has_body = bool(selected.any())
    return PreparedSample(normalize_sample(selected), min(raw.num_frames, max_frames), raw.num_frames, has_body)


def _prepare_job(path: str) -> tuple[str, PreparedSample | str]:
    """Worker entry point: ("ok", sample) or ("bad", message); a bad file never kills the pool."""
    try:
        return "ok", prepare_sample(path)
    except SkeletonFormatError as error:
        return "bad", str(error)
    except (OSError, UnicodeError) as error:
        return "bad", f"{path}: cannot be read ({error})"


def _prepared(paths: Sequence[str], workers: int, window: int = 32) -> Iterator[tuple[str, PreparedSample | str]]:
    """Results of ``_prepare_job`` in input order, from ``workers`` processes (or in-process for 1).

    At most ``window`` files per worker are in flight or waiting to be consumed: without that bound,
    fast workers would pile up 180 kB results faster than the writer takes them.
    """
    return imap_ordered(_prepare_job, paths, workers, chunksize=4, window=window)


class PartWriter:
    """Collects one (benchmark, part) output: rows written in order into a memory-mapped .npy.

    The map is dropped every ``chunk`` rows, and the written pages with it: the resident memory of a
    writer stays at ``chunk`` rows (64 x 180 kB) whatever the dataset size.
    """

    def __init__(self, folder: Path, part: str, capacity: int, chunk: int = 64):
        self.folder = folder
        self.part = part
        self.capacity = capacity
        self.chunk = chunk
        self.data_path = folder / f"{part}_data_joint.npy"
        self.partial_data = _partial(self.data_path)
        # Creates the (sparse) file at full size; nothing is held in memory.
        self._rows: np.memmap | None = open_memmap(self.partial_data, mode="w+", dtype=np.float32,
                                                    shape=(capacity, *SAMPLE_SHAPE))
        self.written = 0
        self.names: list[str] = []
        self.labels: list[int] = []
        self.num_frames: list[int] = []

    def append(self, name: str, label: int, sample: PreparedSample) -> None:
        if self._rows is None:
            self._rows = open_memmap(self.partial_data, mode="r+")
        self._rows[self.written] = sample.data
        self.written += 1
        self.names.append(name)
        self.labels.append(label)
        self.num_frames.append(sample.num_frame)
        if self.written % self.chunk == 0:
            self._unmap()

    def _unmap(self) -> None:
        # No msync: the kernel writes the pages back; unmapping takes them out of this process's memory.
        self._rows = None

    def finish(self) -> list[tuple[Path, Path]]:
        """Write everything under partial names; returns the (partial, final) pairs to rename."""
        self._unmap()
        if self.written < self.capacity:  # files were skipped: copy the rows into a file of the right size
            self._shrink()
        frames_path = self.folder / f"{self.part}_num_frame.npy"
        frames = open_memmap(_partial(frames_path), mode="w+", dtype=np.int64, shape=(self.written,))
        frames[:] = self.num_frames
        frames.flush()
        del frames
        label_path = self.folder / f"{self.part}_label.pkl"
        with open(_partial(label_path), "wb") as f:
            pickle.dump((list(self.names), list(self.labels)), f)
        return [(self.partial_data, self.data_path), (_partial(frames_path), frames_path),
                (_partial(label_path), label_path)]

    def _shrink(self, chunk: int = 256) -> None:
        shrunk = self.partial_data.with_name(self.partial_data.name + ".shrink")
        source = np.load(self.partial_data, mmap_mode="r")
        target = open_memmap(shrunk, mode="w+", dtype=np.float32, shape=(self.written, *SAMPLE_SHAPE))
        for start in range(0, self.written, chunk):
            end = min(start + chunk, self.written)
            target[start:end] = source[start:end]
        target.flush()
        del source, target
        os.replace(shrunk, self.partial_data)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


@dataclass
class Summary:
    """What a run did."""

    written: dict[str, dict[str, int]] = field(default_factory=dict)  # benchmark -> part -> samples
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    cut: list[str] = field(default_factory=list)  # files longer than 300 frames
    empty: list[str] = field(default_factory=list)  # files without any body


def list_samples(data_path: Path, ignored: set[str]) -> list[str]:
    """Sorted ``.skeleton`` file names in ``data_path`` that are not in ``ignored``."""
    if not data_path.is_dir():
        raise DataGenError(f"data folder {data_path} does not exist or is not a folder "
                           "(expected the unpacked nturgb+d_skeletons/ folder)")
    names = sorted(entry.name for entry in os.scandir(data_path)
                   if entry.name.endswith(SKELETON_SUFFIX) and entry.is_file())
    if not names:
        raise DataGenError(f"data folder {data_path} holds no .skeleton files")
    return [name for name in names if strip_suffix(name) not in ignored]


def generate(data_path: str | Path, out_folder: str | Path, ignored_sample_path: str | Path | None,
             benchmarks: Sequence[str], *, workers: int = 1, skip_bad: bool = False,
             progress: bool = True, num_actions: int | None = None) -> Summary:
    """Prepare every benchmark in ``benchmarks`` from one pass over the files; see the module docstring.

    ``num_actions``: the dataset's number of actions; a file of a higher action number is an error
    (NTU 120 files in an NTU 60 run). Raises DataGenError (one-line message) for bad inputs; nothing
    that looks complete is left then.
    """
    data_path, out_folder = Path(data_path), Path(out_folder)
    ignored: set[str] = set()
    if ignored_sample_path is not None:
        if not Path(ignored_sample_path).is_file():
            raise DataGenError(f"ignored-sample list {ignored_sample_path} does not exist")
        ignored = read_ignored_list(ignored_sample_path)
    names = list_samples(data_path, ignored)

    summary = Summary()
    fields, bad_names = {}, []
    for name in names:
        try:
            fields[name] = parse_sample_name(name)
        except ValueError as error:
            if not skip_bad:
                raise DataGenError(f"{data_path / name}: {error}") from None
            bad_names.append((name, str(error)))
    summary.skipped.extend(bad_names)
    names = [name for name in names if name in fields]
    beyond = [name for name in names if num_actions is not None and fields[name].action > num_actions]
    if beyond:
        raise DataGenError(f"{data_path / beyond[0]}: action A{fields[beyond[0]].action:03d} is beyond the "
                           f"dataset's {num_actions} actions ({len(beyond)} such files; wrong --dataset?)")

    writers: dict[tuple[str, str], PartWriter] = {}
    results = None
    try:
        for benchmark in benchmarks:
            folder = out_folder / benchmark
            folder.mkdir(parents=True, exist_ok=True)
            in_train = [is_training(fields[name], benchmark) for name in names]
            writers[benchmark, "train"] = PartWriter(folder, "train", sum(in_train))
            writers[benchmark, "val"] = PartWriter(folder, "val", len(names) - sum(in_train))

        paths = [str(data_path / name) for name in names]
        results = _prepared(paths, workers)
        for name, (status, result) in tqdm(zip(names, results), total=len(names), unit="file",
                                           desc="ntu_gendata", disable=not progress):
            if status == "bad":
                if not skip_bad:
                    raise DataGenError(result)
                summary.skipped.append((name, result))
                continue
            if result.file_frames > MAX_FRAMES:
                summary.cut.append(name)
                warnings.warn(f"{data_path / name}: {result.file_frames} frames, cut to the first {MAX_FRAMES}")
            if not result.has_body:
                summary.empty.append(name)
                warnings.warn(f"{data_path / name}: no body in any frame; stored as zeros")
            sample = fields[name]
            for benchmark in benchmarks:
                part = "train" if is_training(sample, benchmark) else "val"
                writers[benchmark, part].append(name, sample.label, result)
        results.close()  # stops the worker pool

        renames: list[tuple[Path, Path]] = []
        for (benchmark, part), writer in writers.items():
            renames.extend(writer.finish())
            summary.written.setdefault(benchmark, {})[part] = writer.written
        for partial, final in renames:  # only now, with every output complete
            os.replace(partial, final)
    finally:
        if results is not None:
            results.close()
        for writer in writers.values():  # after a failure: no partial file survives
            for leftover in writer.folder.glob(f"*{PARTIAL_SUFFIX}*"):
                leftover.unlink(missing_ok=True)

    if skip_bad:
        write_skipped(out_folder / SKIPPED_LIST, summary.skipped)
    return summary


def write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    partial = _partial(path)
    with open(partial, "w", encoding="utf-8") as f:
        for name, reason in skipped:
            f.write(f"{name}\t{reason}\n")
    os.replace(partial, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="NTU RGB+D 60/120 raw skeletons -> normalised training tensors (the 2s-AGCN preprocessing).")
    parser.add_argument("--data-path", "--data_path", dest="data_path", required=True,
                        help="folder holding the raw .skeleton files (nturgb+d_skeletons/)")
    parser.add_argument("--dataset", choices=sorted(DATASET_BENCHMARKS), default="ntu60",
                        help="which dataset the files are from (default ntu60)")
    parser.add_argument("--ignored-sample-path", "--ignored_sample_path", dest="ignored_sample_path",
                        help="list of samples to leave out (default: the official missing-skeleton list of "
                             "--dataset, shipped in data_gen/resources/)")
    parser.add_argument("--out-folder", "--out_folder", dest="out_folder",
                        help="where to write <benchmark>/... (default ./data/NTU-RGB-D-60-AGCN or "
                             "./data/NTU-RGB-D-120-AGCN)")
    parser.add_argument("--benchmarks", nargs="+", metavar="NAME",
                        help="subset of the dataset's benchmarks (ntu60: xsub xview; ntu120: xsub xsetup)")
    parser.add_argument("--workers", type=int, default=1, help="processes reading files (default 1)")
    parser.add_argument("--skip-bad", "--skip_bad", dest="skip_bad", action="store_true",
                        help="skip truncated or malformed files and list them in OUT/skipped_samples.txt")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    valid = DATASET_BENCHMARKS[args.dataset]
    benchmarks = tuple(dict.fromkeys(args.benchmarks or valid))
    unknown = [b for b in benchmarks if b not in valid]
    if unknown:
        parser.error(f"--benchmarks {' '.join(unknown)}: {args.dataset} has {' '.join(valid)}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    out_folder = Path(args.out_folder or DEFAULT_OUT_FOLDERS[args.dataset])
    ignored = args.ignored_sample_path or DEFAULT_IGNORED_LISTS[args.dataset]

    previous_format = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        summary = generate(args.data_path, out_folder, ignored, benchmarks, workers=args.workers,
                           skip_bad=args.skip_bad, progress=args.progress,
                           num_actions=DATASET_NUM_ACTIONS[args.dataset])
    except DataGenError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    finally:
        warnings.formatwarning = previous_format
    for benchmark, parts in summary.written.items():
        counts = ", ".join(f"{part} {count}" for part, count in parts.items())
        sys.stdout.write(f"{out_folder / benchmark}: {counts}\n")
    if args.skip_bad:
        sys.stdout.write(f"skipped {len(summary.skipped)} file(s), listed in {out_folder / SKIPPED_LIST}\n")
    return 0


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.ntu_gendata` functions.
    from data_gen.ntu_gendata import main as _main

    sys.exit(_main())
