"""A pyskl 3D annotation pickle (``ntu60_3danno.pkl`` / ``ntu120_3danno.pkl``) -> the training tensors.

    python data_gen/pyskl_convert.py --annotation ntu60_3danno.pkl [--dataset auto|ntu60|ntu120]
        [--out-folder OUT] [--splits xsub xview] [--normalize agcn|none] [--workers N] [--skip-bad]

The pickle is a dict ``{'split': {'xsub_train': [frame_dir, ...], 'xsub_val': [...], ...},
'annotations': [{'frame_dir', 'label', 'total_frames', 'keypoint'}, ...]}`` with ``keypoint`` a
(M, T, V=25, C=3) array (pyskl stores float16) and ``label`` 0-based. Every benchmark with both a
``<b>_train`` and a ``<b>_val`` list is written, in the folder the training scripts read (xsub -> xsub,
xview -> xview, xset -> xsetup), with the same files as the raw NTU preparation
(``data_gen/ntu_gendata.py``): ``{train,val}_data_joint.npy`` float32 (N, 3, 300, 25, 2),
``{part}_label.pkl`` = (frame_dir + '.skeleton' names, labels as given), ``{part}_num_frame.npy``, and
the folder's ``manifest.json`` (``common.manifest``).
Samples are in sorted name order; sequences longer than 300 frames are cut to the first 300 (warned).

The pickle is read with ``common.safe_pickle``: only plain containers, numbers, strings and NumPy arrays
are accepted, so a crafted file cannot run code (it stops with a one-line error naming what it asked for).
Split names become folder names only when they are plain names (no '/', '\\' or '..').

Normalisation (``--normalize``): pyskl's keypoints are camera coordinates -- its ``ntu_preproc.py``
only selects, tracks and denoises bodies, drops frames without a body and trims empty frames at both
ends; pyskl centres and rotates at load time (``PreNormalize3D``). The default ``agcn`` therefore applies
what the raw preparation applies: persons ordered by motion energy, then the 2s-AGCN pre-normalisation
(``data_gen.normalize``). ``none`` stores the keypoints as they are (person order kept; only laid out,
zero-padded and cut), for pickles that were normalised already.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import safe_pickle
from common.constants import (
    DATASETS,
    NTU_DATASETS,
    NUM_COORDINATES,
    NUM_FRAMES,
    NUM_JOINTS,
    NUM_PERSONS,
    SAMPLE_SHAPE,
    default_out_folder,
)
from data_gen import cli
from data_gen.normalize import MAX_ABS_COORDINATE, normalize_sample, select_bodies
from data_gen.ntu_splits import SKELETON_SUFFIX
from data_gen.parallel import imap_ordered
from data_gen.skeleton_reader import COORDINATE_EXPECTED
from data_gen.writer import (
    DataGenError,
    PreparedSample,
    RunOutputs,
    check_path_component,
)

NORMALIZE_CHOICES = ("agcn", "none")
# pyskl benchmark name -> the folder the training scripts read
FOLDER_OF = {"xsub": "xsub", "xview": "xview", "xset": "xsetup", "xsetup": "xsetup"}
TOOL = "data_gen/pyskl_convert.py"
PART_SUFFIXES = {"train": ("_train",), "val": ("_val", "_test")}
ANNOTATION_HOLDS = "a pyskl annotation file holds dicts, lists, strings, numbers and NumPy arrays only"


def load_annotation_file(path: str | Path) -> dict[str, Any]:
    """The pickle's dict, checked for the two top-level keys and their types (DataGenError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise DataGenError(f"annotation file {path} does not exist")
    try:
        content = safe_pickle.load(path, ANNOTATION_HOLDS)
    except safe_pickle.RefusedPickle as error:
        raise DataGenError(str(error)) from None
    except Exception as error:  # a pickle can fail in many ways; all mean "not a pyskl file"
        raise DataGenError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DataGenError(f"{path}: expected a dict with keys 'split' and 'annotations', got {type(content).__name__}")
    missing = [key for key in ("split", "annotations") if key not in content]
    if missing:
        raise DataGenError(
            f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}; a pyskl annotation file "
            f"is a dict with 'split' and 'annotations' (found keys: {sorted(map(str, content))})"
        )
    split = content["split"]
    if not isinstance(split, dict) or not all(isinstance(v, (list, tuple)) for v in split.values()):
        raise DataGenError(f"{path}: 'split' must map split names to lists of frame_dir names")
    if not isinstance(content["annotations"], (list, tuple)):
        raise DataGenError(
            f"{path}: 'annotations' must be a list of dicts, got {type(content['annotations']).__name__}"
        )
    return content


