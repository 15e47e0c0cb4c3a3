"""PKU-MMD phase 1 / phase 2 skeletons -> the NTU tensor layout the training scripts read.

Input as distributed (docs/datasets.md#pku-mmd-phase-1-and-phase-2): ``<video>.txt`` skeleton files (a
line of 150 numbers per frame: person 1's 25 joints x y z, then person 2's), label files (a line
``action_id,start_frame,end_frame,confidence`` per action) and split files. Each labelled interval is one
sample ``<video>_<iii>``: rows ``[start, end)``, laid out, padded to 300 frames and normalised as NTU.
By default as the lineage's preparation (maoyunyao/CMD ``data_gen/pku_gendata.py``) does: the two person
slots in file order, the first 300 frames of a longer clip; ``--person-order energy`` and ``--long-clips
resample`` are the alternatives. The rest (workers, part sizes, ``--skip-bad``, commit) is the driver's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.constants import DATASETS, NUM_FRAMES, NUM_PERSONS, PARTS, VALUES_PER_FRAME, default_out_folder
from data_gen import cli, driver
from data_gen.normalize import MAX_ABS_COORDINATE, layout, normalize_sample, select_bodies
from data_gen.skeleton_reader import COORDINATE_EXPECTED
from data_gen.writer import DataGenError

LONG_CLIP_MODES = ("truncate", "resample")
PERSON_ORDERS = ("file", "energy")
LABEL_MAP_FILE = "label_map.txt"
TOOL = "data_gen/pku_gendata.py"
MAX_ACTION_ID = 51  # Actions.xlsx of phase 1 defines ids 1..51
_SPLIT_FILE = re.compile(
    r"^\s*training[^:\n]*:(?P<train>.*?)^\s*(?:valid|test)[^:\n]*:(?P<val>.*)\Z", re.M | re.S | re.I
)


PHASES = {1: "pku1", 2: "pku2"}  # phase -> its dataset in common.constants.DATASETS
DATASET_TO_PHASE = {dataset: phase for phase, dataset in PHASES.items()}
# Per phase and benchmark, the split file names tried in order (phase 1's are never taken for phase 2).
SPLIT_NAMES = {
    1: {"xsub": ("cross-subject.txt", "cross_subject.txt"), "xview": ("cross-view.txt", "cross_view.txt")},
    2: {"xsub": ("cross_subject_v2.txt", "cross-subject_v2.txt"), "xview": ("cross_view_v2.txt", "cross-view_v2.txt")},
}


class Interval(NamedTuple):
    """One line of a label file."""

    action: int  # 1-based action id
    start: int  # first frame (0-based row of the skeleton file)
    end: int  # one past the last frame
    confidence: int
    line: int  # 1-based line number in the label file


def _read_text(path: str | os.PathLike, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataGenError(f"{path}: cannot read {what} ({exc.strerror})") from None


def read_skeleton_file(path: str | os.PathLike) -> np.ndarray:
    """The frames of a skeleton file as (T, 150) float32, in file order (trailing blank lines ignored)."""
    lines = _read_text(path, "skeleton file").rstrip().splitlines()
    if not lines:
        raise DataGenError(f"{path}: skeleton file holds no frame")
    counts = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    bad = np.flatnonzero(counts != VALUES_PER_FRAME)
    if bad.size:
        i = int(bad[0])
        expected = f"expected {VALUES_PER_FRAME} numbers (2 persons x 25 joints x xyz)"
        raise DataGenError(f"{path}, line {i + 1}: {expected}, found {counts[i]}")
    try:
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused below with its line
            frames = np.array(" ".join(lines).split(), dtype=np.float32).reshape(len(lines), VALUES_PER_FRAME)
    except ValueError:
        for i, line in enumerate(lines):  # slow path, only to name the line
            try:
                np.array(line.split(), dtype=np.float32)
            except ValueError as exc:
                raise DataGenError(f"{path}, line {i + 1}: not a number ({exc})") from None
        raise
    bad = ~(np.abs(frames) <= MAX_ABS_COORDINATE)  # nan, inf, and values not finite once normalised
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataGenError(f"{path}, line {i + 1}: expected {COORDINATE_EXPECTED}, found {lines[i].split()[j]!r}")
    return frames


def read_label_file(path: str | os.PathLike) -> list[Interval]:
    """The intervals of a label file, in file order: ``action_id,start,end,confidence`` a line (integers).

    ``start``/``end`` are a half-open range of 0-based rows ``[start, end)``, the convention of the
    dataset's evaluation script (it measures an interval as ``end - start``).
    """
    intervals = []
    for number, raw in enumerate(_read_text(path, "label file").splitlines(), start=1):
        if not raw.strip():
            continue
        fields = [f.strip() for f in raw.strip().rstrip(",").split(",")]
        if len(fields) != 4 or not all(re.fullmatch(r"[+-]?\d+", f) for f in fields):
            expected = "expected 'action_id,start_frame,end_frame,confidence' (4 integers)"
            raise DataGenError(f"{path}, line {number}: {expected}, got {raw.strip()!r}")
        action, start, end, confidence = (int(f) for f in fields)
        if not 1 <= action <= MAX_ACTION_ID:
            raise DataGenError(f"{path}, line {number}: action id must lie in 1..{MAX_ACTION_ID}, got {action}")
        if start < 0 or end <= start:
            raise DataGenError(f"{path}, line {number}: interval [{start}, {end}) is empty or negative")
        intervals.append(Interval(action, start, end, confidence, number))
    return intervals


def read_split_file(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(training video ids, validation video ids) of a split file: ``Training...:`` then ids, ``Valid...:``
    (the official files spell it ``Validataion``) or ``Test...:`` then ids, separated by commas or spaces."""
    match = _SPLIT_FILE.search(_read_text(path, "split file"))
    if match is None:
        lines = "a 'Training videos:' line and a 'Validataion videos:' (or 'Validation'/'Test') line"
        raise DataGenError(f"{path}: expected {lines}, each followed by comma-separated video ids")
    train, val = ([t.removesuffix(".txt") for t in re.split(r"[,\s]+", match[k]) if t] for k in ("train", "val"))
    if not train or not val:
        raise DataGenError(f"{path}: the {'training' if not train else 'validation'} list is empty")
    both = sorted(set(train) & set(val))
    if both:
        raise DataGenError(f"{path}: {len(both)} video ids are listed both for training and validation: {both[:3]}")
    return train, val


