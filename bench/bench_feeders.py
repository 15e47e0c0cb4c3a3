"""Per-item cost of the datasets vs a reference-style feeder, same memory-mapped file, same run.

The baseline does what the reference's feeders do per item (fmthoker/skeleton-contrast, feeder/):
copy the whole padded clip out of the map, crop-resize each view with ``torch.nn.functional.interpolate``
on a (1, C*V*M, length, 1) tensor, shear or corrupt with ``np.dot`` on transposed float64 arrays and
Python's ``random``, then build the seq-based and graph-based inputs. Ours: ``PretrainDataset`` and
``DownstreamDataset`` (only the cropped frames are read; the resize is a two-tap NumPy gather).

    python bench/bench_feeders.py                 # 512 clips of up to 300 frames, 3 passes
    python bench/bench_feeders.py --clips 2048 --passes 5
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.split_folder import SplitPaths, part_paths
from feeders.datasets import DownstreamDataset, PretrainDataset

MIN_CROP = 64
OUT_LEN = 64


# ------------------------------------------------------------------------------------------ baseline


def _baseline_resize(clip: np.ndarray, start: int, length: int) -> np.ndarray:
    c, _, v, m = clip.shape
    part = torch.tensor(clip[:, start : start + length], dtype=torch.float)
    rows = part.permute(0, 2, 3, 1).contiguous().view(c * v * m, length)[None, :, :, None]
    out = F.interpolate(rows, size=(OUT_LEN, 1), mode="bilinear", align_corners=False)[0, :, :, 0]
    return out.contiguous().view(c, v, m, OUT_LEN).permute(0, 3, 1, 2).contiguous().numpy()


def _baseline_crop(clip: np.ndarray, num_frames: int, lo: float, hi: float) -> np.ndarray:
    scale = float(np.random.rand(1)[0]) * (hi - lo) + lo
    length = min(max(int(np.floor(num_frames * scale)), MIN_CROP), num_frames)
    start = np.random.randint(0, num_frames - length + 1)
    return _baseline_resize(clip, start, length)


def _baseline_spatial(clip: np.ndarray) -> np.ndarray:
    if random.random() < 0.5:  # shear
        s = np.eye(3)
        for i, j in ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)):
            s[i, j] = random.uniform(-1, 1)
        return np.dot(clip.copy().transpose(1, 2, 3, 0), s.T).transpose(3, 0, 1, 2)
    out = clip.copy()
    joints = np.random.choice(25, 15, replace=False)
    if random.random() < 0.5:
        out[:, :, joints] = 0
        return out
    mix = np.array([[random.uniform(-1, 1) for _ in range(3)] for _ in range(3)])
    out[:, :, joints] = np.dot(out[:, :, joints].transpose(1, 2, 3, 0), mix).transpose(3, 0, 1, 2)
    return out


def baseline_pretrain_item(data: np.ndarray, frames: np.ndarray, index: int) -> tuple[np.ndarray, ...]:
    clip = np.array(data[index])  # the whole padded clip, as the reference copies it
    n = int(frames[index])
    items = []
    for _ in range(2):
        view = _baseline_spatial(_baseline_crop(clip, n, 0.1, 1.0))
        items += [view.transpose(1, 2, 0, 3).reshape(-1, 150).astype("float32"), view.astype("float32")]
    return tuple(items)


def baseline_eval_item(data: np.ndarray, frames: np.ndarray, index: int) -> np.ndarray:
    clip = np.array(data[index])
    n = int(frames[index])
    start = int((1 - 0.95) * n / 2)
    return _baseline_resize(clip, start, n - 2 * start).astype("float32")


# ------------------------------------------------------------------------------------------ harness


def write_split(folder: Path, clips: int, seed: int) -> SplitPaths:
    """A data_gen-shaped split: (clips, 3, 300, 25, 2) float32, 64-300 real frames per clip."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(64, 301, clips)
    paths = part_paths(folder, "train")
    data = np.lib.format.open_memmap(paths.data, mode="w+", dtype=np.float32, shape=(clips, 3, 300, 25, 2))
    for i, n in enumerate(frames):
        data[i, :, :n] = rng.normal(0.0, 0.3, (3, n, 25, 2))
    data.flush()
    del data
    np.save(paths.num_frame, frames.astype(np.int64))
    with open(paths.label, "wb") as f:
        pickle.dump(([f"S001C001P001R001A001_{i}.skeleton" for i in range(clips)], [0] * clips), f)
    return paths


def per_item_us(get: Callable[[int], object], clips: int) -> float:
    """Microseconds per item of one pass over every clip."""
    start = time.perf_counter()
    for i in range(clips):
        get(i)
    return (time.perf_counter() - start) / clips * 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over every clip (alternating)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.passes < 1:
        parser.error(f"--clips and --passes must be >= 1, got {args.clips} and {args.passes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker
    random.seed(args.seed)
    np.random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_split(Path(tmp), args.clips, args.seed)
        data = np.load(paths.data, mmap_mode="r")
        frames = np.load(paths.num_frame)
        ours_pair = PretrainDataset(paths, ("sequence", "clip"), seed=args.seed)
        ours_eval = DownstreamDataset(paths, "clip", train=False)
        cases = {
            "pretraining pair (seq + graph, 2 views)": (
                lambda i: ours_pair[i],
                lambda i: baseline_pretrain_item(data, frames, i),
            ),
            "evaluation item (centre crop 0.95)": (
                lambda i: ours_eval[i],
                lambda i: baseline_eval_item(data, frames, i),
            ),
        }
        print(
            f"{args.clips} clips of 64-300 frames in a (N, 3, 300, 25, 2) float32 memory map; 1 thread; "
            f"medians of {args.passes} passes"
        )
        for name, (ours, baseline) in cases.items():
            ours(0), baseline(0)  # warm-up
            ours_t, base_t = [], []
            for _ in range(args.passes):  # alternate so that load changes hit both alike
                ours_t.append(per_item_us(ours, args.clips))
                base_t.append(per_item_us(baseline, args.clips))
            o, b = statistics.median(ours_t), statistics.median(base_t)
            print(f"{name:>42}: ours {o:8.1f} us/item, reference-style {b:8.1f} us/item, {b / o:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