def benchmarks_in(split: dict[str, Sequence[str]]) -> dict[str, tuple[str, str]]:
    """pyskl benchmark name -> (train split key, val split key), for every benchmark with both parts."""
    found: dict[str, tuple[str, str]] = {}
    for key in split:
        for suffix in PART_SUFFIXES["train"]:
            if key.endswith(suffix):
                name = key[: -len(suffix)]
                val = next((name + s for s in PART_SUFFIXES["val"] if name + s in split), None)
                if val is not None:
                    found[name] = (key, val)
    return found


def check_annotation(path: Path, index: int, anno: Any) -> tuple[str, int, np.ndarray]:
    """(frame_dir, label, keypoint) of annotation ``index``; DataGenError naming the field otherwise."""
    where = f"{path}: annotations[{index}]"
    if not isinstance(anno, dict):
        raise DataGenError(f"{where}: expected a dict, got {type(anno).__name__}")
    missing = [key for key in ("frame_dir", "label", "keypoint") if key not in anno]
    if missing:
        raise DataGenError(
            f"{where}: missing key(s) {', '.join(repr(k) for k in missing)} (found {sorted(map(str, anno))})"
        )
    name = anno["frame_dir"]
    if not isinstance(name, str) or not name:
        raise DataGenError(f"{where}: 'frame_dir' must be a non-empty string, got {name!r}")
    where = f"{path}: annotation {name!r}"
    label = anno["label"]
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise DataGenError(f"{where}: 'label' must be an integer, got {label!r}")
    keypoint = anno["keypoint"]
    if not isinstance(keypoint, np.ndarray) or keypoint.ndim != 4:
        shape = getattr(keypoint, "shape", None)
        raise DataGenError(
            f"{where}: 'keypoint' must be an array of shape (M, T, V, C), got "
            f"{type(keypoint).__name__}{'' if shape is None else ' of shape ' + str(shape)}"
        )
    m, t, v, c = keypoint.shape
    if c != NUM_COORDINATES:
        raise DataGenError(
            f"{where}: 'keypoint' has C={c} coordinates; a 3D annotation file (x, y, z) is needed "
            "(pyskl's *_3danno.pkl, not the 2D *_hrnet.pkl)"
        )
    if v != NUM_JOINTS:
        raise DataGenError(f"{where}: 'keypoint' has V={v} joints, expected {NUM_JOINTS} (Kinect v2 / NTU order)")
    if m < 1 or t < 1:
        raise DataGenError(f"{where}: 'keypoint' of shape {keypoint.shape} holds no person or no frame")
    total = anno.get("total_frames", t)
    if isinstance(total, (bool, np.bool_)) or not isinstance(total, (int, np.integer)) or total != t:
        raise DataGenError(f"{where}: 'total_frames' is {total} but 'keypoint' has {t} frames")
    if not np.issubdtype(keypoint.dtype, np.number) or np.iscomplexobj(keypoint):
        raise DataGenError(f"{where}: 'keypoint' must hold real numbers (dtype {keypoint.dtype})")
    # nan, inf, and values too large for float32 once normalised (compared in float64 whatever the dtype)
    bad = ~(np.abs(keypoint.astype(np.float64)) <= MAX_ABS_COORDINATE)
    if bad.any():
        raise DataGenError(
            f"{where}: 'keypoint' must hold {COORDINATE_EXPECTED}, found "
            f"{float(keypoint[tuple(np.argwhere(bad)[0])])!r} (dtype {keypoint.dtype})"
        )
    return name, int(label), keypoint