def sample_name(video: str, index: int) -> str:
    """``0002-L`` and label line 3 (0-based, blank lines not counted) -> ``0002-L_003``."""
    return f"{video}_{index:03d}"


def frames_to_bodies(frames: np.ndarray) -> np.ndarray:
    """(T, 150) rows of a skeleton file -> (2, T, 25, 3) body slots (person, frame, joint, xyz)."""
    return frames.reshape(len(frames), NUM_PERSONS, -1, 3).transpose(1, 0, 2, 3)  # a row: person, joint, xyz


def fit_length(bodies: np.ndarray, max_frames: int = NUM_FRAMES, mode: str = "truncate") -> np.ndarray:
    """(B, T, V, 3) cut to its first ``max_frames`` frames (``truncate``), or resampled to them (frames
    ``round(i * (T - 1) / (max_frames - 1))``, the first and the last included)."""
    if bodies.shape[1] <= max_frames or mode == "truncate":
        return bodies[:, :max_frames]
    return bodies[:, np.rint(np.linspace(0.0, bodies.shape[1] - 1, max_frames)).astype(np.int64)]


def prepare_clip(
    frames: np.ndarray, start: int, end: int, long_clips: str = "truncate", order: str = "file"
) -> np.ndarray:
    """Rows [start, end) of a video -> one normalised clip (3, 300, 25, 2) float32."""
    bodies = fit_length(frames_to_bodies(frames[start:end]), NUM_FRAMES, long_clips)
    return normalize_sample(layout(bodies) if order == "file" else select_bodies(bodies))


def _video_job(payload: tuple) -> driver.Result:
    """The clips of one video; an interval past its end is a skip with ``--skip-bad``, an empty one always."""
    video, skeleton_path, label_path, clips, long_clips, order, skip_bad = payload
    frames = read_skeleton_file(skeleton_path)
    result: driver.Result = []
    for index, iv, label in clips:
        name, span = sample_name(video, index), f"[{iv.start}, {iv.end})"
        if iv.end > len(frames):
            past = f"{label_path}, line {iv.line}: interval {span} reaches past the skeleton file, which has"
            driver.refuse_or_skip(skip_bad, result, name, f"{past} {len(frames)} frames")
        elif not frames[iv.start : iv.end].any():
            result.append((name, f"{skeleton_path}: no skeleton in frames {span}"))
        else:
            data = prepare_clip(frames, iv.start, iv.end, long_clips, order)
            result.append(driver.Sample(name, label, data, min(iv.end - iv.start, NUM_FRAMES), iv.end - iv.start))
    return result


