"""NTU RGB+D 60/120 raw ``.skeleton`` files -> the training tensors of every benchmark.

    python data_gen/ntu_gendata.py --data-path RAW_DIR --dataset ntu60 [--out-folder OUT]
        [--ignored-sample-path LIST] [--benchmarks xsub xview] [--workers N] [--skip-bad]

Writes, for each benchmark B and part in (train, val), into OUT/B/:
  {part}_data_joint.npy  float32 (N, 3, 300, 25, 2), normalised as the 2s-AGCN preprocessing does
  {part}_label.pkl       pickle of (sample names with '.skeleton', labels = action number - 1)
  {part}_num_frame.npy   int64 (N,), the frame count of each file (at most 300)
  manifest.json          sizes, sha256 and shapes of those files, class counts, the arguments (common.manifest)
Samples are in sorted name order. Each file is read and normalised once for all benchmarks, in
``--workers`` processes, and appended to disk as it comes (``data_gen.writer``), so memory stays flat
whatever the dataset size. The output folder is locked for the run; every output is written under a
temporary name of this run and renamed into place only once all of them are complete, and a run that
fails (bad input, a part without samples, a full disk, Ctrl-C) leaves the previous outputs as they were.
OUT/skipped_samples.txt lists the files ``--skip-bad`` left out; a run that skips none removes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from common.constants import (
    DATASETS,
    MAX_BODIES,
    NTU_DATASETS,
    NUM_FRAMES,
    NUM_JOINTS,
    NUM_PERSONS,
    RESOURCES_FOLDER,
    default_out_folder,
)
from data_gen import cli
from data_gen.normalize import normalize_sample, select_bodies
from data_gen.ntu_splits import (
    DEFAULT_IGNORED_LISTS,
    SKELETON_SUFFIX,
    SampleName,
    is_training,
    parse_sample_name,
    read_ignored_list,
    strip_suffix,
)
from data_gen.parallel import imap_ordered
from data_gen.skeleton_reader import SkeletonFormatError, read_skeleton
from data_gen.writer import DataGenError, PreparedSample, RunOutputs

TOOL = "data_gen/ntu_gendata.py"


def prepare_sample(path: str | Path, max_frames: int = NUM_FRAMES) -> PreparedSample:
    """Read one ``.skeleton`` file, keep its two most energetic bodies and normalise: the data of one sample."""
    raw = read_skeleton(path, max_bodies=MAX_BODIES, num_joints=NUM_JOINTS, max_frames=max_frames)
    # Stored as float32 before normalising, as the reference does (selection uses the float64 values).
    selected = select_bodies(
        raw.bodies, num_persons=NUM_PERSONS, max_frames=max_frames, energy=raw.energy
    )  # (C, T, V, M)
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


@dataclass
class Summary:
    """What a run did."""

    written: dict[str, dict[str, int]] = field(default_factory=dict)  # benchmark -> part -> samples
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    cut: list[str] = field(default_factory=list)  # files longer than 300 frames
    empty: list[str] = field(default_factory=list)  # files without any body


def list_samples(data_path: Path, ignored: set[str], ignored_source: str | os.PathLike | None = None) -> list[str]:
    """Sorted ``.skeleton`` file names in ``data_path`` that are not in ``ignored``.

    DataGenError when the folder is missing, holds no ``.skeleton`` file, or all of them are ignored.
    """
    if not data_path.is_dir():
        raise DataGenError(
            f"data folder {data_path} does not exist or is not a folder "
            "(expected the unpacked nturgb+d_skeletons/ folder)"
        )
    names = sorted(
        entry.name for entry in os.scandir(data_path) if entry.name.endswith(SKELETON_SUFFIX) and entry.is_file()
    )
    if not names:
        raise DataGenError(f"data folder {data_path} holds no .skeleton files")
    kept = [name for name in names if strip_suffix(name) not in ignored]
    if not kept:
        source = f" {ignored_source}" if ignored_source is not None else ""
        raise DataGenError(
            f"{data_path}: all {len(names)} .skeleton files are in the ignored-sample list{source}; nothing was written"
        )
    return kept


def _parse_names(
    data_path: Path, names: Sequence[str], skip_bad: bool, summary: Summary, num_actions: int | None
) -> dict[str, SampleName]:
    """The fields of every well-formed file name; a malformed one is an error, or skipped with ``skip_bad``."""
    fields: dict[str, SampleName] = {}
    for name in names:
        try:
            fields[name] = parse_sample_name(name)
        except ValueError as error:
            if not skip_bad:
                raise DataGenError(f"{data_path / name}: {error}") from None
            summary.skipped.append((name, str(error)))
    if not fields:
        raise DataGenError(
            f"{data_path}: none of the {len(names)} file names is a sample name "
            f"(first: {summary.skipped[0][1]}); nothing was written"
        )
    beyond = [name for name in fields if num_actions is not None and fields[name].action > num_actions]
    if beyond:
        raise DataGenError(
            f"{data_path / beyond[0]}: action A{fields[beyond[0]].action:03d} is beyond the "
            f"dataset's {num_actions} actions ({len(beyond)} such files; wrong --dataset?)"
        )
    return fields


def _as_recorded(path: str | Path | None) -> str | None:
    """A shipped list as ``data_gen/resources/NAME`` (the same in every checkout), any other path as given."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    if resolved.is_relative_to(RESOURCES_FOLDER):
        return f"data_gen/resources/{resolved.relative_to(RESOURCES_FOLDER).as_posix()}"
    return str(path)


