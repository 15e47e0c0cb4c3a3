"""scripts/show_clip.py: the views are pretraining's, captions say what was done, pictures are written and not blank."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from feeders.augmentations import resize_frames
from feeders.datasets import PretrainDataset, split_paths
from feeders.views import to_seq_view
from scripts import show_clip as sc
from tests.helpers import make_prepared_root

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_prepared_root(tmp_path_factory.mktemp("show_clip"))


def test_views_are_what_pretraining_draws(root):
    dataset = PretrainDataset(split_paths(root, "ntu60", "cross_view", "train"), ("sequence", "clip"), seed=5)
    dataset.set_epoch(2)
    for index in (0, 7):
        clip = sc.load_clip(root, "ntu60", "xview", index=index)
        views = sc.pretraining_views(clip, seed=5, epoch=2)
        seq1, graph1, seq2, graph2 = (t.numpy() for t in dataset[index])
        assert np.array_equal(views[0].data, graph1) and np.array_equal(views[1].data, graph2)
        assert np.array_equal(to_seq_view(views[0].data), seq1) and np.array_equal(to_seq_view(views[1].data), seq2)
        assert not np.allclose(views[0].data, views[1].data)
        assert not np.allclose(views[0].data, resize_frames(clip.data, 0, clip.num_frame, 64))


def _check_caption(clip: sc.Clip, view: sc.View) -> str:
    start, stop, n = map(int, re.match(r"frames (\d+)-(\d+) of (\d+)", view.caption).groups())
    assert n == clip.num_frame and 0 <= start <= stop < n
    crop = resize_frames(clip.data, start, stop - start + 1, 64)
    if view.caption.endswith("shear"):  # view = S @ crop with a unit diagonal: solve for S
        s, *_ = np.linalg.lstsq(crop.reshape(3, -1).T.astype(np.float64), view.data.reshape(3, -1).T, rcond=None)
        assert np.allclose(s.T @ crop.reshape(3, -1), view.data.reshape(3, -1), atol=1e-4)
        assert np.allclose(np.diag(s), 1.0, atol=1e-4)
        return "shear"
    same = [v for v in range(25) if np.array_equal(view.data[:, :, v], crop[:, :, v])]
    assert len(same) == 10  # 15 of 25 joints corrupted
    changed = [v for v in range(25) if v not in same]
    zero = all(not view.data[:, :, v].any() for v in changed)
    assert zero == view.caption.endswith("15 joints zeroed")
    return "zeroed" if zero else "mixed"


def test_captions_name_the_crop_and_augmentation(root):
    clip = sc.load_clip(root, "ntu60", "xview", index=3)
    kinds = set()
    for seed in range(8):
        for view in sc.pretraining_views(clip, seed=seed):
            kinds.add(_check_caption(clip, view))
    assert kinds == {"shear", "zeroed", "mixed"}


def _distinct_colours(path: Path) -> int:
    image = imread(path)
    return len(np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0))


def test_png_with_views_and_gif(root, tmp_path):
    png, gif = tmp_path / "clip.png", tmp_path / "clip.gif"
    clip = sc.load_clip(root, "ntu60", "xview", part="val", index=2)
    args = ["--data-root", str(root), "--dataset", "ntu60", "--benchmark", "xview", "--name", clip.name[:-9]]
    assert sc.main([*args, "--out", str(png), "--views", "--frames", "3", "--dpi", "50"]) == 0
    assert _distinct_colours(png) > 200 and png.stat().st_size < 200_000
    height, width = imread(png).shape[:2]
    assert height > 1.5 * width  # four rows of three panels (one row alone is wider than high)
    assert sc.main([*args, "--gif", str(gif), "--gif-frames", "6"]) == 0
    with Image.open(gif) as animation:
        assert animation.n_frames == len(range(0, clip.num_frame, -(-clip.num_frame // 6)))
        frames = []
        for k in (0, animation.n_frames - 1):
            animation.seek(k)
            frames.append(np.asarray(animation.convert("RGB")))
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 3 and not np.array_equal(*frames)  # it moves
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.png"]  # no temporary left


def test_bad_choice_gives_one_line(root, tmp_path, capsys):
    args = ["--data-root", str(root), "--dataset", "ntu60", "--benchmark", "xview", "--out", str(tmp_path / "x.png")]
    assert sc.main([*args, "--index", "99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "index 99 is outside 0..15 (16 samples)" in err
    assert sc.main([*args, "--name", "S999C001P001R001A001"]) == 2
    assert "no sample named 'S999C001P001R001A001'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "values,message",
    [
        (["--dpi", "0"], "argument --dpi: expected a positive integer, got 0"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        (["--epoch", "-1"], "argument --epoch: expected an integer >= 0, got -1"),
        (["--l-ratio", "0", "1"], "--l-ratio 0 1: expected 0 < LO <= HI <= 1"),
        (["--l-ratio", "0.5", "0.2"], "--l-ratio 0.5 0.2: expected 0 < LO <= HI <= 1"),
    ],
)
def test_impossible_numbers_are_one_line_before_anything_is_drawn(root, tmp_path, capsys, values, message):
    args = ["--data-root", str(root), "--dataset", "ntu60", "--benchmark", "xview", "--index", "0", "--views"]
    assert sc.main([*args, "--out", str(tmp_path / "x.png"), *values]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"show_clip.py: error: {message}"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flag,target,message",
    [
        ("--out", "folder", "--out {path} is a folder; give a file name"),
        ("--gif", "folder", "--gif {path}: expected a file name ending in .gif"),
        ("--gif", "clip.mp4", "--gif {path}: expected a file name ending in .gif"),
        ("--gif", "folder.gif", "--gif {path} is a folder; give a file name"),
        ("--out", "file/clip.png", "--out {path} cannot be created: {tmp}/file is a file"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_clip_is_read(tmp_path, capsys, flag, target, message):
    for folder in ("folder", "folder.gif"):
        (tmp_path / folder).mkdir()
    (tmp_path / "file").write_text("x")
    # No data under --data-root: reading the clip would fail too, so the outputs are checked first.
    args = ["--data-root", str(tmp_path / "no data"), "--dataset", "ntu60", "--benchmark", "xview", "--index", "0"]
    assert sc.main([*args, flag, str(tmp_path / target)]) == 2
    expected = message.format(path=tmp_path / target, tmp=tmp_path)
    assert capsys.readouterr().err == f"show_clip.py: error: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "folder.gif"]


def test_committed_picture_is_small():
    path = REPO / "docs" / "images" / "synthetic_clip.png"
    assert path.is_file() and path.stat().st_size < 200_000 and _distinct_colours(path) > 200