def label_mapping(action_ids: Iterable[int], num_class: int) -> tuple[dict[int, int], bool]:
    """Action id -> label (id - 1), and whether it renumbered: ids beyond num_class but exactly num_class of
    them (a phase 2 release numbered with phase 1's ids) become 0..num_class-1 in order; else ValueError."""
    ids = sorted({int(a) for a in action_ids})
    if not ids or ids[-1] <= num_class:
        return {a: a - 1 for a in ids}, False
    if len(ids) == num_class:
        return {a: i for i, a in enumerate(ids)}, True
    expected = f"cannot be mapped onto {num_class} classes: expected ids within 1..{num_class}, or exactly {num_class}"
    raise ValueError(f"action ids {ids[0]}..{ids[-1]} ({len(ids)} distinct) {expected} distinct ids")


def _list_videos(data_path: Path, skip_bad: bool, skipped: list) -> dict[str, Path]:
    """Video id -> skeleton file, sorted; an entry that is not a regular file is bad."""
    videos = {}
    for path in sorted(p for p in data_path.iterdir() if p.suffix.lower() == ".txt"):
        if (problem := driver.input_problem(path)) is not None:
            driver.refuse_or_skip(skip_bad, skipped, path.stem, f"{path}: {problem}")
        videos.update({path.stem: path} if problem is None else {})
    if not videos:
        raise DataGenError(f"skeleton folder {data_path} holds no <video>.txt files")
    return videos


def _read_splits(split_files: dict[str, Path], videos: dict[str, Path], data_path: Path) -> dict:
    """Benchmark -> (training ids, validation ids); warns about listed videos without a file and the reverse."""
    splits = {}
    for benchmark, path in split_files.items():
        train, val = read_split_file(driver.check_input(path, f"{benchmark} split file"))
        splits[benchmark] = (frozenset(train), frozenset(val))
        if missing := sorted((set(train) | set(val)) - set(videos)):
            listed = f"{path}: {len(missing)} listed videos have no skeleton file"
            warnings.warn(f"{listed}: {driver.preview(missing)}", stacklevel=2)
        if unlisted := sorted(set(videos) - set(train) - set(val)):
            left = f"{len(unlisted)} videos of {data_path} are in neither list, left out of {benchmark}"
            warnings.warn(f"{path}: {left}: {driver.preview(unlisted)}", stacklevel=2)
    return splits


def plan(
    data_path: Path, label_path: Path, split_files: dict, out: Path, phase: int, clip: tuple, skip_bad: bool
) -> driver.Plan:
    """One job per video of a split; the label files are read here (the intervals give the part sizes)."""
    skipped: list = []
    videos = _list_videos(data_path, skip_bad, skipped)
    splits = _read_splits(split_files, videos, data_path)
    intervals = {}
    for video in (v for v in videos if any(v in t or v in val for t, val in splits.values())):
        path = label_path / f"{video}.txt"
        try:
            problem = driver.input_problem(path)
            if problem is not None:
                raise DataGenError(f"{path}: {problem} (the label file of {videos[video]})")
            intervals[video] = read_label_file(path)
        except DataGenError as error:
            driver.refuse_or_skip(skip_bad, skipped, video, str(error))
    try:
        actions = [iv.action for ivs in intervals.values() for iv in ivs]
        label_map, renumbered = label_mapping(actions, DATASETS[PHASES[phase]]["num_class"])
    except ValueError as error:
        raise DataGenError(f"label files in {label_path}: {error}") from None
    jobs = []
    for video, ivs in intervals.items():
        parts = tuple((b, "train" if video in t else "val") for b, (t, v) in splits.items() if video in t or video in v)
        clips = [(i, iv, label_map[iv.action]) for i, iv in enumerate(ivs)]
        payload = (video, str(videos[video]), str(label_path / f"{video}.txt"), clips, *clip, skip_bad)
        jobs.append(driver.Job(video, parts, len(clips), payload))
    arguments = {"data_path": str(data_path), "label_path": str(label_path), "phase": phase, "skip_bad": skip_bad}
    arguments.update(split_files={b: str(p) for b, p in split_files.items()}, long_clips=clip[0], person_order=clip[1])
    mapping = "action_id\tlabel\n" + "".join(f"{a}\t{lab}\n" for a, lab in label_map.items())
    verb = f"cut to their first {NUM_FRAMES}" if clip[0] == "truncate" else f"resampled to {NUM_FRAMES}"
    parts = [(b, p) for b in splits for p in PARTS]
    files = {LABEL_MAP_FILE: mapping if renumbered else None}
    return driver.Plan(out, TOOL, arguments, str(data_path), parts, jobs, _video_job, skipped, files, verb, window=4)


def find_label_folder(data_path: Path) -> Path | None:
    """A ``Label``/``label`` folder next to the skeleton folder or one level up, if there is one."""
    folders = (root / name for root in (data_path.parent, data_path.parent.parent) for name in ("Label", "label"))
    return next((folder for folder in folders if folder.is_dir()), None)


