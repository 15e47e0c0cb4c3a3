"""Pictures of one prepared clip: the skeleton over a few frames and, with ``--views``, what pretraining sees.

    python scripts/show_clip.py --data-root ROOT --dataset ntu60 --benchmark xview (--index N | --name SAMPLE)
        [--part train|val] [--out clip.png] [--frames 6] [--views [--seed 0 --epoch 0 --input-size 64
        --l-ratio 0.1 1.0 --spatial-augment shear_or_corruption]] [--gif clip.gif]

The first row draws the clip at ``--frames`` evenly spaced frames of its ``num_frame`` real ones: both
persons (blue, orange), bones of the NTU graph (``models/graph.py``), seen from the front (the axis
along the spine drawn upwards). ``--views`` adds the two augmented views that pretraining draws for
this clip (``PretrainDataset`` item ``index`` with ``--seed`` and ``--epoch``: each view its own
crop-resize to ``--input-size`` frames, then shear or joint corruption; the caption names the crop
and the augmentation) in each representation: graph-based (the skeleton rows), seq-based (the T x 150
matrix the BiGRU reads, joint-major, then xyz, then person) and image-based (HCN's pseudo-image:
frames down, joints across, x y z as red, green, blue; person 1 left, person 2 right). ``--gif``
writes an animation of the clip's real frames. Only matplotlib (Agg) and Pillow, which it depends on.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from common.constants import PARTS, WINDOW_SIZE
from common.io import atomic_write
from data_gen.cli import add_split_folder_args, run_tool
from data_gen.ctrgcn_npz import Part, open_part, split_folder
from data_gen.ntu_splits import read_action_names, strip_suffix
from data_gen.writer import DataGenError
from feeders.augmentations import NUM_CORRUPTED_JOINTS, SPATIAL_AUGMENTS, pretrain_view, sample_crop
from feeders.views import to_image_view, to_seq_view
from models.graph import NTU_BONES

PERSON_COLORS = ("tab:blue", "tab:orange")
BONES = tuple((child - 1, parent - 1) for child, parent in NTU_BONES)  # 0-based


@dataclass
class Clip:
    """One sample of a split folder."""

    data: np.ndarray  # (3, T, 25, 2) float32
    num_frame: int
    name: str
    label: int
    index: int
    part: str
    dataset: str
    benchmark: str


@dataclass
class View:
    """One pretraining view and what made it."""

    data: np.ndarray  # (3, input_size, 25, 2) float32
    caption: str


def _find(parts: dict[str, Part], name: str) -> tuple[str, int]:
    for part_name, part in parts.items():
        for i, candidate in enumerate(part.names):
            if candidate == name or strip_suffix(candidate) == strip_suffix(name):
                return part_name, i
    files = ", ".join(str(p.label_path) for p in parts.values())
    raise DataGenError(f"no sample named {name!r} in {files}")


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
    if (index is None) == (name is None):
        raise ValueError("give exactly one of index and name")
    folder = split_folder(data_root, dataset, benchmark)
    parts = {p: open_part(folder, p) for p in ([part] if part else PARTS)}
    if name is not None:
        part, index = _find(parts, name)
    else:
        part = part or "train"
        count = len(parts[part].names)
        if not 0 <= index < count:
            raise DataGenError(f"{parts[part].path}: index {index} is outside 0..{count - 1} ({count} samples)")
    chosen = parts[part]
    return Clip(
        np.array(chosen.data[index], dtype=np.float32),
        int(chosen.num_frame[index]),
        chosen.names[index],
        int(chosen.labels[index]),
        int(index),
        part,
        dataset,
        benchmark,
    )


def describe_view(rng: np.random.Generator, num_frame: int, ratio: Sequence[float], spatial: str) -> str:
    """What ``pretrain_view`` will draw from ``rng`` (a copy is consumed, ``rng`` is left as it is)."""
    if num_frame == 0:
        return "empty clip"
    replay = copy.deepcopy(rng)
    start, length = sample_crop(num_frame, ratio, replay)  # the draws temporal_crop_resize makes
    crop = f"frames {start}-{start + length - 1} of {num_frame}"
    if spatial == "none":
        return crop
    if spatial == "shear" or (spatial == "shear_or_corruption" and replay.random() < 0.5):
        return f"{crop}, shear"
    zeroed = replay.random() < 0.5  # joint_corruption's first draw
    return f"{crop}, {NUM_CORRUPTED_JOINTS} joints {'zeroed' if zeroed else 'mixed'}"


def pretraining_views(
    clip: Clip,
    *,
    seed: int = 0,
    epoch: int = 0,
    ratio: Sequence[float] = (0.1, 1.0),
    input_size: int = WINDOW_SIZE,
    spatial: str = "shear_or_corruption",
) -> list[View]:
    """The two views ``PretrainDataset(seed=seed)`` draws for this clip in ``epoch`` (same generator, same calls)."""
    rng = np.random.default_rng((seed, epoch, clip.index))
    views = []
    for _ in range(2):
        caption = describe_view(rng, clip.num_frame, ratio, spatial)
        views.append(View(pretrain_view(clip.data, clip.num_frame, rng, ratio, input_size, spatial), caption))
    return views


def projection(data: np.ndarray, num_frame: int) -> tuple[int, int, float]:
    """(horizontal axis, vertical axis, sign): the vertical axis is the one along the spine (joint 1 -> 21)."""
    spine = data[:, : max(num_frame, 1), 20, 0] - data[:, : max(num_frame, 1), 0, 0]  # (3, n)
    mean = spine.mean(axis=1)
    up = int(np.argmax(np.abs(mean))) if np.any(mean) else 1
    return (1 if up == 0 else 0), up, (1.0 if mean[up] >= 0 else -1.0)


def extent(data: np.ndarray, num_frame: int, axes: tuple[int, int, float]) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around every non-zero joint of the first ``num_frame`` frames, with a margin."""
    h, v, sign = axes
    points = data[:, : max(num_frame, 1)].reshape(3, -1)
    points = points[:, (points != 0).any(axis=0)]
    if points.shape[1] == 0:
        return -1.0, 1.0, -1.0, 1.0
    x, y = points[h], sign * points[v]
    half = max(x.max() - x.min(), y.max() - y.min(), 1e-3) * 0.55
    cx, cy = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2
    return cx - half, cx + half, cy - half, cy + half