def convert_keypoint(keypoint: np.ndarray, normalize: str = "agcn") -> PreparedSample:
    """(M, T, 25, 3) pyskl keypoints -> one sample (data (3, 300, 25, 2) float32, frames kept <= 300).

    ``agcn``: the two most energetic persons, highest first, then the 2s-AGCN pre-normalisation;
    ``none``: the first two persons as given, laid out and zero-padded only.
    """
    bodies = np.asarray(keypoint, dtype=np.float64)  # (M, T, V, 3)
    num_frames = bodies.shape[1]
    if normalize == "agcn":
        selected = select_bodies(bodies, num_persons=NUM_PERSONS, max_frames=NUM_FRAMES)
        data = normalize_sample(selected)
    elif normalize == "none":
        data = np.zeros(SAMPLE_SHAPE, dtype=np.float32)
        kept = bodies[:NUM_PERSONS, :NUM_FRAMES]  # (M', T', V, 3)
        data[:, : kept.shape[1], :, : kept.shape[0]] = kept.transpose(3, 1, 2, 0)
    else:
        raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")
    return PreparedSample(data, min(num_frames, NUM_FRAMES), num_frames, bool(np.any(bodies[:, :NUM_FRAMES])))


def _convert_job(job: tuple[np.ndarray, str]) -> PreparedSample:
    return convert_keypoint(*job)


def _converted(jobs: Iterator[tuple[np.ndarray, str]], workers: int) -> Iterator[PreparedSample]:
    return imap_ordered(_convert_job, jobs, workers, chunksize=32)


def detect_dataset(split: dict[str, Sequence[str]], labels: Sequence[int]) -> str:
    """ntu120 when the pickle has the cross-setup benchmark or a label >= 60, else ntu60."""
    if any(key.startswith("xset") for key in split) or (len(labels) and max(labels) >= 60):
        return "ntu120"
    return "ntu60"


def convert(
    annotation: str | Path,
    out_folder: str | Path | None = None,
    *,
    dataset: str = "auto",
    splits: Sequence[str] | None = None,
    normalize: str = "agcn",
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, dict[str, int]], list]:
    """Convert the benchmarks ``splits`` (pyskl names; default all) of a pyskl 3D pickle.

    Returns (output folder, benchmark folder -> part -> samples written, skipped (name, reason) list).
    Raises DataGenError (one line, naming the file and the field) for bad input and outputs; nothing is
    written or replaced then.
    """
    path = Path(annotation)
    content = load_annotation_file(path)
    split = content["split"]
    chosen = _choose_benchmarks(path, split, splits)
    skipped: list[tuple[str, str]] = []
    by_name = _index_annotations(path, content["annotations"], skip_bad, skipped)
    if dataset == "auto":
        dataset = detect_dataset(split, [label for label, _ in by_name.values()])
    _check_labels(path, by_name, dataset)
    out_folder = Path(out_folder) if out_folder is not None else Path(default_out_folder(dataset))
    members = _members(path, split, chosen, by_name, skip_bad, skipped)
    result = _Conversion()
    # What determines the contents (not --workers, not where they are written): recorded in the manifests.
    arguments = {
        "annotation": str(path),
        "dataset": dataset,
        "splits": list(chosen),
        "normalize": normalize,
        "skip_bad": skip_bad,
    }
    with RunOutputs(out_folder, tool=TOOL, arguments=arguments) as out:
        for (folder_name, part), part_names in members.items():
            out.add_part((folder_name, part), folder_name, part, len(part_names))
        _write_samples(out, members, by_name, normalize=normalize, workers=workers, progress=progress, result=result)
        out.stage_skipped(skipped)
        written = out.commit()
    if result.cut:
        warnings.warn(
            f"{len(result.cut)} sequences longer than {NUM_FRAMES} frames were cut to the first "
            f"{NUM_FRAMES}: {', '.join(result.cut[:4])}{', ...' if len(result.cut) > 4 else ''}",
            stacklevel=2,
        )
    if result.empty:
        warnings.warn(
            f"{len(result.empty)} samples hold no body in any frame; stored as zeros: {', '.join(result.empty[:4])}",
            stacklevel=2,
        )
    return out_folder, written, skipped


