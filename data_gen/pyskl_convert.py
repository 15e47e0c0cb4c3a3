"""A pyskl 3D annotation pickle (``python data_gen/pyskl_convert.py --annotation ntu60_3danno.pkl``) -> the
training tensors. ``{'split': {'xsub_train': [frame_dir, ...], ...}, 'annotations': [{'frame_dir', 'label',
'total_frames', 'keypoint' (M, T, 25, 3)}, ...]}``, read with ``common.safe_pickle`` (never code). Every
benchmark with one ``<b>_train`` and one ``<b>_val`` (or ``_test``) list is written into the folder the
training scripts read (xset -> xsetup). pyskl's keypoints are camera coordinates, so ``--normalize agcn``
(default) applies what the raw preparation does; ``none`` stores them as given.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import safe_pickle
from common.constants import (
    DATASETS,
    NTU_DATASETS,
    NUM_COORDINATES,
    NUM_FRAMES,
    NUM_JOINTS,
    PARTS,
    PYSKL_FOLDERS,
    default_out_folder,
)
from data_gen import cli
from data_gen.driver import Job, Plan, Sample, check_input, check_out_folder, refuse_or_skip, run
from data_gen.normalize import MAX_ABS_COORDINATE, layout, normalize_sample, select_bodies
from data_gen.ntu_splits import SKELETON_SUFFIX
from data_gen.skeleton_reader import COORDINATE_EXPECTED
from data_gen.writer import DataGenError

NORMALIZE_CHOICES = ("agcn", "none")
TOOL = "data_gen/pyskl_convert.py"
ANNOTATION_HOLDS = "a pyskl annotation file holds dicts, lists, strings, numbers and NumPy arrays only"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def load_annotation_file(path: Path) -> dict[str, Any]:
    """The pickle's dict, checked for the two top-level keys and their types (DataGenError otherwise)."""
    path = check_input(path, "annotation file")
    try:
        content = safe_pickle.load(path, ANNOTATION_HOLDS)
    except safe_pickle.RefusedPickle as error:
        raise DataGenError(str(error)) from None
    except Exception as error:  # a pickle can fail in many ways; all mean "not a pyskl file"
        raise DataGenError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DataGenError(f"{path}: expected a dict with keys 'split' and 'annotations', got {type(content).__name__}")
    if missing := [key for key in ("split", "annotations") if key not in content]:
        found = f"found keys: {sorted(map(str, content))}"
        raise DataGenError(f"{path}: missing key(s) {', '.join(map(repr, missing))}; a pyskl annotation file is "
                           f"a dict with 'split' and 'annotations' ({found})")  # fmt: skip
    split, annotations = content["split"], content["annotations"]
    if not isinstance(split, dict) or not all(isinstance(v, (list, tuple)) for v in split.values()):
        raise DataGenError(f"{path}: 'split' must map split names to lists of frame_dir names")
    if not isinstance(annotations, (list, tuple)):
        raise DataGenError(f"{path}: 'annotations' must be a list of dicts, got {type(annotations).__name__}")
    return content


def benchmarks_in(path: Path, split: dict[str, Sequence[str]]) -> dict[str, tuple[str, str]]:
    """Folder -> (train key, val key) of every benchmark with both parts; two keys for one part, two
    benchmarks for one folder, or a folder name that is not a plain name are refused."""
    found: dict[str, tuple[str, str]] = {}
    for key in (k for k in map(str, split) if k.endswith("_train")):
        name = key.removesuffix("_train")
        vals = [name + s for s in ("_val", "_test") if name + s in split]
        folder = PYSKL_FOLDERS.get(name, name)
        problem = {
            f"has both {vals[0]!r} and {vals[-1]!r}; which one is {name}'s test part?": len(vals) > 1,
            f"keys {found.get(folder, ('',))[0]!r} and {key!r} are both the benchmark {folder}": folder in found,
            f"key {key!r}: {folder!r} cannot be a folder name (letters, digits, '_' and '-' only)": not _NAME.fullmatch(
                folder
            ),
        }
        for message in (m for m, bad in problem.items() if bad and vals):
            raise DataGenError(f"{path}: 'split' {message}")
        found.update({folder: (key, vals[0])} if vals else {})
    if not found:
        keys = sorted(map(str, split))
        raise DataGenError(f"{path}: 'split' has no <benchmark>_train / <benchmark>_val pair (keys: {keys})")
    return found