def draw_frame(
    ax: Axes, frame: np.ndarray, axes: tuple[int, int, float], limits: tuple[float, float, float, float]
) -> None:
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
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def picked_frames(num_frame: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over 0..num_frame-1 (fewer for short clips)."""
    return sorted({int(t) for t in np.rint(np.linspace(0, max(num_frame - 1, 0), count))})


def _skeleton_row(
    panel: SubFigure, data: np.ndarray, num_frame: int, count: int, axes: tuple[int, int, float], title: str
) -> None:
    """One (sub)figure: the skeleton at ``count`` frames spread over the first ``num_frame``."""
    limits = extent(data, num_frame, axes)
    frames = picked_frames(num_frame, count)
    for column, ax in enumerate(np.atleast_1d(panel.subplots(1, count))):
        if column < len(frames):
            draw_frame(ax, data[:, frames[column]], axes, limits)
            ax.set_title(f"t={frames[column]}", fontsize=7, pad=2)
        else:
            ax.set_axis_off()
    panel.suptitle(title, fontsize=8)


def pseudo_image(view: np.ndarray) -> np.ndarray:
    """HCN's input as an RGB picture: (3, T, 25, 2) -> (T, 51, 3) in [0, 1], persons side by side."""
    image = np.transpose(to_image_view(view), (1, 3, 2, 0))  # (T, M, V, 3)
    low = image.reshape(-1, 3).min(axis=0)
    span = np.maximum(image.reshape(-1, 3).max(axis=0) - low, 1e-6)
    scaled = (image - low) / span
    gap = np.ones((image.shape[0], 1, 3))
    return np.concatenate([scaled[:, 0], gap, scaled[:, 1]], axis=1)


def _representation_row(panel: SubFigure, views: list[View]) -> None:
    """seq-based matrices and image-based pseudo-images of the views, side by side."""
    axes = panel.subplots(1, 2 * len(views))
    for k, view in enumerate(views):
        ax = axes[k]
        seq = to_seq_view(view.data)  # (T, 150)
        bound = float(np.abs(seq).max()) or 1.0
        ax.imshow(seq, aspect="auto", cmap="coolwarm", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(f"seq-based, view {k + 1}", fontsize=7)
        ax.set_xlabel("150 values", fontsize=7)
        ax.set_ylabel("frame", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = axes[len(views) + k]
        ax.imshow(pseudo_image(view.data), aspect="auto", interpolation="nearest")
        ax.set_title(f"image-based, view {k + 1}", fontsize=7)
        ax.set_xlabel("joints (person 1 | 2)", fontsize=7)
        ax.tick_params(labelsize=6)
    panel.suptitle("the views as the BiGRU (seq-based) and HCN (image-based) read them", fontsize=8)


def clip_title(clip: Clip) -> str:
    """Name, action (NTU's name for NTU labels), label, frames and where the clip comes from."""
    action = ""
    if clip.dataset.startswith("ntu"):
        action = read_action_names().get(clip.label + 1, "")
    return (
        f"{clip.name}: {action + ' ' if action else ''}(label {clip.label}), {clip.num_frame} frames; "
        f"{clip.dataset} {clip.benchmark} {clip.part} #{clip.index}"
    )


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


def _partial(out: Path) -> Path:
    """A hidden name beside ``out`` with the same suffix: the animation writer takes a file name, not a
    file, and picks the format from its suffix, so ``common.io.atomic_write`` cannot serve it."""
    return out.with_name(f".{out.stem}.partial{out.suffix}")


def save_png(fig: Figure, out: str | os.PathLike, dpi: int = 72) -> Path:
    """Write ``fig`` as a PNG at ``out``, atomically."""
    return atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=dpi))


def save_gif(clip: Clip, out: str | os.PathLike, max_frames: int = 48, fps: int = 10, dpi: int = 60) -> Path:
    """An animation of the clip's real frames (every k-th, at most ``max_frames``) as a GIF at ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    step = max(1, -(-clip.num_frame // max_frames))
    h, v, sign = axes = projection(clip.data, clip.num_frame)
    fig = Figure(figsize=(3.0, 3.2))
    fig.subplots_adjust(0.02, 0.02, 0.98, 0.9)
    ax = fig.add_subplot()
    draw_frame(ax, np.zeros_like(clip.data[:, 0]), axes, extent(clip.data, clip.num_frame, axes))
    # One line per bone and person, moved frame by frame (redrawing the axes costs 10x more).
    lines = [[ax.plot([], [], color=c, linewidth=1.4)[0] for _ in BONES] for c in PERSON_COLORS]
    title = ax.set_title("", fontsize=8)

    def update(t: int) -> list:
        for m, person_lines in enumerate(lines):
            points = clip.data[:, t, :, m]
            present = (points != 0).any(axis=0)
            for k, (a, b) in enumerate(BONES):
                shown = present[a] and present[b]
                person_lines[k].set_data(
                    (points[h, a], points[h, b]) if shown else (),
                    (sign * points[v, a], sign * points[v, b]) if shown else (),
                )
        title.set_text(f"{strip_suffix(clip.name)}  t={t}")
        return []

    partial = _partial(out)
    try:
        animation = FuncAnimation(fig, update, frames=range(0, max(clip.num_frame, 1), step), blit=False)
        animation.save(partial, writer=PillowWriter(fps=fps), dpi=dpi)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Draw one prepared clip (and the views pretraining makes of it).")
    add_split_folder_args(parser)
    parser.add_argument("--benchmark", required=True, help="xsub, xview, xsetup (or a protocol name)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="sample number within --part")
    which.add_argument("--name", help="sample name (with or without .skeleton), searched in both parts")
    parser.add_argument("--part", choices=PARTS, help="train or val (default: train for --index, both for --name)")
    parser.add_argument("--out", help="PNG to write")
    parser.add_argument("--gif", help="GIF animation of the clip to write")
    parser.add_argument("--gif-frames", type=int, default=48, help="at most this many frames in the GIF (default 48)")
    parser.add_argument("--frames", type=int, default=6, help="frames drawn per row (default 6)")
    parser.add_argument("--views", action="store_true", help="add the two pretraining views in each representation")
    parser.add_argument("--seed", type=int, default=0, help="the pretraining --seed whose views are drawn")
    parser.add_argument("--epoch", type=int, default=0, help="the epoch whose views are drawn")
    parser.add_argument("--input-size", type=int, default=WINDOW_SIZE, help=f"frames of a view (default {WINDOW_SIZE})")
    parser.add_argument(
        "--l-ratio",
        type=float,
        nargs=2,
        default=(0.1, 1.0),
        metavar=("LO", "HI"),
        help="crop ratio range of the views (default 0.1 1.0)",
    )
    parser.add_argument("--spatial-augment", choices=SPATIAL_AUGMENTS, default="shear_or_corruption")
    parser.add_argument("--dpi", type=int, default=72)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.out or args.gif):
        parser.error("give --out PNG, --gif GIF or both")
    if min(args.frames, args.input_size, args.gif_frames) < 1:
        parser.error("--frames, --input-size and --gif-frames must be >= 1")
    return run_tool(parser, draw, argv)


def draw(args: argparse.Namespace) -> list[str]:
    """Load the clip and write the pictures asked for; returns a ``wrote PATH`` line for each."""
    clip = load_clip(args.data_root, args.dataset, args.benchmark, part=args.part, index=args.index, name=args.name)
    lines = []
    if args.out:
        views = None
        if args.views:
            views = pretraining_views(
                clip,
                seed=args.seed,
                epoch=args.epoch,
                ratio=args.l_ratio,
                input_size=args.input_size,
                spatial=args.spatial_augment,
            )
        lines.append(f"wrote {save_png(render(clip, views, args.frames), args.out, args.dpi)}")
    if args.gif:
        lines.append(f"wrote {save_gif(clip, args.gif, max_frames=args.gif_frames)}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
