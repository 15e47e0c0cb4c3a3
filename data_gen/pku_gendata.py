"""PKU-MMD phase 1 / phase 2 skeletons -> the NTU tensor layout the training scripts read.

Input (as distributed by the dataset's authors, see docs/datasets.md#pku-mmd-phase-1-and-phase-2):

- skeleton folder: one text file per video (``0002-L.txt`` in phase 1, ``A01N01-L.txt`` in phase 2);
  one line per frame with 150 whitespace-separated floats: person 1's 25 joints as x1 y1 z1 ... x25 y25
  z25, then person 2's (all zeros when only one person is present);
- label folder: one file per video with the same name; one line per action instance
  ``action_id,start_frame,end_frame,confidence`` (action ids 1-based);
- split files: ``Training videos:`` then a comma-separated list of video ids, ``Validataion videos:``
  (sic) then another list; phase 1 ships ``cross-subject.txt`` and ``cross-view.txt``, phase 2
  ``cross_subject_v2.txt`` (and ``cross_view_v2.txt``).

Each labelled interval becomes one sample ``<video>_<iii>`` (iii = 0-based line index in the label
file): frames ``[start, end)`` of the video laid out as (3, T, 25, 2), padded to 300 frames and put
through the same pre-normalisation as NTU (``data_gen.normalize``). Output, per benchmark (xsub, and
xview for phase 1): ``OUT/<benchmark>/{train,val}_data_joint.npy`` (N, 3, 300, 25, 2) float32,
``{part}_label.pkl`` = (names, labels) with label = action_id - 1, ``{part}_num_frame.npy``, and the
folder's ``manifest.json`` (``common.manifest``).

Clips longer than 300 frames are resampled uniformly to 300 frames by default (``--long-clips
truncate`` keeps the first 300 instead, as the NTU preparation does); either way a warning says how
many. The videos are read once for all benchmarks, in ``--workers`` processes, and streamed to disk
through ``data_gen.writer``, as the NTU preparation does: the output folder is locked for the run, every
output is written under a temporary name of this run and renamed into place only once all of them are
complete, and a run that fails (bad input, a part without samples, a full disk, Ctrl-C) leaves the
previous outputs as they were. ``skipped_samples.txt`` and ``label_map.txt`` describe the last run only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.constants import (
    DATASETS,
    NUM_COORDINATES,
    NUM_FRAMES,
    NUM_JOINTS,
    NUM_PERSONS,
    VALUES_PER_FRAME,
    default_out_folder,
)
from data_gen import cli
from data_gen.normalize import MAX_ABS_COORDINATE, normalize_sample, select_bodies
from data_gen.parallel import imap_ordered
from data_gen.skeleton_reader import COORDINATE_EXPECTED
from data_gen.writer import DataGenError, PreparedSample, RunOutputs

LONG_CLIP_MODES = ("resample", "truncate")
LABEL_MAP_FILE = "label_map.txt"
TOOL = "data_gen/pku_gendata.py"


@dataclass(frozen=True)
class PhaseSpec:
    """What differs between the two phases: the dataset (in ``common.constants.DATASETS``: classes,
    benchmarks written by default, folder) and the split file names."""

    dataset: str
    # Split file names to look for, per benchmark, in the order tried.
    split_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def num_class(self) -> int:
        return DATASETS[self.dataset]["num_class"]

    @property
    def benchmarks(self) -> tuple[str, ...]:
        """The benchmarks written by default."""
        return DATASETS[self.dataset]["benchmarks"]

    @property
    def default_out(self) -> str:
        return default_out_folder(self.dataset)


PHASES: dict[int, PhaseSpec] = {
    1: PhaseSpec(
        dataset="pku1",
        split_names={"xsub": ("cross-subject.txt", "cross_subject.txt"), "xview": ("cross-view.txt", "cross_view.txt")},
    ),
    # Only the v2 names: phase 1's file must never be picked up for phase 2 by accident.
    2: PhaseSpec(
        dataset="pku2",
        split_names={
            "xsub": ("cross_subject_v2.txt", "cross-subject_v2.txt"),
            "xview": ("cross_view_v2.txt", "cross-view_v2.txt"),
        },
    ),
}
DATASET_TO_PHASE = {spec.dataset: phase for phase, spec in PHASES.items()}
# Every PKU-MMD action id lies in 1..51 (Actions.xlsx of phase 1 defines 51 ids).
MAX_ACTION_ID = 51


class PKUFormatError(ValueError):
    """A PKU-MMD input file does not have the documented format (the message names file and line)."""


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Interval:
    """One line of a label file."""

    action: int  # 1-based action id
    start: int  # first frame (0-based row of the skeleton file)
    end: int  # one past the last frame
    confidence: int
    line: int  # 1-based line number in the label file


def read_skeleton_file(path: str | os.PathLike) -> np.ndarray:
    """Frames of a skeleton file as a (T, 150) float32 array (rows = frames, in file order).

    Trailing blank lines are ignored; any other line must hold exactly 150 numbers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise PKUFormatError(f"{path}: cannot read skeleton file ({exc.strerror})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PKUFormatError(f"{path}: skeleton file holds no frame")
    counts = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    bad = np.flatnonzero(counts != VALUES_PER_FRAME)
    if bad.size:
        i = int(bad[0])
        raise PKUFormatError(
            f"{path}, line {i + 1}: expected {VALUES_PER_FRAME} numbers (2 persons x 25 joints x xyz), "
            f"found {counts[i]}"
        )
    try:
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused below with its line
            frames = np.array(" ".join(lines).split(), dtype=np.float32)
    except ValueError:
        for i, line in enumerate(lines):  # slow path, only to name the offending line
            try:
                np.array(line.split(), dtype=np.float32)
            except ValueError as exc:
                raise PKUFormatError(f"{path}, line {i + 1}: not a number ({exc})") from None
        raise
    frames = frames.reshape(len(lines), VALUES_PER_FRAME)
    # nan, inf, and values whose normalised float32 would not be finite
    bad = ~(np.abs(frames) <= MAX_ABS_COORDINATE)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise PKUFormatError(f"{path}, line {i + 1}: expected {COORDINATE_EXPECTED}, found {lines[i].split()[j]!r}")
    return frames


_INT_RE = re.compile(r"^[+-]?\d+$")


def read_label_file(path: str | os.PathLike, num_frames: int | None = None) -> list[Interval]:
    """Intervals of a label file, in file order.

    Each non-blank line is ``action_id,start,end,confidence`` (integers; spaces around commas are
    allowed). ``start``/``end`` are read as a half-open range of 0-based frame rows ``[start, end)``
    (the convention of the dataset's evaluation script, which measures an interval as ``end - start``).
    With ``num_frames`` given, an interval reaching past the skeleton file is an error.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise PKUFormatError(f"{path}: cannot read label file ({exc.strerror})") from None
    intervals: list[Interval] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        fields = [f.strip() for f in raw.strip().rstrip(",").split(",")]
        if len(fields) != 4 or not all(_INT_RE.match(f) for f in fields):
            raise PKUFormatError(
                f"{path}, line {number}: expected 'action_id,start_frame,end_frame,confidence' (4 integers), "
                f"got {raw.strip()!r}"
            )
        action, start, end, confidence = (int(f) for f in fields)
        if not 1 <= action <= MAX_ACTION_ID:
            raise PKUFormatError(f"{path}, line {number}: action id must lie in 1..{MAX_ACTION_ID}, got {action}")
        if start < 0 or end <= start:
            raise PKUFormatError(
                f"{path}, line {number}: interval [{start}, {end}) is empty or negative (need 0 <= start < end)"
            )
        if num_frames is not None and end > num_frames:
            raise PKUFormatError(
                f"{path}, line {number}: interval [{start}, {end}) reaches past the skeleton file, "
                f"which has {num_frames} frames"
            )
        intervals.append(Interval(action, start, end, confidence, number))
    return intervals


def _split_ids(text: str) -> list[str]:
    ids = []
    for token in re.split(r"[,\s]+", text):
        token = token.strip()
        if token.endswith(".txt"):
            token = token[: -len(".txt")]
        if token:
            ids.append(token)
    return ids


def read_split_file(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(training video ids, validation video ids) from an official split file.

    The file has a line starting with ``Training`` followed by the training ids, then a line starting
    with ``Valid`` (the official files spell it ``Validataion``) or ``Test`` followed by the other ids;
    ids are separated by commas and/or white space and may carry ``.txt``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PKUFormatError(f"{path}: cannot read split file ({exc.strerror})") from None
    match = re.search(
        r"^\s*training[^:\n]*:(?P<train>.*?)^\s*(?:valid|test)[^:\n]*:(?P<val>.*)\Z",
        text,
        flags=re.IGNORECASE | re.MULTILINE | re.DOTALL,
    )
    if match is None:
        raise PKUFormatError(
            f"{path}: expected a 'Training videos:' line and a 'Validataion videos:' (or 'Validation'/'Test') "
            "line, each followed by comma-separated video ids"
        )
    train, val = _split_ids(match["train"]), _split_ids(match["val"])
    if not train or not val:
        raise PKUFormatError(f"{path}: the {'training' if not train else 'validation'} list is empty")
    both = sorted(set(train) & set(val))
    if both:
        raise PKUFormatError(
            f"{path}: {len(both)} video ids are listed both for training and validation, e.g. {both[:3]}"
        )
    return train, val


def sample_name(video: str, index: int) -> str:
    """``0002-L`` and label line 3 (0-based, blank lines not counted) -> ``0002-L_003``.

    Sorting the names sorts by video, then by interval.
    """
    return f"{video}_{index:03d}"


def check_interval(path: str | os.PathLike, interval: Interval, num_frames: int) -> None:
    """PKUFormatError when ``interval`` (from label file ``path``) reaches past ``num_frames`` frames."""
    if interval.end > num_frames:
        raise PKUFormatError(
            f"{path}, line {interval.line}: interval [{interval.start}, {interval.end}) reaches past the skeleton "
            f"file, which has {num_frames} frames"
        )


# ---------------------------------------------------------------------------------------- clip layout


def frames_to_bodies(frames: np.ndarray) -> np.ndarray:
    """(T, 150) rows of a skeleton file -> (2, T, 25, 3) body slots (person, frame, joint, xyz)."""
    # A row is person-major, then joint, then xyz.
    return frames.reshape(frames.shape[0], NUM_PERSONS, NUM_JOINTS, NUM_COORDINATES).transpose(1, 0, 2, 3)


def fit_length(bodies: np.ndarray, max_frames: int = NUM_FRAMES, mode: str = "resample") -> np.ndarray:
    """(B, T, V, 3) with T > max_frames brought to max_frames frames; shorter sequences unchanged.

    ``resample`` keeps the whole action: frames ``round(i * (T - 1) / (max_frames - 1))``, i = 0..max_frames-1
    (the first and the last frame are kept); ``truncate`` keeps the first ``max_frames`` frames.
    """
    if mode not in LONG_CLIP_MODES:
        raise ValueError(f"long-clip mode must be one of {LONG_CLIP_MODES}, got {mode!r}")
    num_frames = bodies.shape[1]
    if num_frames <= max_frames:
        return bodies
    if mode == "truncate":
        return bodies[:, :max_frames]
    index = np.rint(np.linspace(0.0, num_frames - 1, max_frames)).astype(np.int64)
    return bodies[:, index]


def prepare_clip(frames: np.ndarray, start: int, end: int, long_clips: str = "resample") -> PreparedSample:
    """Rows [start, end) of a video -> one normalised sample (data (3, 300, 25, 2) float32).

    The two persons are ordered by motion energy and normalised exactly as an NTU sample
    (``data_gen.normalize.select_bodies`` then ``normalize_sample``).
    """
    bodies = fit_length(frames_to_bodies(frames[start:end]), NUM_FRAMES, long_clips)  # (2, T', 25, 3)
    selected = select_bodies(bodies, num_persons=NUM_PERSONS, max_frames=NUM_FRAMES)
    has_body = bool(np.any(selected))
    return PreparedSample(normalize_sample(selected), bodies.shape[1], end - start, has_body)


# ---------------------------------------------------------------------------------------- one video


@dataclass
class VideoResult:
    """What processing one video produced (sent back from a worker process)."""

    video: str
    clips: list[tuple[int, int, PreparedSample]] = field(default_factory=list)  # (interval index, action id, sample)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample name, reason)
    error: str | None = None  # set when the whole video is unusable


def process_video(
    video: str,
    skeleton_path: str | Path,
    label_path: str | Path,
    intervals: Sequence[Interval],
    long_clips: str = "resample",
    skip_bad: bool = False,
) -> VideoResult:
    """Read one video's skeleton file and turn each labelled interval into a normalised sample.

    A malformed skeleton file sets ``error``; so does an interval past the end of the file unless
    ``skip_bad`` (then it is listed in ``skipped``). An interval without any skeleton is always
    listed in ``skipped``: it holds no action to learn from.
    """
    result = VideoResult(video)
    try:
        frames = read_skeleton_file(skeleton_path)
    except PKUFormatError as error:
        result.error = str(error)
        return result
    for index, interval in enumerate(intervals):
        name = sample_name(video, index)
        try:
            check_interval(label_path, interval, len(frames))
        except PKUFormatError as error:
            if not skip_bad:
                result.error = str(error)
                return result
            result.skipped.append((name, str(error)))
            continue
        sample = prepare_clip(frames, interval.start, interval.end, long_clips)
        if not sample.has_body:
            result.skipped.append((name, f"{skeleton_path}: no skeleton in frames [{interval.start}, {interval.end})"))
            continue
        result.clips.append((index, interval.action, sample))
    return result


def _process_job(job: tuple) -> VideoResult:
    return process_video(*job)


def _processed(jobs: Sequence[tuple], workers: int) -> Iterator[VideoResult]:
    """Results in job order (the output does not depend on ``workers``), from ``workers`` processes."""
    # One video is about 20 samples of 180 kB: keep few in flight.
    return imap_ordered(_process_job, jobs, workers, chunksize=1, window=4)


# ---------------------------------------------------------------------------------------- inputs


def find_label_folder(data_path: Path) -> Path | None:
    """A ``Label``/``label`` folder next to the skeleton folder or one level up, if there is one."""
    for root in (data_path.parent, data_path.parent.parent):
        for name in ("Label", "label", "Labels", "labels"):
            if (root / name).is_dir():
                return root / name
    return None


def split_file_candidates(
    phase: int, benchmark: str, data_path: Path, label_path: Path, split_dir: Path | None
) -> list[Path]:
    """Where the official split file of ``benchmark`` is looked for, in order."""
    if split_dir is not None:
        folders = [split_dir]
    else:
        folders = []
        for base in (data_path.parent, data_path.parent.parent, label_path.parent):
            for folder in (base, base / "Split", base / "split"):
                if folder not in folders:
                    folders.append(folder)
    return [folder / name for folder in folders for name in PHASES[phase].split_names[benchmark]]


def label_mapping(action_ids: Iterable[int], num_class: int) -> tuple[dict[int, int], bool]:
    """Action id -> stored label, and whether the ids had to be renumbered.

    Ids within 1..num_class map to id - 1 (the documented numbering). If some id exceeds num_class
    but there are exactly num_class distinct ids (what a phase 2 release numbered with phase 1's ids
    would look like) they are renumbered 0..num_class-1 in increasing order; otherwise ValueError.
    """
    ids = sorted({int(a) for a in action_ids})
    if not ids or ids[-1] <= num_class:
        return {a: a - 1 for a in ids}, False
    if len(ids) == num_class:
        return {a: i for i, a in enumerate(ids)}, True
    raise ValueError(
        f"action ids {ids[0]}..{ids[-1]} ({len(ids)} distinct) cannot be mapped onto {num_class} "
        f"classes: expected ids within 1..{num_class}, or exactly {num_class} distinct ids"
    )


def _preview(items: Sequence[str], k: int = 4) -> str:
    items = list(items)
    return ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "")


# ---------------------------------------------------------------------------------------- the run


@dataclass
class Summary:
    """What a run did."""

    written: dict[str, dict[str, int]] = field(default_factory=dict)  # benchmark -> part -> samples
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video or sample name, reason)
    long: list[str] = field(default_factory=list)  # samples longer than 300 frames
    label_map: dict[int, int] = field(default_factory=dict)  # action id -> stored label
    renumbered: bool = False


def generate(
    data_path: str | Path,
    label_path: str | Path,
    split_files: dict[str, str | Path],
    out_folder: str | Path,
    *,
    phase: int,
    long_clips: str = "resample",
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> Summary:
    """Write every benchmark of ``split_files`` (benchmark -> official split file) from one pass over the videos.

    Raises DataGenError (one-line message naming the file, and the line where there is one) for bad
    inputs and outputs; nothing is written or replaced then.
    """
    data_path, label_path, out_folder = Path(data_path), Path(label_path), Path(out_folder)
    videos = _list_videos(data_path, label_path)
    splits = _read_splits(split_files, videos, data_path)
    wanted = [v for v in videos if any(v in train or v in val for train, val in splits.values())]
    summary = Summary()
    # Label files first (small): the intervals give the output sizes and the label numbering.
    intervals = _read_labels(wanted, videos, label_path, skip_bad, summary)
    try:
        summary.label_map, summary.renumbered = label_mapping(
            (iv.action for ivs in intervals.values() for iv in ivs), PHASES[phase].num_class
        )
    except ValueError as error:
        raise DataGenError(f"label files in {label_path}: {error}") from None
    sizes = _part_sizes(splits, split_files, intervals, summary)
    jobs = [
        (v, str(videos[v]), str(label_path / f"{v}.txt"), intervals[v], long_clips, skip_bad)
        for v in wanted
        if v in intervals
    ]
    # What determines the contents (not --workers, not where they are written): recorded in the manifests.
    arguments = {
        "data_path": str(data_path),
        "label_path": str(label_path),
        "split_files": {b: str(p) for b, p in split_files.items()},
        "phase": phase,
        "long_clips": long_clips,
        "skip_bad": skip_bad,
    }
    with RunOutputs(out_folder, tool=TOOL, arguments=arguments) as out:
        for (benchmark, part), size in sizes.items():
            out.add_part((benchmark, part), benchmark, part, size)
        _write_clips(out, jobs, splits, workers=workers, skip_bad=skip_bad, progress=progress, summary=summary)
        for benchmark, part in out.empty_parts():
            members = splits[benchmark][0 if part == "train" else 1]
            raise DataGenError(
                f"{split_files[benchmark]}: every clip of {benchmark}/{part} was skipped "
                f"({_first_reason(summary.skipped, members)}); nothing was written"
            )
        if summary.renumbered:
            out.stage_text(
                LABEL_MAP_FILE, "action_id\tlabel\n" + "".join(f"{a}\t{lab}\n" for a, lab in summary.label_map.items())
            )
        else:
            out.stage_removal(LABEL_MAP_FILE)  # a map from an earlier run would not describe these labels
        out.stage_skipped(summary.skipped)
        summary.written = out.commit()
    _warn_after_run(summary, long_clips, PHASES[phase].num_class, out_folder)
    return summary


def _list_videos(data_path: Path, label_path: Path) -> dict[str, Path]:
    """Video id -> skeleton file, in sorted order."""
    for folder, what in ((data_path, "skeleton"), (label_path, "label")):
        if not folder.is_dir():
            raise DataGenError(f"{what} folder {folder} does not exist or is not a folder")
    videos = {p.stem: p for p in sorted(data_path.iterdir()) if p.suffix.lower() == ".txt" and p.is_file()}
    if not videos:
        raise DataGenError(f"skeleton folder {data_path} holds no <video>.txt files")
    return videos


def _read_splits(
    split_files: dict[str, str | Path], videos: dict[str, Path], data_path: Path
) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Benchmark -> (training ids, validation ids); warns about listed videos without a file and the reverse."""
    splits: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for benchmark, path in split_files.items():
        try:
            train, val = read_split_file(path)
        except PKUFormatError as error:
            raise DataGenError(str(error)) from None
        splits[benchmark] = (frozenset(train), frozenset(val))
        missing = sorted((set(train) | set(val)) - set(videos))
        if missing:
            warnings.warn(
                f"{path}: {len(missing)} listed videos have no skeleton file in {data_path}: {_preview(missing)}",
                stacklevel=2,
            )
        unlisted = sorted(set(videos) - set(train) - set(val))
        if unlisted:
            warnings.warn(
                f"{path}: {len(unlisted)} videos of {data_path} are in neither list, left out of "
                f"{benchmark}: {_preview(unlisted)}",
                stacklevel=2,
            )
    return splits


def _read_labels(
    wanted: Sequence[str], videos: dict[str, Path], label_path: Path, skip_bad: bool, summary: Summary
) -> dict[str, list[Interval]]:
    """Video -> its label file's intervals; a missing or malformed file is an error, or skipped with ``skip_bad``."""
    intervals: dict[str, list[Interval]] = {}
    for video in wanted:
        path = label_path / f"{video}.txt"
        try:
            if not path.is_file():
                raise PKUFormatError(f"{path}: label file of {videos[video]} not found")
            intervals[video] = read_label_file(path)
        except PKUFormatError as error:
            if not skip_bad:
                raise DataGenError(str(error)) from None
            summary.skipped.append((video, str(error)))
    return intervals


def _first_reason(skipped: Sequence[tuple[str, str]], members: frozenset[str]) -> str:
    """The first skip reason of a video in ``members`` (entries name a video or a ``<video>_<iii>`` sample)."""
    for name, reason in skipped:
        if name in members or name.rsplit("_", 1)[0] in members:
            return f"first: {reason}"
    return "no reason recorded"


def _part_sizes(
    splits: dict[str, tuple[frozenset[str], frozenset[str]]],
    split_files: dict[str, str | Path],
    intervals: dict[str, list[Interval]],
    summary: Summary,
) -> dict[tuple[str, str], int]:
    """(benchmark, part) -> labelled intervals of its videos; DataGenError naming a part without any."""
    sizes: dict[tuple[str, str], int] = {}
    for benchmark, (train, val) in splits.items():
        for part, members in (("train", train), ("val", val)):
            size = sum(len(intervals[v]) for v in intervals if v in members)
            if size == 0:
                skipped = _first_reason(summary.skipped, members)
                why = "" if skipped == "no reason recorded" else f" ({skipped})"
                raise DataGenError(
                    f"{split_files[benchmark]}: no labelled interval for {benchmark}/{part}: none of "
                    f"its {len(members)} videos has a skeleton file and a label file with a line"
                    f"{why}; nothing was written"
                )
            sizes[benchmark, part] = size
    return sizes


def _write_clips(
    out: RunOutputs,
    jobs: Sequence[tuple],
    splits: dict[str, tuple[frozenset[str], frozenset[str]]],
    *,
    workers: int,
    skip_bad: bool,
    progress: bool,
    summary: Summary,
) -> None:
    """Process the videos in ``workers`` processes; append each clip to the parts of its video, in job order."""
    results = _processed(jobs, workers)
    try:
        for result in tqdm(results, total=len(jobs), unit="video", desc="pku_gendata", disable=not progress):
            if result.error is not None:
                if not skip_bad:
                    raise DataGenError(result.error)
                summary.skipped.append((result.video, result.error))
                continue
            summary.skipped.extend(result.skipped)
            keys = [
                (benchmark, "train" if result.video in train else "val")
                for benchmark, (train, val) in splits.items()
                if result.video in train | val
            ]
            for index, action, sample in result.clips:
                name = sample_name(result.video, index)
                if sample.file_frames > NUM_FRAMES:
                    summary.long.append(name)
                out.append(keys, name, summary.label_map[action], sample.data, sample.num_frame)
    finally:
        results.close()  # stops the worker pool


def _warn_after_run(summary: Summary, long_clips: str, num_class: int, out_folder: Path) -> None:
    if summary.long:
        verb = "resampled" if long_clips == "resample" else "cut"
        warnings.warn(
            f"{len(summary.long)} clips longer than {NUM_FRAMES} frames were {verb} to {NUM_FRAMES} "
            f"(--long-clips {long_clips}): {_preview(summary.long)}",
            stacklevel=2,
        )
    if summary.renumbered:
        warnings.warn(
            f"action ids exceed {num_class}: renumbered in increasing order, see {out_folder / LABEL_MAP_FILE}",
            stacklevel=2,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="PKU-MMD skeletons and action labels -> normalised training tensors per official benchmark "
        "(the layout and preprocessing of the NTU preparation)."
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=sorted(DATASET_TO_PHASE), help="pku1 (phase 1) or pku2 (phase 2)")
    which.add_argument("--phase", type=int, choices=sorted(PHASES), help="1 or 2 (the same as --dataset pku1|pku2)")
    parser.add_argument(
        "--data-path",
        "--data_path",
        dest="data_path",
        required=True,
        help="skeleton folder: one <video>.txt per video, 150 numbers a line",
    )
    parser.add_argument(
        "--label-path",
        "--label_path",
        dest="label_path",
        help="label folder: one <video>.txt per video, 'action,start,end,confidence' a line "
        "(default: a Label/ or label/ folder next to the skeleton folder or one level up)",
    )
    parser.add_argument(
        "--split-dir",
        dest="split_dir",
        help="folder holding the official split files (default: searched next to the skeleton "
        "and label folders, one level up, and in Split/ subfolders)",
    )
    parser.add_argument(
        "--split-file",
        dest="split_file",
        action="append",
        default=[],
        metavar="BENCHMARK=PATH",
        help="the split file of one benchmark, e.g. xsub=/data/pku/Split/cross-subject.txt "
        "(repeatable; wins over --split-dir)",
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        choices=("xsub", "xview"),
        help="benchmarks to write (default: xsub xview for phase 1, xsub for phase 2)",
    )
    parser.add_argument(
        "--long-clips",
        dest="long_clips",
        choices=LONG_CLIP_MODES,
        default="resample",
        help="clips longer than 300 frames: resample them uniformly to 300 (default) or keep the first 300",
    )
    cli.add_conversion_args(
        parser,
        out_defaults=[spec.default_out for spec in PHASES.values()],
        workers_help="processes reading skeleton files",
        skip_help="skip malformed files and intervals past the end of their file, listed in "
        "OUT/skipped_samples.txt, instead of stopping",
    )
    return parser


def _resolve_split_files(
    parser: argparse.ArgumentParser, args: argparse.Namespace, phase: int, benchmarks: Sequence[str], label_path: Path
) -> dict[str, Path]:
    explicit: dict[str, Path] = {}
    for value in args.split_file:
        benchmark, sep, path = value.partition("=")
        if not sep or benchmark not in ("xsub", "xview") or not path:
            parser.error(f"--split-file expects xsub=PATH or xview=PATH, got {value!r}")
        explicit[benchmark] = Path(path)
    chosen: dict[str, Path] = {}
    for benchmark in benchmarks:
        if benchmark in explicit:
            if not explicit[benchmark].is_file():
                raise DataGenError(f"split file {explicit[benchmark]} (--split-file {benchmark}=...) does not exist")
            chosen[benchmark] = explicit[benchmark]
            continue
        split_dir = Path(args.split_dir) if args.split_dir else None
        candidates = split_file_candidates(phase, benchmark, Path(args.data_path), label_path, split_dir)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataGenError(
                f"no {benchmark} split file found (looked for {' / '.join(PHASES[phase].split_names[benchmark])} in "
                f"{_preview(sorted({str(p.parent) for p in candidates}))}); pass --split-dir DIR or "
                f"--split-file {benchmark}=PATH"
            )
        chosen[benchmark] = found
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    phase = args.phase if args.phase is not None else DATASET_TO_PHASE[args.dataset]
    spec = PHASES[phase]
    benchmarks = tuple(dict.fromkeys(args.benchmarks or spec.benchmarks))
    unknown = [b for b in benchmarks if b not in spec.split_names]
    if unknown:
        parser.error(f"--benchmarks {' '.join(unknown)}: phase {phase} has {' '.join(spec.split_names)}")
    out_folder = Path(args.out_folder or spec.default_out)

    def work() -> list[str]:
        label_path = _label_folder(args)
        split_files = _resolve_split_files(parser, args, phase, benchmarks, label_path)
        summary = generate(
            args.data_path,
            label_path,
            split_files,
            out_folder,
            phase=phase,
            long_clips=args.long_clips,
            workers=args.workers,
            skip_bad=args.skip_bad,
            progress=args.progress,
        )
        return cli.summary_lines(out_folder, summary.written, len(summary.skipped), "video(s)/sample(s)", args.skip_bad)

    return cli.run_tool(parser.prog, work)


def _label_folder(args: argparse.Namespace) -> Path:
    """--label-path, or the label folder found next to the skeleton folder; DataGenError otherwise."""
    if not Path(args.data_path).is_dir():
        raise DataGenError(f"skeleton folder {args.data_path} does not exist or is not a folder")
    if args.label_path:
        return Path(args.label_path)
    label_path = find_label_folder(Path(args.data_path))
    if label_path is None:
        raise DataGenError(f"no Label/ or label/ folder next to {args.data_path} or one level up; pass --label-path")
    return label_path


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.pku_gendata` functions.
    from data_gen.pku_gendata import main as _main

    sys.exit(_main())
