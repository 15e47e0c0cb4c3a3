"""Prepared split folders -> a pyskl / MMAction2 3D annotation pickle (the layout of ``ntu60_3danno.pkl``).

    python data_gen/pyskl_export.py --data-root ROOT --dataset ntu60 --benchmark xsub [xview ...] --out FILE.pkl

``{'split': {'xsub_train': [frame_dir, ...], ...}, 'annotations': [{'frame_dir', 'label', 'total_frames',
'keypoint'}, ...]}``: each benchmark adds its ``_train`` and ``_val`` lists (our xsetup is pyskl's
``xset``), a clip in several benchmarks is stored once; ``keypoint`` holds the clip's real frames as (M,
T, 25, 3), M = 1 when the second person is absent throughout (pyskl lists present bodies only).
``pyskl_convert.py --normalize none`` reads it back exactly (real frames; zeros after). The pickle is
built in memory, as pickles are: about the size of the real frames of every clip.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from common.constants import DATASETS, PARTS, PYSKL_FOLDERS
from common.io import atomic_write, check_output_file
from data_gen import cli
from data_gen.ctrgcn_npz import Part, benchmark_folder, open_part, split_folder
from data_gen.ntu_splits import strip_suffix
from data_gen.writer import DataGenError

PYSKL_PREFIX = {folder: prefix for prefix, folder in PYSKL_FOLDERS.items()}  # our folder -> pyskl's, where they differ
PICKLE_PROTOCOL = 4  # readable by every Python 3 that pyskl and MMAction2 support
DTYPES = ("float32", "float16")


def clip_keypoint(clip: np.ndarray, num_frame: int, dtype: str = "float32") -> np.ndarray:
    """(3, T, 25, 2) clip -> (M, num_frame, 25, 3) keypoints; persons after the first that are all zero dropped."""
    frames = np.asarray(clip[:, :num_frame], dtype=np.float32)  # (3, n, 25, 2)
    persons = np.transpose(frames, (3, 1, 2, 0))  # (2, n, 25, 3)
    keep = [0] + [m for m in range(1, persons.shape[0]) if np.any(persons[m])]
    return np.ascontiguousarray(persons[keep], dtype=dtype)


def _part_annotations(part: Part, dtype: str, bar: tqdm) -> dict[str, dict[str, Any]]:
    """frame_dir -> annotation for every clip of one part."""
    out = {}
    for i, name in enumerate(part.names):
        n = int(part.num_frame[i])
        if n < 1:
            needs = "a pyskl annotation needs at least one"
            raise DataGenError(f"{part.path}: sample {i} ({name}) has no frame (num_frame 0); {needs}")
        keypoint = clip_keypoint(part.data[i], n, dtype)
        if not np.isfinite(keypoint).all():
            raise DataGenError(f"{part.path}: sample {i} ({name}) holds NaN or infinite values")
        frame_dir = strip_suffix(name)
        out[frame_dir] = {"frame_dir": frame_dir, "label": int(part.labels[i]), "total_frames": n, "keypoint": keypoint}
        bar.update(1)
    return out


def _merge(into: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], where: str) -> None:
    """Add ``new`` annotations; a name already present must carry the same label and keypoints."""
    for name, anno in new.items():
        old = into.setdefault(name, anno)
        same = old["label"] == anno["label"] and old["keypoint"].shape == anno["keypoint"].shape
        if old is not anno and not (same and np.array_equal(old["keypoint"], anno["keypoint"])):
            differs = "differs from the sample of that name in another benchmark (label or keypoints)"
            raise DataGenError(f"{where}: sample {name!r} {differs}; one pickle holds one clip per name")


def build_content(
    data_root: str | os.PathLike, dataset: str, benchmarks: Sequence[str], dtype: str, progress: bool
) -> dict:
    """The pickle's dict for ``benchmarks`` of ``dataset`` under ``data_root``; DataGenError for bad input."""
    folders = {benchmark_folder(dataset, b): split_folder(data_root, dataset, b) for b in benchmarks}
    parts = {(folder_name, part): open_part(folder, part) for folder_name, folder in folders.items() for part in PARTS}
    num_class = DATASETS[dataset]["num_class"]
    split: dict[str, list[str]] = {}
    annotations: dict[str, dict[str, Any]] = {}
    total = sum(len(p.names) for p in parts.values())
    with tqdm(total=total, unit="clip", desc="pyskl_export", disable=not progress) as bar:
        for (folder_name, part_name), part in parts.items():
            if part.labels.size and part.labels.max() >= num_class:
                outside = f"is outside 0..{num_class - 1} (the classes of {dataset})"
                raise DataGenError(f"{part.label_path}: label {part.labels.max()} {outside}")
            prefix = PYSKL_PREFIX.get(folder_name, folder_name)
            split[f"{prefix}_{part_name}"] = [strip_suffix(n) for n in part.names]
            _merge(annotations, _part_annotations(part, dtype, bar), str(part.path))
    return {"split": split, "annotations": [annotations[name] for name in sorted(annotations)]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Prepared split folders -> one pyskl / MMAction2 pickle.")
    cli.add_split_folder_args(parser)
    which = "one or more of the dataset's benchmarks (xsub xview; xsub xsetup for ntu120)"
    parser.add_argument("--benchmark", "--benchmarks", dest="benchmarks", nargs="+", required=True, help=which)
    parser.add_argument("--out", required=True, help="the pickle to write, e.g. ntu60_3danno.pkl")
    dtype = "keypoint dtype (default float32: exact; pyskl uses float16)"
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help=dtype)
    cli.add_progress_arg(parser)
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    out = check_output_file(args.out, "--out")
    content = build_content(args.data_root, args.dataset, args.benchmarks, args.dtype, args.progress)
    atomic_write(out, lambda f: pickle.dump(content, f, protocol=PICKLE_PROTOCOL))
    counts = ", ".join(f"{key} {len(names)}" for key, names in content["split"].items())
    return [f"{out}: {len(content['annotations'])} annotations; {counts}"]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
