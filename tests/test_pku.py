"""PKU-MMD preparation: parsing, cutting, normalising and splitting synthetic files in the official formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench.literal_data_gen import literal_pre_normalization
from common.manifest import verify
from data_gen import pku_gendata as pku
from data_gen.normalize import normalize_sample, select_bodies
from data_gen.writer import DataGenError
from tests.helpers import load_part

T_VIDEO = 420  # frames per synthetic video


def _video_frames(rng: np.random.Generator, num_frames: int, two_persons: bool) -> np.ndarray:
    """(T, 150) rows: a body drifting and waving around 3 m in front of the camera; person 2 optional."""
    base = rng.normal(0.0, 0.3, size=(2, 1, 25, 3)) + np.array([0.0, 0.0, 3.0])
    t = np.arange(num_frames)[None, :, None, None]
    motion = 0.05 * np.sin(t / (5.0 + 10.0 * rng.random((2, 1, 25, 1)))) + 0.001 * t
    bodies = base + motion  # (2, T, 25, 3)
    bodies[1] += 0.8
    if not two_persons:
        bodies[1] = 0.0
    # a row is person 1's x1 y1 z1 ... x25 y25 z25 then person 2's; 6 decimals survive the text file exactly
    return np.round(bodies.transpose(1, 0, 2, 3).reshape(num_frames, 150), 6).astype(np.float32)


def _write_frames(path: Path, frames: np.ndarray) -> None:
    path.write_text("".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in frames))


def _write_split(path: Path, train: list[str], val: list[str]) -> None:
    # The official files: a header line, one comma-separated line of ids, and the misspelt second header.
    path.write_text("Training videos: \n" + ", ".join(train) + "\nValidataion videos: \n" + ", ".join(val) + "\n")


PHASE_VIDEOS = {
    1: ["0002-L", "0002-M", "0003-R", "0005-L", "0005-M", "0007-R"],
    2: ["A01N01-L", "A01N01-M", "A01N02-R", "A02N03-L", "A02N03-M", "A03N05-R"],
}


def make_dataset(root: Path, phase: int = 1, seed: int = 0, labels: dict | None = None) -> dict:
    """Six videos in Skeleton/, Label/ and Split/ (the dataset's folder names) with the official file formats.

    Every video has two intervals (ids within 1..51 for phase 1, 1..41 for phase 2); the last video has a
    third one of 400 frames. ``labels`` (video -> [(id, start, end, confidence)]) replaces them.
    """
    rng = np.random.default_rng(seed)
    skeleton, label, split = root / "Skeleton", root / "Label", root / "Split"
    for folder in (skeleton, label, split):
        folder.mkdir(parents=True)
    videos = PHASE_VIDEOS[phase]
    top = 51 if phase == 1 else 41
    frames, intervals = {}, {}
    for i, video in enumerate(videos):
        frames[video] = _video_frames(rng, T_VIDEO, two_persons=i % 2 == 0)
        _write_frames(skeleton / f"{video}.txt", frames[video])
        ivs = [(1 + (3 * i) % top, 10, 70 + 5 * i, 2), (top if i == 0 else 2 + i, 100, 160, 1)]
        if i == len(videos) - 1:
            ivs.append((7, 5, 405, 2))
        intervals[video] = labels[video] if labels else ivs
        (label / f"{video}.txt").write_text("".join(f"{a},{s},{e},{c}\n" for a, s, e, c in intervals[video]))
    v = videos
    xsub = ([v[0], v[1], v[3], v[4]], [v[2], v[5]])
    xview = ([v[1], v[4], v[2], v[5]], [v[0], v[3]])
    if phase == 1:
        _write_split(split / "cross-subject.txt", *xsub)
        _write_split(split / "cross-view.txt", *xview)
    else:
        _write_split(split / "cross_subject_v2.txt", *xsub)
    return dict(
        skeleton=skeleton,
        label=label,
        split=split,
        videos=videos,
        frames=frames,
        intervals=intervals,
        splits={"xsub": xsub, "xview": xview},
    )


def expected_sample(frames: np.ndarray, start: int, end: int, mode: str, order: str) -> tuple[np.ndarray, int]:
    """Slow literal reference: cut, lay out element by element, fit to 300 frames, order the persons (file
    order, or by motion energy with the NTU rule), shared normaliser."""
    clip = frames[start:end]
    bodies = np.zeros((2, len(clip), 25, 3))
    for t in range(len(clip)):
        for m in range(2):
            for v in range(25):
                for c in range(3):
                    bodies[m, t, v, c] = clip[t, m * 75 + v * 3 + c]
    if len(clip) > 300:
        keep = [round(i * (len(clip) - 1) / 299) for i in range(300)] if mode == "resample" else list(range(300))
        bodies = bodies[:, keep]
    if order == "file":
        laid = np.zeros((3, 300, 25, 2), dtype=np.float32)
        laid[:, : bodies.shape[1]] = bodies.transpose(3, 1, 2, 0)
        return normalize_sample(laid), bodies.shape[1]
    return normalize_sample(select_bodies(bodies)), bodies.shape[1]


def run(argv: list[str]) -> int:
    return pku.main(argv + ["--no-progress"])


# ------------------------------------------------------------------------------------------- parsing


def test_read_skeleton_file_and_layout(tmp_path):
    rng = np.random.default_rng(1)
    frames = _video_frames(rng, 7, two_persons=True)
    _write_frames(tmp_path / "v.txt", frames)
    (tmp_path / "v.txt").write_text((tmp_path / "v.txt").read_text() + "\n\n")  # trailing blank lines are fine
    read = pku.read_skeleton_file(tmp_path / "v.txt")
    assert read.shape == (7, 150) and read.dtype == np.float32
    np.testing.assert_allclose(read, frames, atol=1e-6)
    bodies = pku.frames_to_bodies(read)
    assert bodies.shape == (2, 7, 25, 3)
    assert bodies[1, 4, 13, 2] == read[4, 75 + 13 * 3 + 2]
    assert bodies[0, 6, 24, 0] == read[6, 24 * 3]


def test_read_label_file(tmp_path):
    path = tmp_path / "0002-L.txt"
    path.write_text("3,10,70,2\n\n 51 , 100 , 160 , 1 \r\n")
    intervals = pku.read_label_file(path)
    assert intervals == [pku.Interval(3, 10, 70, 2, 1), pku.Interval(51, 100, 160, 1, 3)]


@pytest.mark.parametrize(
    "content, message",
    [
        ("3,10,70\n", "line 1: expected 'action_id,start_frame,end_frame,confidence'"),
        ("3,10,70,2\n4,x,80,1\n", "line 2: expected"),
        ("0,10,70,2\n", "line 1: action id must lie in 1..51, got 0"),
        ("52,10,70,2\n", "got 52"),
        ("3,70,70,2\n", "line 1: interval [70, 70) is empty"),
    ],
)
def test_read_label_file_errors(tmp_path, content, message):
    path = tmp_path / "0002-L.txt"
    path.write_text(content)
    with pytest.raises(DataGenError) as info:
        pku.read_label_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_read_split_file(tmp_path):
    path = tmp_path / "cross-subject.txt"
    path.write_text("Training videos: \r\n0002-L, 0002-M,0003-R.txt,\r\nValidataion videos: \r\n0004-L, 0005-M\r\n")
    assert pku.read_split_file(path) == (["0002-L", "0002-M", "0003-R"], ["0004-L", "0005-M"])
    path.write_text("Training videos:\n0002-L\n")
    with pytest.raises(DataGenError, match="Validataion videos"):
        pku.read_split_file(path)
    path.write_text("Training videos:\n0002-L, 0003-L\nValidation videos:\n0003-L\n")
    with pytest.raises(DataGenError, match="1 video ids are listed both"):
        pku.read_split_file(path)


def test_fit_length_and_label_mapping():
    bodies = np.arange(2 * 451 * 25 * 3, dtype=np.float64).reshape(2, 451, 25, 3)
    resampled = pku.fit_length(bodies, 300, "resample")
    assert resampled.shape == (2, 300, 25, 3)
    np.testing.assert_array_equal(resampled[:, [0, 1, 2, 299]], bodies[:, [0, 2, 3, 450]])  # 1.5 frames apart
    np.testing.assert_array_equal(pku.fit_length(bodies, 300, "truncate"), bodies[:, :300])
    np.testing.assert_array_equal(pku.fit_length(bodies[:, :300], 300, "resample"), bodies[:, :300])
    np.testing.assert_array_equal(pku.fit_length(bodies[:, :120], 300, "resample"), bodies[:, :120])

    assert pku.label_mapping([1, 41, 5], 41) == ({1: 0, 5: 4, 41: 40}, False)
    ids = [i for i in range(1, 52) if i not in (12, 14, 16, 18, 21, 24, 26, 27, 30, 31)]  # 41 ids up to 51
    mapping, renumbered = pku.label_mapping(ids, 41)
    assert renumbered and mapping[51] == 40 and mapping[13] == 11 and sorted(mapping.values()) == list(range(41))
    with pytest.raises(ValueError, match="cannot be mapped onto 41 classes"):
        pku.label_mapping([1, 2, 45], 41)


# ------------------------------------------------------------------------------------------- end to end


def check_outputs(
    out: Path, ds: dict, benchmarks: tuple[str, ...], mode="truncate", order="file", label_of=lambda a: a - 1
) -> None:
    """Every part holds exactly its videos' intervals, sorted by name, each equal to the literal reference."""
    for benchmark in benchmarks:
        train_videos, val_videos = ds["splits"][benchmark]
        for part, members in (("train", train_videos), ("val", val_videos)):
            data, names, labels, num_frame = load_part(out / benchmark, part)
            assert names == sorted(f"{v}_{i:03d}" for v in members for i in range(len(ds["intervals"][v])))
            assert data.shape == (len(names), 3, 300, 25, 2) and data.dtype == np.float32
            assert num_frame.shape == (len(names),) and np.issubdtype(num_frame.dtype, np.integer)
            for row, name in enumerate(names):
                video, index = name.rsplit("_", 1)
                action, start, end, _ = ds["intervals"][video][int(index)]
                assert labels[row] == label_of(action)
                want, frames_kept = expected_sample(ds["frames"][video], start, end, mode, order)
                assert num_frame[row] == frames_kept == min(end - start, 300)
                np.testing.assert_allclose(data[row], want, atol=1e-5)


def test_phase1_end_to_end(tmp_path):
    ds = make_dataset(tmp_path / "raw")
    out = tmp_path / "PKU-MMD-1"
    with pytest.warns(UserWarning, match="1 clips longer than 300 frames were cut to their first 300: 0007-R_002"):
        assert run(["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 0
    check_outputs(out, ds, ("xsub", "xview"))
    for benchmark in ("xsub", "xview"):
        assert verify(out / benchmark) == []
    manifest = json.loads((out / "xview" / "manifest.json").read_text())
    assert manifest["tool"] == "data_gen/pku_gendata.py" and manifest["parts"]["val"]["samples"] == 4
    assert manifest["arguments"]["phase"] == 1 and manifest["arguments"]["long_clips"] == "truncate"
    assert manifest["arguments"]["person_order"] == "file"
    # the normalisation did something: person 1's spine centre is at the origin in every frame
    data, *_ = load_part(out / "xsub", "train")
    np.testing.assert_allclose(data[:, :, :, 1, 0], 0.0, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["xsub", "xview"]  # nothing skipped, nothing partial
    assert not list(out.rglob("*.tmp-*"))

    # the feeders accept the result under the registry's names
    from common.split_folder import check_split
    from feeders.datasets import split_paths

    assert check_split(split_paths(tmp_path, "pku1", "cross_view", "val")) == 4

    # more workers, same bytes
    out2 = tmp_path / "workers"
    with pytest.warns(UserWarning, match="longer than 300"):
        assert (
            run(
                [
                    "--dataset",
                    "pku1",
                    "--data-path",
                    str(ds["skeleton"]),
                    "--out-folder",
                    str(out2),
                    "--workers",
                    "2",
                    "--benchmarks",
                    "xview",
                ]
            )
            == 0
        )
    for name in ("val_data_joint.npy", "val_label.pkl", "train_num_frame.npy", "train_data_joint.npy"):
        assert (out2 / "xview" / name).read_bytes() == (out / "xview" / name).read_bytes()
    assert not (out2 / "xsub").exists()
    assert verify(out2 / "xview") == []


def test_phase2_resample_energy_order_and_split_options(tmp_path):
    ds = make_dataset(tmp_path / "raw", phase=2)
    split_dir = tmp_path / "elsewhere"
    (ds["split"]).rename(split_dir)
    out = tmp_path / "PKU-MMD-2"
    argv = [
        "--dataset",
        "pku2",
        "--data-path",
        str(ds["skeleton"]),
        "--out-folder",
        str(out),
        "--long-clips",
        "resample",
        "--person-order",
        "energy",
    ]
    with pytest.warns(UserWarning, match="1 clips longer than 300 frames were resampled to 300"):
        assert run(argv + ["--split-dir", str(split_dir)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["xsub"]  # phase 2: cross-subject only
    check_outputs(out, ds, ("xsub",), mode="resample", order="energy")
    assert verify(out / "xsub") == []
    from common.split_folder import check_split
    from feeders.datasets import split_paths

    assert check_split(split_paths(tmp_path, "pku2", "cross_subject", "train")) == 8

    # an explicit split file wins; unlisted videos are left out with a warning
    custom = tmp_path / "custom.txt"
    _write_split(custom, [ds["videos"][0]], [ds["videos"][1]])
    out2 = tmp_path / "custom-out"
    with pytest.warns(UserWarning, match="4 videos of .* are in neither list"):
        assert run(argv[:4] + ["--out-folder", str(out2), "--split-file", f"xsub={custom}"]) == 0
    _, names, _, _ = load_part(out2 / "xsub", "train")
    assert names == [f"{ds['videos'][0]}_000", f"{ds['videos'][0]}_001"]


def test_phase2_renumbers_phase1_ids(tmp_path):
    # 41 distinct ids spread over 1..51 (as if phase 2 kept phase 1's numbering): renumbered in order
    ids = [i for i in range(1, 52) if i not in (12, 14, 16, 18, 21, 24, 26, 27, 30, 31)]
    labels = {
        v: [(a, 10 * k, 10 * k + 8, 1) for k, a in enumerate(ids[7 * j : 7 * j + 7])]
        for j, v in enumerate(PHASE_VIDEOS[2])
    }
    ds = make_dataset(tmp_path / "raw", phase=2, labels=labels)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="action ids exceed 41: renumbered in order"):
        assert run(["--phase", "2", "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 0
    rank = {a: i for i, a in enumerate(ids)}
    check_outputs(out, ds, ("xsub",), label_of=rank.__getitem__)
    lines = (out / "label_map.txt").read_text().splitlines()
    assert lines[0] == "action_id\tlabel" and lines[1:3] == ["1\t0", "2\t1"] and lines[-1] == "51\t40"

    # fewer than 41 distinct ids with one above 41: refused
    bad = {v: [(45 if j == 0 else 3, 10, 20, 1)] for j, v in enumerate(PHASE_VIDEOS[2])}
    ds = make_dataset(tmp_path / "raw2", phase=2, labels=bad)
    assert run(["--phase", "2", "--data-path", str(ds["skeleton"]), "--out-folder", str(tmp_path / "o2")]) == 2


def test_empty_interval_is_skipped_and_listed(tmp_path):
    ds = make_dataset(tmp_path / "raw")
    video = ds["videos"][1]
    frames = ds["frames"][video].copy()
    frames[100:160] = 0.0  # nobody in view during the second interval
    _write_frames(ds["skeleton"] / f"{video}.txt", frames)
    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        assert run(["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 0
    _, names, _, _ = load_part(out / "xsub", "train")
    assert f"{video}_000" in names and f"{video}_001" not in names
    skipped = (out / "skipped_samples.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{video}_001\t")
    assert "no skeleton in frames [100, 160)" in skipped[0]


# ------------------------------------------------------------------------------------------- bad input


def _no_complete_output(out: Path) -> None:
    assert not list(out.rglob("*_data_joint.npy")) and not list(out.rglob("*.pkl"))
    assert not list(out.rglob("*.tmp-*"))


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (" ".join(["0.5"] * 149), "line 57: expected 150 numbers (2 persons x 25 joints x xyz), found 149"),
        (" ".join(["0.5"] * 149 + ["abc"]), "line 57: not a number"),
    ],
)
def test_malformed_skeleton_line(tmp_path, capsys, bad_line, message):
    ds = make_dataset(tmp_path / "raw")
    video = ds["videos"][2]
    path = ds["skeleton"] / f"{video}.txt"
    lines = path.read_text().splitlines()
    lines[56] = bad_line
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert run(["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, {message}" in err
    _no_complete_output(out)

    # --skip-bad: the video is left out and listed, the rest is written
    with pytest.warns(UserWarning):
        assert run(["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out), "--skip-bad"]) == 0
    _, names, _, _ = load_part(out / "xsub", "val")
    assert names == [f"{ds['videos'][5]}_{i:03d}" for i in range(3)]
    skipped = (out / "skipped_samples.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{video}\t{path}, line 57")


def test_interval_beyond_file(tmp_path, capsys):
    video = PHASE_VIDEOS[1][0]
    labels = {v: [(3, 10, 50, 1), (4, 400, T_VIDEO + 1 if v == video else 420, 1)] for v in PHASE_VIDEOS[1]}
    ds = make_dataset(tmp_path / "raw", labels=labels)
    out = tmp_path / "out"
    assert run(["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 2
    label_file = ds["label"] / f"{video}.txt"
    assert (
        f"{label_file}, line 2: interval [400, 421) reaches past the skeleton file, which has {T_VIDEO} frames"
        in capsys.readouterr().err
    )
    _no_complete_output(out)

    assert (
        run(
            [
                "--phase",
                "1",
                "--data-path",
                str(ds["skeleton"]),
                "--out-folder",
                str(out),
                "--skip-bad",
                "--benchmarks",
                "xsub",
            ]
        )
        == 0
    )
    _, names, _, _ = load_part(out / "xsub", "train")
    assert f"{video}_000" in names and f"{video}_001" not in names and len(names) == 7
    assert (out / "skipped_samples.txt").read_text().startswith(f"{video}_001\t{label_file}, line 2")


@pytest.mark.parametrize(
    "case, message",
    [
        ("no data folder", "skeleton folder {root}/nowhere does not exist"),
        ("no label folder", "no Label/ or label/ folder next to"),
        ("no split file", "no xview split file found"),
        ("no label file", "label file of"),
        ("bad label line", "line 2: expected 'action_id,start_frame,end_frame,confidence'"),
    ],
)
def test_missing_or_malformed_inputs(tmp_path, capsys, case, message):
    root = tmp_path / "raw"
    ds = make_dataset(root)
    data_path = ds["skeleton"]
    if case == "no data folder":
        data_path = root / "nowhere"
    elif case == "no label folder":
        ds["label"].rename(root / "annotations")
    elif case == "no split file":
        (ds["split"] / "cross-view.txt").unlink()
    elif case == "no label file":
        (ds["label"] / f"{ds['videos'][3]}.txt").unlink()
    else:
        (ds["label"] / f"{ds['videos'][3]}.txt").write_text("3,10,50,1\n3,10\n")
    out = tmp_path / "out"
    assert run(["--phase", "1", "--data-path", str(data_path), "--out-folder", str(out)]) == 2
    assert message.format(root=root) in capsys.readouterr().err
    _no_complete_output(out)


# ------------------------------------------------------------------------------------------- the lineage


def literal_cmd_part(root: Path, split_name: str, part: str) -> tuple[list[str], list[int], np.ndarray, list[int]]:
    """The lineage's PKU-MMD preparation (maoyunyao/CMD ``data_gen/pku_gendata.py``), re-implemented slowly
    from its behaviour: the training ids are line 2 of the split file, split at ', '; one sample per label
    line, named ``<file>_<line>``, label = action id - 1; the rows [start, end) of the skeleton file laid out
    value by value as (xyz, frame, joint, person) with the persons in file order, the first 300 frames put
    into a float32 (N, 3, 300, 25, 2) array, the frame count recorded uncut; then the 2s-AGCN
    pre-normalisation of the whole array (the reference's, re-implemented in bench/literal_data_gen.py)."""
    training = (root / "Split" / split_name).read_text().split("\n")[1].strip("\n").split(", ")
    names, labels, clips, frames = [], [], [], []
    for filename in sorted(p.name for p in (root / "Skeleton").iterdir()):
        if (filename[:-4] in training) != (part == "train"):
            continue
        rows = [[float(v) for v in line.split()] for line in (root / "Skeleton" / filename).read_text().splitlines()]
        for idx, line in enumerate((root / "Label" / filename).read_text().splitlines()):
            action, start, end = (int(float(v)) for v in line.split(",")[:3])
            clip = np.zeros((3, 300, 25, 2), dtype=np.float32)
            for t in range(min(end - start, 300)):
                for m in range(2):
                    for v in range(25):
                        for c in range(3):
                            clip[c, t, v, m] = rows[start + t][m * 75 + v * 3 + c]
            names.append(f"{filename}_{idx}")
            labels.append(action - 1)
            clips.append(clip)
            frames.append(end - start)
    return names, labels, literal_pre_normalization(np.stack(clips)), frames


@pytest.mark.parametrize("phase", [1, 2])
def test_default_preparation_is_the_lineage_s(tmp_path, phase):
    """Persons in file order and long clips cut at 300 frames give CMD's arrays, also for two-person clips
    whose second person moves more (where the energy order, NTU's rule, swaps them)."""
    ds = make_dataset(tmp_path / "raw", phase=phase)
    rng = np.random.default_rng(phase)
    for video in ds["videos"][::2]:  # the two-person videos: person 2 moves far more than person 1
        frames = ds["frames"][video].copy()
        frames[:, 75:] += np.round(0.2 * np.sin(np.arange(len(frames)) / 3.0)[:, None] * rng.random(75), 6)
        _write_frames(ds["skeleton"] / f"{video}.txt", frames)
        ds["frames"][video] = frames
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="cut to their first 300"):
        assert run(["--phase", str(phase), "--data-path", str(ds["skeleton"]), "--out-folder", str(out)]) == 0
    split_name = "cross-subject.txt" if phase == 1 else "cross_subject_v2.txt"
    swapped = 0
    for part in ("train", "val"):
        data, names, labels, num_frame = load_part(out / "xsub", part)
        cmd_names, cmd_labels, cmd_data, cmd_frames = literal_cmd_part(tmp_path / "raw", split_name, part)
        ours = {name.rsplit("_", 1)[0] + ".txt_" + str(int(name.rsplit("_", 1)[1])): i for i, name in enumerate(names)}
        assert sorted(ours) == sorted(cmd_names)
        for j, name in enumerate(cmd_names):
            i = ours[name]
            assert labels[i] == cmd_labels[j] and num_frame[i] == min(cmd_frames[j], 300)
            assert np.abs(data[i] - cmd_data[j]).max() <= 1e-5, name
            video, index = names[i].rsplit("_", 1)
            _, start, end, _ = ds["intervals"][video][int(index)]
            energy, _ = expected_sample(ds["frames"][video], start, end, "truncate", "energy")
            swapped += np.abs(energy - cmd_data[j]).max() > 0.1
    assert any(frames > 300 for frames in cmd_frames)  # a long clip is among them (val of both phases)
    assert swapped >= 2  # the energy order would have put the second person first


@pytest.mark.parametrize("kind", ["broken link", "fifo", "folder"])
def test_inputs_that_are_not_files_are_errors_or_listed_skips(tmp_path, capsys, kind):
    ds = make_dataset(tmp_path / "raw")
    argv = ["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(tmp_path / "out")]
    argv += ["--benchmarks", "xsub"]
    problem = {
        "broken link": "a broken symbolic link",
        "fifo": "not a regular file (a FIFO, socket or device)",
        "folder": "a folder, not a file",
    }[kind]
    for path in (ds["label"] / f"{ds['videos'][3]}.txt", ds["skeleton"] / f"{ds['videos'][2]}.txt"):
        content = path.read_bytes()
        path.unlink()
        if kind == "broken link":
            path.symlink_to(tmp_path / "gone.txt")
        elif kind == "fifo":
            os.mkfifo(path)  # reading it would wait forever
        else:
            path.mkdir()
        assert run(argv) == 2
        assert capsys.readouterr().err.split(": error: ")[1].startswith(f"{path}: {problem}")
        with pytest.warns(UserWarning):
            assert run([*argv, "--skip-bad"]) == 0
        video = path.stem
        assert (tmp_path / "out" / "skipped_samples.txt").read_text().startswith(f"{video}\t{path}: {problem}")
        names = load_part(tmp_path / "out" / "xsub", "train")[1] + load_part(tmp_path / "out" / "xsub", "val")[1]
        assert len(names) == 13 - 2  # the video's two clips are left out
        assert not any(name.startswith(video) for name in names)
        path.rmdir() if kind == "folder" else path.unlink()
        path.write_bytes(content)