def _choose_benchmarks(
    path: Path, split: dict[str, Sequence[str]], splits: Sequence[str] | None
) -> dict[str, tuple[str, str]]:
    """pyskl benchmark -> (train key, val key) of the benchmarks to write; each becomes a folder name."""
    available = benchmarks_in(split)
    if not available:
        raise DataGenError(
            f"{path}: 'split' has no <benchmark>_train / <benchmark>_val pair (keys: {sorted(map(str, split))})"
        )
    if splits:
        chosen = {}
        for name in dict.fromkeys(splits):
            key = next((b for b in available if b == name or FOLDER_OF.get(b) == FOLDER_OF.get(name, name)), None)
            if key is None:
                raise DataGenError(f"{path}: no benchmark {name!r}; it has {', '.join(sorted(available))}")
            chosen[key] = available[key]
    else:
        chosen = available
    for benchmark, (train_key, _) in chosen.items():
        check_path_component(FOLDER_OF.get(benchmark, benchmark), f"{path}: 'split' key {train_key!r}")
    return chosen


def _index_annotations(
    path: Path, annotations: Sequence[Any], skip_bad: bool, skipped: list[tuple[str, str]]
) -> dict[str, tuple[int, np.ndarray]]:
    """frame_dir -> (label, keypoint) of every well-formed annotation; a bad one is an error or skipped."""
    by_name: dict[str, tuple[int, np.ndarray]] = {}
    for index, anno in enumerate(annotations):
        try:
            name, label, keypoint = check_annotation(path, index, anno)
        except DataGenError as error:
            if not skip_bad:
                raise
            skipped.append(
                (
                    str(anno.get("frame_dir", f"annotations[{index}]"))
                    if isinstance(anno, dict)
                    else f"annotations[{index}]",
                    str(error),
                )
            )
            continue
        if name in by_name:
            raise DataGenError(f"{path}: frame_dir {name!r} appears in more than one annotation")
        by_name[name] = (label, keypoint)
    return by_name


def _check_labels(path: Path, by_name: dict[str, tuple[int, np.ndarray]], dataset: str) -> None:
    num_class = DATASETS[dataset]["num_class"]
    bad_labels = sorted(n for n, (label, _) in by_name.items() if not 0 <= label < num_class)
    if bad_labels:
        raise DataGenError(
            f"{path}: annotation {bad_labels[0]!r} has label {by_name[bad_labels[0]][0]}, outside "
            f"0..{num_class - 1} of {dataset} ({len(bad_labels)} such; pass --dataset)"
        )