def _part_sizes(
    data_path: Path, fields: dict[str, SampleName], benchmarks: Sequence[str]
) -> dict[tuple[str, str], int]:
    """(benchmark, part) -> files that go there; DataGenError naming a part no file goes to."""
    sizes: dict[tuple[str, str], int] = {}
    for benchmark in benchmarks:
        train = sum(is_training(sample, benchmark) for sample in fields.values())
        sizes[benchmark, "train"], sizes[benchmark, "val"] = train, len(fields) - train
    for (benchmark, part), size in sizes.items():
        if size == 0:
            raise DataGenError(
                f"{data_path}: none of the {len(fields)} files to convert belongs to "
                f"{benchmark}/{part}; "
                "nothing was written (a part without samples cannot be trained or evaluated on)"
            )
    return sizes


def generate(
    data_path: str | Path,
    out_folder: str | Path,
    ignored_sample_path: str | Path | None,
    benchmarks: Sequence[str],
    *,
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    num_actions: int | None = None,
) -> Summary:
    """Prepare every benchmark in ``benchmarks`` from one pass over the files; see the module docstring.

    ``num_actions``: the dataset's number of actions; a file of a higher action number is an error
    (NTU 120 files in an NTU 60 run). Raises DataGenError (one-line message) for bad inputs and outputs;
    nothing is written or replaced then.
    """
    data_path, out_folder = Path(data_path), Path(out_folder)
    ignored: set[str] = set()
    if ignored_sample_path is not None:
        if not Path(ignored_sample_path).is_file():
            raise DataGenError(f"ignored-sample list {ignored_sample_path} does not exist")
        ignored = read_ignored_list(ignored_sample_path)
    summary = Summary()
    fields = _parse_names(
        data_path, list_samples(data_path, ignored, ignored_sample_path), skip_bad, summary, num_actions
    )
    sizes = _part_sizes(data_path, fields, benchmarks)
    # What determines the contents (not --workers, not where they are written): recorded in the manifests.
    arguments = {
        "data_path": str(data_path),
        "ignored_sample_path": _as_recorded(ignored_sample_path),
        "benchmarks": list(benchmarks),
        "skip_bad": skip_bad,
        "num_actions": num_actions,
    }
    with RunOutputs(out_folder, tool=TOOL, arguments=arguments) as out:
        for (benchmark, part), size in sizes.items():
            out.add_part((benchmark, part), benchmark, part, size)
        _write_samples(
            out, data_path, fields, benchmarks, workers=workers, skip_bad=skip_bad, progress=progress, summary=summary
        )
        for benchmark, part in out.empty_parts():
            bad = [
                reason
                for name, reason in summary.skipped
                if name in fields and is_training(fields[name], benchmark) == (part == "train")
            ]
            raise DataGenError(
                f"{data_path}: all {len(bad)} files of {benchmark}/{part} are bad and were skipped "
                f"(first: {bad[0]}); nothing was written"
            )
        out.stage_skipped(summary.skipped)
        summary.written = out.commit()
    return summary


