"""pyskl 3D annotation pickles -> the training layout: shapes, names, labels, splits, normalisation, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from common.manifest import verify
from data_gen import pyskl_convert as pc
from data_gen.normalize import normalize_sample, select_bodies
from tests.helpers import load_part


def _keypoint(rng: np.random.Generator, persons: int, frames: int) -> np.ndarray:
    """(M, T, 25, 3) float16 camera coordinates, as pyskl stores them (no centring, no rotation)."""
    base = rng.normal(0.0, 0.3, size=(persons, 1, 25, 3)) + np.array([0.2, 0.1, 3.0])
    t = np.arange(frames)[None, :, None, None]
    scale = rng.uniform(0.01, 0.1, size=(persons, 1, 1, 1))  # persons move by different amounts
    return (base + scale * np.sin(t / 7.0 + rng.random((persons, 1, 25, 1)))).astype(np.float16)


def make_pickle(path: Path, ntu120: bool = False, seed: int = 0) -> dict:
    """A small pickle in pyskl's format: NTU names, xsub and xview (or xset) splits, 1 or 2 persons."""
    rng = np.random.default_rng(seed)
    names, annotations = [], []
    for i in range(8):
        setup, camera, subject, action = 1 + i % 3, 1 + i % 3, 1 + i, 1 + (5 * i) % 60
        if ntu120 and i == 7:
            action = 117
        name = f"S{setup:03d}C{camera:03d}P{subject:03d}R001A{action:03d}"
        frames = 320 if i == 5 else 40 + 7 * i  # one sequence longer than 300 frames
        keypoint = _keypoint(rng, persons=1 + i % 2, frames=frames)
        annotations.append(dict(frame_dir=name, label=action - 1, total_frames=frames, keypoint=keypoint))
        names.append(name)
    xsub_train = [n for n in names if int(n[9:12]) in (1, 2, 4, 5, 8)]
    split = dict(xsub_train=xsub_train, xsub_val=[n for n in names if n not in xsub_train])
    if ntu120:
        split.update(
            xset_train=[n for n in names if int(n[1:4]) % 2 == 0], xset_val=[n for n in names if int(n[1:4]) % 2 == 1]
        )
    else:
        split.update(xview_train=[n for n in names if "C001" not in n], xview_val=[n for n in names if "C001" in n])
    content = dict(split=split, annotations=annotations)
    with open(path, "wb") as f:
        pickle.dump(content, f)
    return content


def run(argv: list[str]) -> int:
    return pc.main(argv + ["--no-progress"])


def literal_layout(keypoint: np.ndarray) -> np.ndarray:
    """Slow reference for --normalize none: (M, T, V, C) -> zero-padded (3, 300, 25, 2), element by element."""
    out = np.zeros((3, 300, 25, 2), dtype=np.float32)
    for m in range(min(2, keypoint.shape[0])):
        for t in range(min(300, keypoint.shape[1])):
            for v in range(25):
                for c in range(3):
                    out[c, t, v, m] = keypoint[m, t, v, c]
    return out


