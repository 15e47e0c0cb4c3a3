"""Pictures of one prepared clip: the skeleton over a few frames and, with ``--views``, what pretraining sees.

    python scripts/show_clip.py --data-root ROOT --dataset ntu60 --benchmark xview (--index N | --name SAMPLE)
        [--part train|val] [--out clip.png] [--frames 6] [--views [--seed 0 --epoch 0 --input-size 64
        --l-ratio 0.1 1.0 --spatial-augment shear_or_corruption]] [--gif clip.gif]

What each row shows: docs/data-formats.md. Both pictures are written atomically (``common.io``).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from PIL import Image

from common.cli import run_main
from common.constants import ACTION_NAMES_FILE, DATASETS, PARTS, WINDOW_SIZE
from common.io import UsageError, atomic_write, check_output_file
from common.split_folder import open_split, part_paths
from data_gen.ntu_splits import strip_suffix
from engine.args import nonnegative_int, positive_int
from feeders.augmentations import (
    NUM_CORRUPTED_JOINTS,
    PRETRAIN_CROP_RATIO,
    SPATIAL_AUGMENTS,
    pretrain_view,
    sample_crop,
)
from feeders.views import to_clip_view, to_seq_view
from models.graph import NTU_BONES

PROG = "show_clip.py"
PERSON_COLORS = ("tab:blue", "tab:orange")
BONES = tuple((child - 1, parent - 1) for child, parent in NTU_BONES)  # 0-based
Projection = tuple[int, int, float]  # horizontal axis, vertical axis, sign of the vertical one
Limits = tuple[float, float, float, float]  # x0, x1, y0, y1


class Clip(NamedTuple):
    """One sample of a split folder."""

    data: np.ndarray  # (3, T, 25, 2) float32
    num_frame: int
    name: str
    label: int
    index: int
    source: str  # dataset, benchmark and part, e.g. 'ntu60 xview train'


class View(NamedTuple):
    """One pretraining view and what made it."""

    data: np.ndarray  # (3, input_size, 25, 2) float32
    caption: str


def load_clip(
    data_root: str | os.PathLike,
    dataset: str,
    benchmark: str,
    *,
    part: str | None = None,
    index: int | None = None,
    name: str | None = None,
) -> Clip:
    """The clip ``index`` of ``part`` (default train), or the one called ``name`` (searched in both parts)."""
    folder = Path(data_root) / DATASETS[dataset]["folder"] / benchmark
    paths = {p: part_paths(folder, p) for p in ([part] if part else PARTS if name else ["train"])}
    splits = {p: open_split(paths[p], need_labels=True) for p in paths}
    if name is None:
        part, count = next(iter(paths)), len(next(iter(splits.values())).names)
        if not 0 <= index < count:
            raise UsageError(f"{paths[part].data}: index {index} is outside 0..{count - 1} ({count} samples)")
    else:
        key = strip_suffix(name)
        found = [(p, i) for p in paths for i, n in enumerate(splits[p].names) if strip_suffix(n) == key]
        if not found:
            raise UsageError(f"no sample named {name!r} in {', '.join(str(paths[p].label) for p in paths)}")
        part, index = found[0]
    split, source = splits[part], f"{dataset} {benchmark} {part}"
    data = np.array(split.data[index], dtype=np.float32)
    return Clip(data, int(split.num_frames[index]), split.names[index], int(split.labels[index]), index, source)


def pretraining_views(
    clip: Clip,
    *,
    seed: int = 0,
    epoch: int = 0,
    ratio: Sequence[float] = PRETRAIN_CROP_RATIO,
    input_size: int = WINDOW_SIZE,
    spatial: str = "shear_or_corruption",
) -> list[View]:
    """The two views ``PretrainDataset(seed=seed)`` draws for this clip in ``epoch`` (same generator, same
    calls), each captioned with what a copy of the generator says the view's draws will be."""
    rng, views = np.random.default_rng((seed, epoch, clip.index)), []
    for _ in range(2):
        replay = copy.deepcopy(rng)
        start, length = sample_crop(clip.num_frame, ratio, replay) if clip.num_frame else (0, 0)
        caption = f"frames {start}-{start + length - 1} of {clip.num_frame}" if clip.num_frame else "empty clip"
        if clip.num_frame and spatial != "none":
            shear = spatial == "shear" or (spatial == "shear_or_corruption" and replay.random() < 0.5)
            zeroed = not shear and replay.random() < 0.5  # joint_corruption's first draw
            caption += ", shear" if shear else f", {NUM_CORRUPTED_JOINTS} joints {'zeroed' if zeroed else 'mixed'}"
        views.append(View(pretrain_view(clip.data, clip.num_frame, rng, ratio, input_size, spatial), caption))
    return views