def _write_samples(
    out: RunOutputs,
    data_path: Path,
    fields: dict[str, SampleName],
    benchmarks: Sequence[str],
    *,
    workers: int,
    skip_bad: bool,
    progress: bool,
    summary: Summary,
) -> None:
    """Read and normalise every file in ``workers`` processes; append each sample to its parts, in name order."""
    names = list(fields)
    results = _prepared([str(data_path / name) for name in names], workers)
    try:
        for name, (status, result) in tqdm(
            zip(names, results), total=len(names), unit="file", desc="ntu_gendata", disable=not progress
        ):
            if status == "bad":
                if not skip_bad:
                    raise DataGenError(result)
                summary.skipped.append((name, result))
                continue
            if result.file_frames > NUM_FRAMES:
                summary.cut.append(name)
                warnings.warn(
                    f"{data_path / name}: {result.file_frames} frames, cut to the first {NUM_FRAMES}", stacklevel=2
                )
            if not result.has_body:
                summary.empty.append(name)
                warnings.warn(f"{data_path / name}: no body in any frame; stored as zeros", stacklevel=2)
            sample = fields[name]
            keys = [(b, "train" if is_training(sample, b) else "val") for b in benchmarks]
            out.append(keys, name, sample.label, result.data, result.num_frame)
    finally:
        results.close()  # stops the worker pool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="NTU RGB+D 60/120 raw skeletons -> normalised training tensors (the 2s-AGCN preprocessing)."
    )
    parser.add_argument(
        "--data-path",
        "--data_path",
        dest="data_path",
        required=True,
        help="folder holding the raw .skeleton files (nturgb+d_skeletons/)",
    )
    parser.add_argument(
        "--dataset", choices=NTU_DATASETS, default="ntu60", help="which dataset the files are from (default ntu60)"
    )
    parser.add_argument(
        "--ignored-sample-path",
        "--ignored_sample_path",
        dest="ignored_sample_path",
        help="list of samples to leave out (default: the official missing-skeleton list of "
        "--dataset, shipped in data_gen/resources/)",
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        metavar="NAME",
        help="subset of the dataset's benchmarks ("
        + "; ".join(f"{name}: {' '.join(DATASETS[name]['benchmarks'])}" for name in NTU_DATASETS)
        + ")",
    )
    cli.add_conversion_args(
        parser,
        out_defaults=[default_out_folder(name) for name in NTU_DATASETS],
        workers_help="processes reading files",
        skip_help="skip truncated or malformed files and list them in OUT/skipped_samples.txt",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    valid = DATASETS[args.dataset]["benchmarks"]
    benchmarks = tuple(dict.fromkeys(args.benchmarks or valid))
    unknown = [b for b in benchmarks if b not in valid]
    if unknown:
        parser.error(f"--benchmarks {' '.join(unknown)}: {args.dataset} has {' '.join(valid)}")
    out_folder = Path(args.out_folder or default_out_folder(args.dataset))

    def work() -> list[str]:
        summary = generate(
            args.data_path,
            out_folder,
            args.ignored_sample_path or DEFAULT_IGNORED_LISTS[args.dataset],
            benchmarks,
            workers=args.workers,
            skip_bad=args.skip_bad,
            progress=args.progress,
            num_actions=DATASETS[args.dataset]["num_class"],
        )
        return cli.summary_lines(out_folder, summary.written, len(summary.skipped), "file(s)", args.skip_bad)

    return cli.run_tool(parser.prog, work)


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.ntu_gendata` functions.
    from data_gen.ntu_gendata import main as _main

    sys.exit(_main())