def split_file_candidates(phase: int, benchmark: str, data_path: Path, label_path: Path) -> list[Path]:
    """Where the official split file of ``benchmark`` is looked for without ``--split-dir``, in order."""
    bases = (data_path.parent, data_path.parent.parent, label_path.parent)
    folders = dict.fromkeys(f for b in bases for f in (b, b / "Split", b / "split"))
    return [folder / name for folder in folders for name in SPLIT_NAMES[phase][benchmark]]


def _split_files(args: argparse.Namespace, phase: int, benchmarks: Sequence[str], label_path: Path) -> dict:
    """Benchmark -> its split file: ``--split-file``, else the first name of ``SPLIT_NAMES`` that exists."""
    explicit = dict(value.partition("=")[::2] for value in args.split_file)
    if bad := [v for v in args.split_file if v.partition("=")[0] not in ("xsub", "xview") or not v.partition("=")[2]]:
        raise DataGenError(f"--split-file expects xsub=PATH or xview=PATH, got {bad[0]!r}")
    chosen = {}
    for benchmark in benchmarks:
        names = SPLIT_NAMES[phase][benchmark]
        candidates = split_file_candidates(phase, benchmark, Path(args.data_path), label_path)
        candidates = [Path(args.split_dir) / name for name in names] if args.split_dir else candidates
        found = explicit.get(benchmark) or next((p for p in candidates if os.path.lexists(p)), None)
        if found is None:
            looked = f"looked for {' / '.join(names)} in {driver.preview(sorted({str(p.parent) for p in candidates}))}"
            flags = f"pass --split-dir DIR or --split-file {benchmark}=PATH"
            raise DataGenError(f"no {benchmark} split file found ({looked}); {flags}")
        chosen[benchmark] = Path(found)
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PKU-MMD skeletons and action labels -> normalised training tensors.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=sorted(DATASET_TO_PHASE), help="pku1 (phase 1) or pku2 (phase 2)")
    which.add_argument("--phase", type=int, choices=sorted(PHASES), help="1 or 2 (the same as --dataset pku1|pku2)")
    parser.add_argument("--data-path", "--data_path", dest="data_path", required=True, help="skeleton folder")
    parser.add_argument("--label-path", "--label_path", dest="label_path", help="label folder (default: found nearby)")
    parser.add_argument("--split-dir", help="folder holding the official split files (default: searched nearby)")
    parser.add_argument("--split-file", action="append", default=[], metavar="BENCHMARK=PATH", help="a split file")
    parser.add_argument("--benchmarks", nargs="+", choices=("xsub", "xview"), help="default: the dataset's")
    parser.add_argument("--long-clips", choices=LONG_CLIP_MODES, default="truncate", help="clips over 300 frames")
    parser.add_argument("--person-order", choices=PERSON_ORDERS, default="file", help="the two person slots' order")
    defaults, bad = [default_out_folder(d) for d in PHASES.values()], "unreadable or malformed files and intervals"
    cli.add_conversion_args(parser, out_defaults=defaults, what="skeleton files", bad=bad + " past the end of a file")
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    phase = args.phase or DATASET_TO_PHASE[args.dataset]
    dataset, data_path = PHASES[phase], Path(args.data_path)
    out = driver.check_out_folder(args.out_folder or default_out_folder(dataset))
    if not data_path.is_dir():
        raise DataGenError(f"skeleton folder {data_path} does not exist or is not a folder")
    label_path = Path(args.label_path) if args.label_path else find_label_folder(data_path)
    if label_path is None:
        raise DataGenError(f"no Label/ or label/ folder next to {data_path} or one level up; pass --label-path")
    if not label_path.is_dir():
        raise DataGenError(f"label folder {label_path} does not exist or is not a folder")
    benchmarks = tuple(dict.fromkeys(args.benchmarks or DATASETS[dataset]["benchmarks"]))
    split_files = _split_files(args, phase, benchmarks, label_path)
    clip = (args.long_clips, args.person_order)
    steps = plan(data_path, label_path, split_files, out, phase, clip, args.skip_bad)
    summary = driver.run(steps, workers=args.workers, skip_bad=args.skip_bad, progress=args.progress)
    if steps.files[LABEL_MAP_FILE] is not None:
        num_class = DATASETS[dataset]["num_class"]
        warnings.warn(f"action ids exceed {num_class}: renumbered in order, see {out / LABEL_MAP_FILE}", stacklevel=2)
    return summary.lines("video(s) or clip(s)", args.skip_bad)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.pku_gendata` functions.
    from data_gen.pku_gendata import main as _main

    sys.exit(_main())