def projection(data: np.ndarray, num_frame: int) -> Projection:
    """The axes to draw: the vertical one is the one along the spine (joint 1 -> 21), drawn upwards."""
    spine = data[:, : max(num_frame, 1), 20, 0] - data[:, : max(num_frame, 1), 0, 0]  # (3, n)
    mean = spine.mean(axis=1)
    up = int(np.argmax(np.abs(mean))) if np.any(mean) else 1
    return (1 if up == 0 else 0), up, (1.0 if mean[up] >= 0 else -1.0)


def extent(data: np.ndarray, num_frame: int, axes: Projection) -> Limits:
    """The box around every non-zero joint of the first ``num_frame`` frames, with a margin."""
    h, v, sign = axes
    points = data[:, : max(num_frame, 1)].reshape(3, -1)
    points = points[:, (points != 0).any(axis=0)]
    if points.shape[1] == 0:
        return -1.0, 1.0, -1.0, 1.0
    x, y = points[h], sign * points[v]
    half = max(x.max() - x.min(), y.max() - y.min(), 1e-3) * 0.55
    cx, cy = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2
    return cx - half, cx + half, cy - half, cy + half


def draw_frame(ax: Axes, frame: np.ndarray, axes: Projection, limits: Limits) -> None:
    """Both persons of one (3, 25, 2) frame: bones between present (non-zero) joints, and the joints."""
    h, v, sign = axes
    for m in range(frame.shape[2]):
        points = frame[:, :, m]
        present = (points != 0).any(axis=0)
        x, y = points[h], sign * points[v]
        color = PERSON_COLORS[m % len(PERSON_COLORS)]
        for a, b in BONES:
            if present[a] and present[b]:
                ax.plot((x[a], x[b]), (y[a], y[b]), color=color, linewidth=1.4, solid_capstyle="round")
        ax.scatter(x[present], y[present], s=5, color=color, zorder=3)
    ax.set(xlim=limits[:2], ylim=limits[2:], aspect="equal", xticks=[], yticks=[])


def _skeleton_row(panel: SubFigure, data: np.ndarray, num_frame: int, count: int, axes: Projection, title: str) -> None:
    """One (sub)figure: the skeleton at ``count`` frames spread over the first ``num_frame``."""
    limits = extent(data, num_frame, axes)
    frames = sorted({int(t) for t in np.rint(np.linspace(0, max(num_frame - 1, 0), count))})  # evenly spread
    for column, ax in enumerate(np.atleast_1d(panel.subplots(1, count))):
        if column < len(frames):
            draw_frame(ax, data[:, frames[column]], axes, limits)
            ax.set_title(f"t={frames[column]}", fontsize=7, pad=2)
        else:
            ax.set_axis_off()
    panel.suptitle(title, fontsize=8)


def pseudo_image(view: np.ndarray) -> np.ndarray:
    """HCN's input as an RGB picture: (3, T, 25, 2) -> (T, 51, 3) in [0, 1], persons side by side."""
    image = np.transpose(to_clip_view(view), (1, 3, 2, 0))  # (T, M, V, 3)
    low, high = image.reshape(-1, 3).min(axis=0), image.reshape(-1, 3).max(axis=0)
    scaled = (image - low) / np.maximum(high - low, 1e-6)
    return np.concatenate([scaled[:, 0], np.ones((image.shape[0], 1, 3)), scaled[:, 1]], axis=1)