def check_annotation(path: Path, index: int, anno: Any) -> tuple[str, int, np.ndarray]:
    """(frame_dir, label, keypoint) of annotation ``index``; DataGenError naming the field otherwise."""
    where = f"{path}: annotations[{index}]"
    if not isinstance(anno, dict):
        raise DataGenError(f"{where}: expected a dict, got {type(anno).__name__}")
    missing = [key for key in ("frame_dir", "label", "keypoint") if key not in anno]
    if missing:
        raise DataGenError(f"{where}: missing key(s) {', '.join(map(repr, missing))} (found {sorted(map(str, anno))})")
    name, label, keypoint = anno["frame_dir"], anno["label"], anno["keypoint"]
    if not isinstance(name, str) or not name:
        raise DataGenError(f"{where}: 'frame_dir' must be a non-empty string, got {name!r}")
    where = f"{path}: annotation {name!r}"
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise DataGenError(f"{where}: 'label' must be an integer, got {label!r}")
    if not isinstance(keypoint, np.ndarray) or keypoint.ndim != 4:
        shape = getattr(keypoint, "shape", None)
        got = type(keypoint).__name__ + ("" if shape is None else f" of shape {shape}")
        raise DataGenError(f"{where}: 'keypoint' must be an array of shape (M, T, V, C), got {got}")
    m, t, v, c = keypoint.shape
    if c != NUM_COORDINATES:
        needed = "a 3D annotation file (x, y, z) is needed (pyskl's *_3danno.pkl, not the 2D *_hrnet.pkl)"
        raise DataGenError(f"{where}: 'keypoint' has C={c} coordinates; {needed}")
    if v != NUM_JOINTS:
        raise DataGenError(f"{where}: 'keypoint' has V={v} joints, expected {NUM_JOINTS} (Kinect v2 / NTU order)")
    if m < 1 or t < 1:
        raise DataGenError(f"{where}: 'keypoint' of shape {keypoint.shape} holds no person or no frame")
    total = anno.get("total_frames", t)
    if isinstance(total, (bool, np.bool_)) or not isinstance(total, (int, np.integer)) or total != t:
        raise DataGenError(f"{where}: 'total_frames' is {total} but 'keypoint' has {t} frames")
    if not np.issubdtype(keypoint.dtype, np.number) or np.iscomplexobj(keypoint):
        raise DataGenError(f"{where}: 'keypoint' must hold real numbers (dtype {keypoint.dtype})")
    bad = ~(np.abs(keypoint.astype(np.float64)) <= MAX_ABS_COORDINATE)  # nan, inf, too large once normalised
    if bad.any():
        found = f"found {float(keypoint[tuple(np.argwhere(bad)[0])])!r} (dtype {keypoint.dtype})"
        raise DataGenError(f"{where}: 'keypoint' must hold {COORDINATE_EXPECTED}, {found}")
    return name, int(label), keypoint


def convert_keypoint(keypoint: np.ndarray, normalize: str = "agcn") -> np.ndarray:
    """(M, T, 25, 3) keypoints -> one clip (3, 300, 25, 2) float32: ``agcn`` the two most energetic persons,
    then the 2s-AGCN pre-normalisation; ``none`` the first two persons as given, laid out only."""
    bodies = np.asarray(keypoint, dtype=np.float64)
    return normalize_sample(select_bodies(bodies)) if normalize == "agcn" else layout(bodies)


def _convert_job(payload: tuple[str, int, np.ndarray, str]) -> list[Sample]:
    name, label, keypoint, normalize = payload
    data, frames = convert_keypoint(keypoint, normalize), keypoint.shape[1]
    return [Sample(name + SKELETON_SUFFIX, label, data, min(frames, NUM_FRAMES), frames)]


def detect_dataset(split: dict[str, Sequence[str]], labels: Sequence[int]) -> str:
    """ntu120 when the pickle has the cross-setup benchmark or a label >= 60, else ntu60."""
    if any(str(key).startswith("xset") for key in split) or (len(labels) and max(labels) >= 60):
        return "ntu120"
    return "ntu60"