def _members(
    path: Path,
    split: dict[str, Sequence[str]],
    chosen: dict[str, tuple[str, str]],
    by_name: dict[str, tuple[int, np.ndarray]],
    skip_bad: bool,
    skipped: list[tuple[str, str]],
) -> dict[tuple[str, str], set[str]]:
    """(folder name, part) -> the annotated names it holds; DataGenError for overlaps and empty parts."""
    members: dict[tuple[str, str], set[str]] = {}
    for benchmark, (train_key, val_key) in chosen.items():
        train, val = set(map(str, split[train_key])), set(map(str, split[val_key]))
        both = sorted(train & val)
        if both:
            raise DataGenError(f"{path}: {len(both)} names are in both {train_key!r} and {val_key!r}, e.g. {both[0]!r}")
        for part, key, names in (("train", train_key, train), ("val", val_key, val)):
            listed = f"'split'[{key!r}]"
            absent = sorted(names - set(by_name))
            if absent:
                if not skip_bad:
                    raise DataGenError(
                        f"{path}: {listed} names {len(absent)} frame_dir(s) without annotation, e.g. {absent[0]!r}"
                    )
                skipped.extend((n, f"{path}: listed in {listed} but has no annotation") for n in absent)
            folder_name = FOLDER_OF.get(benchmark, benchmark)
            members[folder_name, part] = names & set(by_name)
            if not members[folder_name, part]:
                why = "is empty" if not names else f"names {len(names)} frame_dir(s), all skipped as bad"
                raise DataGenError(f"{path}: no sample for {folder_name}/{part}: {listed} {why}; nothing was written")
    return members


@dataclass
class _Conversion:
    cut: list[str] = field(default_factory=list)  # sequences longer than NUM_FRAMES
    empty: list[str] = field(default_factory=list)  # samples without any body


def _write_samples(
    out: RunOutputs,
    members: dict[tuple[str, str], set[str]],
    by_name: dict[str, tuple[int, np.ndarray]],
    *,
    normalize: str,
    workers: int,
    progress: bool,
    result: _Conversion,
) -> None:
    """Convert every member in ``workers`` processes; append each sample to its parts, in name order."""
    names = sorted(set().union(*members.values()))
    samples = _converted(((by_name[n][1], normalize) for n in names), workers)
    try:
        for name, sample in tqdm(
            zip(names, samples), total=len(names), unit="sample", desc="pyskl_convert", disable=not progress
        ):
            if sample.file_frames > NUM_FRAMES:
                result.cut.append(name)
            if not sample.has_body:
                result.empty.append(name)
            keys = [key for key, part_names in members.items() if name in part_names]
            out.append(keys, name + SKELETON_SUFFIX, by_name[name][0], sample.data, sample.num_frame)
    finally:
        samples.close()  # stops the worker pool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="pyskl 3D annotation pickle (NTU 60/120) -> normalised training tensors in the layout of "
        "data_gen/ntu_gendata.py."
    )
    parser.add_argument(
        "--annotation",
        "--ann-file",
        dest="annotation",
        required=True,
        help="pyskl pickle, e.g. ntu60_3danno.pkl or ntu120_3danno.pkl",
    )
    parser.add_argument(
        "--dataset",
        choices=("auto", *NTU_DATASETS),
        default="auto",
        help="ntu60 or ntu120 (default auto: ntu120 when the pickle has xset splits or a label >= 60)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="NAME",
        help="benchmarks to convert, pyskl names (xsub xview xset) or ours (xsetup); "
        "default: every <b>_train/<b>_val pair in the pickle",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_CHOICES,
        default="agcn",
        help="agcn (default): order persons by motion energy and apply the 2s-AGCN "
        "pre-normalisation, as the raw NTU preparation does; none: keep the keypoints as given",
    )
    cli.add_conversion_args(
        parser,
        out_defaults=[default_out_folder(name) for name in NTU_DATASETS],
        workers_help="processes normalising samples",
        skip_help="skip malformed annotations and split names without annotation, listed in OUT/skipped_samples.txt",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def work() -> list[str]:
        out_folder, written, skipped = convert(
            args.annotation,
            args.out_folder,
            dataset=args.dataset,
            splits=args.splits,
            normalize=args.normalize,
            workers=args.workers,
            skip_bad=args.skip_bad,
            progress=args.progress,
        )
        return cli.summary_lines(out_folder, written, len(skipped), "annotation(s)", args.skip_bad)

    return cli.run_tool(parser.prog, work)


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.pyskl_convert` functions.
    from data_gen.pyskl_convert import main as _main

    sys.exit(_main())