def _representation_row(panel: SubFigure, views: list[View]) -> None:
    """seq-based matrices and image-based pseudo-images of the views, side by side."""
    axes = panel.subplots(1, 2 * len(views))
    for k, view in enumerate(views):
        seq = to_seq_view(view.data)  # (T, 150)
        bound = float(np.abs(seq).max()) or 1.0
        seq_options = dict(cmap="coolwarm", vmin=-bound, vmax=bound)
        pictures = [
            ("seq-based", seq, seq_options, "150 values"),
            ("image-based", pseudo_image(view.data), {}, "joints (person 1 | 2)"),
        ]
        for ax, (kind, picture, options, xlabel) in zip((axes[k], axes[len(views) + k]), pictures, strict=True):
            ax.imshow(picture, aspect="auto", interpolation="nearest", **options)
            ax.set_title(f"{kind}, view {k + 1}", fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.tick_params(labelsize=6)
        axes[k].set_ylabel("frame", fontsize=7)
    panel.suptitle("the views as the BiGRU (seq-based) and HCN (image-based) read them", fontsize=8)


def clip_title(clip: Clip) -> str:
    """Name, action (NTU's name for NTU labels), label, frames and where the clip comes from."""
    names = dict(line.split("\t", 1) for line in ACTION_NAMES_FILE.read_text(encoding="utf-8").splitlines() if line)
    key = str(clip.label + 1)  # the file's lines: NUMBER<TAB>NAME
    action = f"{names[key]} " if clip.source.startswith("ntu") and key in names else ""
    return f"{clip.name}: {action}(label {clip.label}), {clip.num_frame} frames; {clip.source} #{clip.index}"


def render(clip: Clip, views: list[View] | None = None, frames: int = 6) -> Figure:
    """The clip's skeleton row, and with ``views`` one skeleton row per view plus the seq/image row."""
    views = views or []
    heights = [1.0] * (1 + len(views)) + ([1.2] if views else [])
    fig = Figure(figsize=(1.45 * frames, 1.75 * sum(heights) + 0.3), layout="constrained")
    fig.suptitle(clip_title(clip), fontsize=9)
    panels = np.atleast_1d(fig.subfigures(len(heights), 1, height_ratios=heights))
    axes = projection(clip.data, clip.num_frame)  # one projection for the clip and its views
    _skeleton_row(panels[0], clip.data, clip.num_frame, frames, axes, "clip (blue: person 1, orange: person 2)")
    for k, view in enumerate(views):
        _skeleton_row(
            panels[1 + k], view.data, view.data.shape[1], frames, axes, f"pretraining view {k + 1}: {view.caption}"
        )
    if views:
        _representation_row(panels[-1], views)
    return fig


def save_gif(clip: Clip, out: str | os.PathLike, max_frames: int = 48, fps: int = 10, dpi: int = 60) -> Path:
    """An animation of the clip's real frames (every k-th, at most ``max_frames``) as a GIF at ``out``."""
    h, v, sign = axes = projection(clip.data, clip.num_frame)
    fig = Figure(figsize=(3.0, 3.2), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(0.02, 0.02, 0.98, 0.9)
    ax = fig.add_subplot()
    draw_frame(ax, np.zeros_like(clip.data[:, 0]), axes, extent(clip.data, clip.num_frame, axes))
    # One line per bone and person, moved frame by frame (redrawing the axes costs 10x more).
    lines = [[ax.plot([], [], color=c, linewidth=1.4)[0] for _ in BONES] for c in PERSON_COLORS]
    title = ax.set_title("", fontsize=8)
    frames = []
    for t in range(0, max(clip.num_frame, 1), -(-clip.num_frame // max_frames) or 1):
        for points, person_lines in zip(np.moveaxis(clip.data[:, t], -1, 0), lines, strict=False):
            present = (points != 0).any(axis=0)
            for line, (a, b) in zip(person_lines, BONES, strict=True):
                shown = present[a] and present[b]
                line.set_data((points[h, [a, b]], sign * points[v, [a, b]]) if shown else ((), ()))
        title.set_text(f"{strip_suffix(clip.name)}  t={t}")
        canvas.draw()
        frames.append(Image.fromarray(np.array(canvas.buffer_rgba())).convert("RGB"))
    options = {"format": "GIF", "save_all": True, "append_images": frames[1:], "duration": 1000 // fps, "loop": 0}
    return atomic_write(out, lambda f: frames[0].save(f, **options))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Draw a prepared clip and its pretraining views.")
    parser.add_argument("--data-root", required=True, help="folder holding <dataset folder>/<benchmark>/, e.g. ./data")
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--benchmark", required=True, choices=("xsub", "xview", "xsetup"), help="the split folder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="sample number within --part")
    which.add_argument("--name", help="sample name (with or without .skeleton), searched in both parts")
    parser.add_argument("--part", choices=PARTS, help="train or val (default: train for --index, both for --name)")
    parser.add_argument("--out", help="PNG to write")
    parser.add_argument("--gif", help="GIF animation of the clip to write (a .gif name)")
    parser.add_argument("--gif-frames", type=positive_int, default=48, help="at most this many frames in the GIF")
    parser.add_argument("--frames", type=positive_int, default=6, help="frames drawn per row (default 6)")
    parser.add_argument("--views", action="store_true", help="add the two pretraining views in each representation")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="the pretraining --seed whose views are drawn")
    parser.add_argument("--epoch", type=nonnegative_int, default=0, help="the epoch whose views are drawn")
    size_help = f"frames of a view (default {WINDOW_SIZE})"
    parser.add_argument("--input-size", type=positive_int, default=WINDOW_SIZE, help=size_help)
    parser.add_argument(
        "--l-ratio", type=float, nargs=2, default=PRETRAIN_CROP_RATIO, metavar=("LO", "HI"), help="view crops"
    )
    parser.add_argument("--spatial-augment", choices=SPATIAL_AUGMENTS, default="shear_or_corruption")
    parser.add_argument("--dpi", type=positive_int, default=72)
    return parser


def draw(args: argparse.Namespace) -> None:
    """Check the flags and outputs, load the clip, write the pictures asked for (``wrote PATH`` for each)."""
    if not (args.out or args.gif):
        raise UsageError("give --out PNG, --gif GIF or both")
    if not 0 < args.l_ratio[0] <= args.l_ratio[1] <= 1:
        raise UsageError(f"--l-ratio {args.l_ratio[0]:g} {args.l_ratio[1]:g}: expected 0 < LO <= HI <= 1")
    if args.gif and not args.gif.lower().endswith(".gif"):
        raise UsageError(f"--gif {args.gif}: expected a file name ending in .gif")
    for flag, path in (("--out", args.out), ("--gif", args.gif)):
        if path:
            check_output_file(path, flag)
    clip = load_clip(args.data_root, args.dataset, args.benchmark, part=args.part, index=args.index, name=args.name)
    if args.out:
        options = dict(seed=args.seed, epoch=args.epoch, ratio=args.l_ratio, input_size=args.input_size)
        views = pretraining_views(clip, **options, spatial=args.spatial_augment) if args.views else None
        fig = render(clip, views, args.frames)
        print(f"wrote {atomic_write(args.out, lambda f: fig.savefig(f, format='png', dpi=args.dpi))}")
    if args.gif:
        print(f"wrote {save_gif(clip, args.gif, max_frames=args.gif_frames)}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), draw, argv, system_errors=True)


if __name__ == "__main__":
    sys.exit(main())