@pytest.mark.parametrize("normalize", ["agcn", "none"])
def test_convert_ntu60(tmp_path, normalize):
    content = make_pickle(tmp_path / "ntu60_3danno.pkl")
    by_name = {a["frame_dir"]: a for a in content["annotations"]}
    out = tmp_path / "NTU-RGB-D-60-AGCN"
    with pytest.warns(UserWarning, match="1 clips longer than 300 frames were cut to their first 300"):
        assert (
            run(
                ["--annotation", str(tmp_path / "ntu60_3danno.pkl"), "--out-folder", str(out), "--normalize", normalize]
            )
            == 0
        )
    assert sorted(p.name for p in out.iterdir()) == ["xsub", "xview"]
    for benchmark in ("xsub", "xview"):
        for part in ("train", "val"):
            data, names, labels, num_frame = load_part(out / benchmark, part)
            expected = sorted(n + ".skeleton" for n in content["split"][f"{benchmark}_{part}"])
            assert names == expected and len(names) > 0
            assert data.shape == (len(names), 3, 300, 25, 2) and data.dtype == np.float32
            for row, name in enumerate(names):
                anno = by_name[name[: -len(".skeleton")]]
                assert labels[row] == anno["label"]
                assert num_frame[row] == min(anno["total_frames"], 300)
                raw = literal_layout(anno["keypoint"].astype(np.float64))
                if normalize == "none":
                    np.testing.assert_array_equal(data[row], raw)
                else:
                    want = normalize_sample(select_bodies(anno["keypoint"].astype(np.float64)))
                    np.testing.assert_allclose(data[row], want, atol=1e-6)
                    # the flag matters: centred on person 1's spine, unlike the camera coordinates
                    np.testing.assert_allclose(data[row, :, :, 1, 0], 0.0, atol=1e-5)
                    assert np.abs(raw[2, 0, 1, 0]) > 2.0
    assert not list(out.rglob("*.tmp-*")) and not (out / "skipped_samples.txt").exists()
    for benchmark in ("xsub", "xview"):
        assert verify(out / benchmark) == []
    manifest = json.loads((out / "xsub" / "manifest.json").read_text())
    assert manifest["tool"] == "data_gen/pyskl_convert.py"
    assert manifest["arguments"]["dataset"] == "ntu60" and manifest["arguments"]["normalize"] == normalize

    from common.split_folder import check_split
    from feeders.datasets import split_paths

    assert check_split(split_paths(tmp_path, "ntu60", "cross_subject", "val")) == 3


def test_person_order_by_energy():
    # energy = std of the coordinates over joints and frames: a still, compact person 0 has less of it, so
    # agcn puts person 1 first (the raw pipeline's rule); none keeps the pickle's order
    rng = np.random.default_rng(3)
    keypoint = _keypoint(rng, persons=2, frames=30).astype(np.float64)
    still = keypoint[0, :1]
    keypoint[0] = 0.2 * (still - still.mean(axis=1, keepdims=True)) + still.mean(axis=1, keepdims=True)
    out = pc.convert_keypoint(keypoint, "agcn")
    kept = pc.convert_keypoint(keypoint, "none")
    np.testing.assert_array_equal(kept, literal_layout(keypoint))
    np.testing.assert_allclose(out, normalize_sample(literal_layout(keypoint[::-1])), atol=1e-6)


def test_convert_ntu120_auto_and_splits(tmp_path):
    content = make_pickle(tmp_path / "ntu120_3danno.pkl", ntu120=True)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="longer than 300"):
        assert (
            run(
                [
                    "--annotation",
                    str(tmp_path / "ntu120_3danno.pkl"),
                    "--out-folder",
                    str(out),
                    "--splits",
                    "xsetup",
                    "--workers",
                    "2",
                ]
            )
            == 0
        )
    assert sorted(p.name for p in out.iterdir()) == ["xsetup"]  # xset -> xsetup, xsub not asked for
    _, names, labels, _ = load_part(out / "xsetup", "val")
    assert names == sorted(n + ".skeleton" for n in content["split"]["xset_val"])
    _, names, labels, _ = load_part(out / "xsetup", "train")
    assert names == sorted(n + ".skeleton" for n in content["split"]["xset_train"])
    assert labels[names.index("S002C002P008R001A117.skeleton")] == 116  # a label >= 60, kept as given

    # auto-detection picks the 120-class default folder
    assert pc.detect_dataset(content["split"], [116]) == "ntu120"
    assert pc.detect_dataset({"xsub_train": [], "xsub_val": []}, [3, 59]) == "ntu60"


