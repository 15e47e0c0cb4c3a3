"""NTU RGB+D 60/120 raw ``.skeleton`` files -> the training tensors of every benchmark.

    python data_gen/ntu_gendata.py --data-path RAW_DIR --dataset ntu60 [--out-folder OUT]
        [--ignored-sample-path LIST] [--benchmarks xsub xview] [--workers N] [--skip-bad]

Writes, for each benchmark B and part in (train, val), into OUT/B/: ``{part}_data_joint.npy`` float32
(N, 3, 300, 25, 2) normalised as the 2s-AGCN preprocessing does, ``{part}_label.pkl`` (names with
'.skeleton', labels = action number - 1), ``{part}_num_frame.npy`` (the file's frame count, at most 300)
and ``manifest.json``. Samples are in sorted name order; each file is read and normalised once for all
benchmarks, in ``--workers`` processes; the rest (part sizes, ``--skip-bad``, the commit) is
``data_gen.driver``'s.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common.constants import DATASETS, NTU_DATASETS, NUM_FRAMES, PARTS, RESOURCES_FOLDER, default_out_folder
from data_gen import cli, driver
from data_gen.normalize import normalize_sample, select_bodies
from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS, is_training, parse_sample_name, read_ignored_list, strip_suffix
from data_gen.skeleton_reader import read_skeleton
from data_gen.writer import DataGenError

TOOL = "data_gen/ntu_gendata.py"


def prepare_sample(path: str | Path, name: str = "", label: int = 0) -> driver.Sample:
    """Read one ``.skeleton`` file, keep its two most energetic bodies and normalise: one sample."""
    try:
        raw = read_skeleton(path, max_frames=NUM_FRAMES)
    except (OSError, UnicodeError) as error:
        raise DataGenError(f"{path}: cannot be read ({error})") from None
    # Stored as float32 before normalising, as the reference does (selection uses the float64 values).
    selected = select_bodies(raw.bodies, energy=raw.energy)
    return driver.Sample(name, label, normalize_sample(selected), min(raw.num_frames, NUM_FRAMES), raw.num_frames)


def _prepare_job(payload: tuple[str, str, int]) -> list[driver.Sample]:
    return [prepare_sample(*payload)]


def list_samples(data_path: Path, ignored: set[str], source: str | os.PathLike | None = None) -> list[str]:
    """Sorted names ending in ``.skeleton`` in ``data_path`` that are not in ``ignored`` (files or not)."""
    if not data_path.is_dir():
        expected = "expected the unpacked nturgb+d_skeletons/"
        raise DataGenError(f"data folder {data_path} does not exist or is not a folder ({expected})")
    names = sorted(entry.name for entry in os.scandir(data_path) if entry.name.endswith(".skeleton"))
    if not names:
        raise DataGenError(f"data folder {data_path} holds no .skeleton files")
    kept = [name for name in names if strip_suffix(name) not in ignored]
    if not kept:
        listed = f"the ignored-sample list{f' {source}' if source is not None else ''}"
        raise DataGenError(f"{data_path}: all {len(names)} .skeleton files are in {listed}; nothing was written")
    return kept


def _as_recorded(path: str | Path | None) -> str | None:
    """A shipped list as ``data_gen/resources/NAME`` (the same in every checkout), any other path as given."""
    if path is None or not Path(path).resolve().is_relative_to(RESOURCES_FOLDER):
        return None if path is None else str(path)
    return f"data_gen/resources/{Path(path).resolve().relative_to(RESOURCES_FOLDER).as_posix()}"


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
) -> driver.Summary:
    """Prepare ``benchmarks`` in one pass, a job per file: an entry that is not a regular file or whose name is
    not a sample name is bad; an action beyond ``num_actions`` is an error (NTU 120 files in an NTU 60 run)."""
    data_path, out_folder = Path(data_path), driver.check_out_folder(out_folder)
    listing = None if ignored_sample_path is None else driver.check_input(ignored_sample_path, "ignored-sample list")
    jobs, skipped = [], []
    for name in list_samples(data_path, set() if listing is None else read_ignored_list(listing), listing):
        try:
            problem = driver.input_problem(data_path / name)
            fields = parse_sample_name(name)
        except DataGenError as error:
            problem = str(error)
        if problem is not None:
            driver.refuse_or_skip(skip_bad, skipped, name, f"{data_path / name}: {problem}")
            continue
        if num_actions is not None and fields.action > num_actions:
            beyond = f"is beyond the dataset's {num_actions} actions (wrong --dataset?)"
            raise DataGenError(f"{data_path / name}: action A{fields.action:03d} {beyond}")
        parts = tuple((b, "train" if is_training(fields, b) else "val") for b in benchmarks)
        jobs.append(driver.Job(name, parts, 1, (str(data_path / name), name, fields.label)))
    # What determines the contents (not --workers, not where they are written): recorded in the manifests.
    arguments = {"data_path": str(data_path), "ignored_sample_path": _as_recorded(listing)}
    arguments.update(benchmarks=list(benchmarks), skip_bad=skip_bad, num_actions=num_actions)
    parts = [(b, p) for b in benchmarks for p in PARTS]
    steps = driver.Plan(out_folder, TOOL, arguments, str(data_path), parts, jobs, _prepare_job, skipped, chunksize=4)
    return driver.run(steps, workers=workers, skip_bad=skip_bad, progress=progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="NTU RGB+D 60/120 raw skeletons -> normalised training tensors.")
    parser.add_argument("--data-path", "--data_path", dest="data_path", required=True, help="raw .skeleton files")
    parser.add_argument("--dataset", choices=NTU_DATASETS, default="ntu60", help="the files' dataset (default ntu60)")
    listing = "samples to leave out (default: the official missing-skeleton list of --dataset)"
    parser.add_argument("--ignored-sample-path", "--ignored_sample_path", dest="ignored_sample_path", help=listing)
    parser.add_argument("--benchmarks", nargs="+", metavar="NAME", help="a subset of the dataset's benchmarks")
    defaults = [default_out_folder(name) for name in NTU_DATASETS]
    cli.add_conversion_args(parser, out_defaults=defaults, what="files", bad="unreadable, truncated or malformed files")
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    valid = DATASETS[args.dataset]["benchmarks"]
    benchmarks = tuple(dict.fromkeys(args.benchmarks or valid))
    unknown = [b for b in benchmarks if b not in valid]
    if unknown:
        raise DataGenError(f"--benchmarks {' '.join(unknown)}: {args.dataset} has {' '.join(valid)}")
    out, listing = args.out_folder or default_out_folder(args.dataset), args.ignored_sample_path
    options = {"workers": args.workers, "skip_bad": args.skip_bad, "progress": args.progress}
    num_actions = DATASETS[args.dataset]["num_class"]
    listing = listing or DEFAULT_IGNORED_LISTS[args.dataset]
    summary = generate(args.data_path, out, listing, benchmarks, **options, num_actions=num_actions)
    return summary.lines("file(s)", args.skip_bad)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.ntu_gendata` functions.
    from data_gen.ntu_gendata import main as _main

    sys.exit(_main())