def _index(path: Path, annotations: Sequence[Any], skip_bad: bool, skipped: list) -> dict[str, tuple[int, np.ndarray]]:
    """frame_dir -> (label, keypoint) of every well-formed annotation; a bad one is an error or skipped."""
    by_name: dict[str, tuple[int, np.ndarray]] = {}
    for index, anno in enumerate(annotations):
        try:
            name, label, keypoint = check_annotation(path, index, anno)
        except DataGenError as error:
            key = anno.get("frame_dir") if isinstance(anno, dict) else None
            refuse_or_skip(skip_bad, skipped, str(key) if key else f"annotations[{index}]", str(error))
            continue
        if name in by_name:
            raise DataGenError(f"{path}: frame_dir {name!r} appears in more than one annotation")
        by_name[name] = (label, keypoint)
    return by_name


def plan(args: argparse.Namespace) -> Plan:
    """One job per annotation of a chosen benchmark, in sorted name order."""
    path, skipped = Path(args.annotation), []
    if args.out_folder:
        check_out_folder(args.out_folder)
    content = load_annotation_file(path)
    split, available = content["split"], benchmarks_in(path, content["split"])
    unknown = [name for name in args.splits or () if PYSKL_FOLDERS.get(name, name) not in available]
    if unknown:
        raise DataGenError(f"{path}: no benchmark {unknown[0]!r}; it has {', '.join(sorted(available))}")
    chosen = {f: available[f] for f in (PYSKL_FOLDERS.get(n, n) for n in args.splits)} if args.splits else available
    by_name = _index(path, content["annotations"], args.skip_bad, skipped)
    dataset = detect_dataset(split, [lab for lab, _ in by_name.values()]) if args.dataset == "auto" else args.dataset
    num_class = DATASETS[dataset]["num_class"]
    if outside := sorted(n for n, (label, _) in by_name.items() if not 0 <= label < num_class):
        of = f"outside 0..{num_class - 1} of {dataset} ({len(outside)} such; pass --dataset)"
        raise DataGenError(f"{path}: annotation {outside[0]!r} has label {by_name[outside[0]][0]}, {of}")
    parts_of: dict[str, list[tuple[str, str]]] = {}
    for folder, keys in chosen.items():
        members = [set(map(str, split[key])) for key in keys]
        both = sorted(members[0] & members[1])
        if both:
            raise DataGenError(f"{path}: {len(both)} names are in both {keys[0]!r} and {keys[1]!r}, e.g. {both[0]!r}")
        for part, key, names in zip(PARTS, keys, members):
            for name in sorted(names - set(by_name)):
                absent = f"{path}: {name!r} is listed in 'split'[{key!r}] but has no annotation"
                refuse_or_skip(args.skip_bad, skipped, name, absent)
            for name in names & set(by_name):
                parts_of.setdefault(name, []).append((folder, part))
    jobs = [Job(n, tuple(parts_of[n]), 1, (n, *by_name[n], args.normalize)) for n in sorted(parts_of)]
    # What determines the contents (not --workers, not where they are written): recorded in the manifests.
    splits = [k[0][: -len("_train")] for k in chosen.values()]
    arguments = {"annotation": str(path), "dataset": dataset, "splits": splits, "normalize": args.normalize}
    arguments["skip_bad"] = args.skip_bad
    out = Path(args.out_folder or default_out_folder(dataset))
    parts = [(folder, part) for folder in chosen for part in PARTS]
    return Plan(out, TOOL, arguments, str(path), parts, jobs, _convert_job, skipped, chunksize=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="pyskl 3D annotation pickle (NTU 60/120) -> training tensors.")
    parser.add_argument("--annotation", "--ann-file", dest="annotation", required=True, help="the pyskl pickle")
    auto = "default auto: ntu120 when the pickle has xset splits or a label >= 60"
    parser.add_argument("--dataset", choices=("auto", *NTU_DATASETS), default="auto", help=auto)
    parser.add_argument("--splits", nargs="+", metavar="NAME", help="benchmarks to convert (default: all)")
    what = "agcn: the 2s-AGCN pre-normalisation; none: keypoints as given"
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="agcn", help=what)
    defaults, bad = [default_out_folder(name) for name in NTU_DATASETS], "malformed annotations and split names"
    cli.add_conversion_args(parser, out_defaults=defaults, what="samples", bad=bad + " without annotation")
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    summary = run(plan(args), workers=args.workers, skip_bad=args.skip_bad, progress=args.progress)
    return summary.lines("annotation(s)", args.skip_bad)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    # Re-enter through the package so worker processes pickle `data_gen.pyskl_convert` functions.
    from data_gen.pyskl_convert import main as _main

    sys.exit(_main())