@pytest.mark.parametrize(
    "case, message",
    [
        ("no split", "missing key(s) 'split'; a pyskl annotation file is a dict with 'split' and 'annotations'"),
        ("no annotations", "missing key(s) 'annotations'"),
        ("not a dict", "expected a dict with keys 'split' and 'annotations', got list"),
        ("not a pickle", "not a readable pickle"),
        ("no keypoint", "annotations[2]: missing key(s) 'keypoint'"),
        ("2d", "has C=2 coordinates; a 3D annotation file (x, y, z) is needed"),
        ("total_frames", "'total_frames' is 999 but 'keypoint' has"),
        ("unlisted", "'S009C001P001R001A001' is listed in 'split'['xsub_val'] but has no annotation"),
        ("label", "has label 60, outside 0..59 of ntu60"),
        ("no pair", "'split' has no <benchmark>_train / <benchmark>_val pair"),
    ],
)
def test_bad_pickles(tmp_path, capsys, case, message):
    path = tmp_path / "anno.pkl"
    content = make_pickle(path)
    if case == "no split":
        del content["split"]
    elif case == "no annotations":
        del content["annotations"]
    elif case == "not a dict":
        content = [content]
    elif case == "no keypoint":
        del content["annotations"][2]["keypoint"]
    elif case == "2d":
        content["annotations"][2]["keypoint"] = content["annotations"][2]["keypoint"][..., :2]
    elif case == "total_frames":
        content["annotations"][2]["total_frames"] = 999
    elif case == "unlisted":
        content["split"]["xsub_val"].append("S009C001P001R001A001")
    elif case == "label":
        content["annotations"][2]["label"] = 60
    elif case == "no pair":
        content["split"] = {"train": [], "val": []}
    if case == "not a pickle":
        path.write_text("frame_dir,label\n")
    else:
        with open(path, "wb") as f:
            pickle.dump(content, f)
    out = tmp_path / "out"
    argv = ["--annotation", str(path), "--out-folder", str(out)] + (["--dataset", "ntu60"] if case == "label" else [])
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not list(out.rglob("*.npy")) and not list(out.rglob("*.pkl")) and not list(out.rglob("*.tmp-*"))


def test_skip_bad_and_unknown_split(tmp_path, capsys):
    path = tmp_path / "anno.pkl"
    content = make_pickle(path)
    bad = content["annotations"][4]["frame_dir"]
    del content["annotations"][4]["keypoint"]
    with open(path, "wb") as f:
        pickle.dump(content, f)
    out = tmp_path / "out"
    assert run(["--annotation", str(path), "--out-folder", str(out), "--splits", "xset"]) == 2
    assert "no benchmark 'xset'; it has xsub, xview" in capsys.readouterr().err

    with pytest.warns(UserWarning, match="longer than 300"):
        assert run(["--annotation", str(path), "--out-folder", str(out), "--skip-bad", "--splits", "xsub"]) == 0
    lines = (out / "skipped_samples.txt").read_text().splitlines()
    assert lines[0].startswith(f"{bad}\t{path}: annotations[4]: missing key(s) 'keypoint'")
    assert any(line.startswith(f"{bad}\t") and "has no annotation" in line for line in lines[1:])
    names = load_part(out / "xsub", "train")[1] + load_part(out / "xsub", "val")[1]
    assert len(names) == 7 and bad + ".skeleton" not in names


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"xsetup_train": [], "xsetup_val": []},
            "'split' keys 'xset_train' and 'xsetup_train' are both the benchmark xsetup",
        ),
        ({"xset_test": []}, "'split' has both 'xset_val' and 'xset_test'; which one is xset's test part?"),
        (
            {"skipped_samples.txt_train": [], "skipped_samples.txt_val": []},
            "'skipped_samples.txt' cannot be a folder name",
        ),
        ({"manifest.json_train": [], "manifest.json_test": []}, "'manifest.json' cannot be a folder name"),
        ({".skeleton-contrast_train": [], ".skeleton-contrast_val": []}, "cannot be a folder name"),
    ],
)
def test_ambiguous_or_colliding_split_names_are_refused_before_writing(tmp_path, capsys, extra, message):
    """Two lists for one part of a benchmark, or a split name that would collide with the folder's own
    files, would lose a list silently or write where the folder's files go: refused, nothing written."""
    path = tmp_path / "ntu120_3danno.pkl"
    content = make_pickle(path, ntu120=True)
    content["split"].update(extra)
    path.write_bytes(pickle.dumps(content))
    out = tmp_path / "out"
    assert run(["--annotation", str(path), "--out-folder", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {path}: " in err and message in err, err
    assert not out.exists()
