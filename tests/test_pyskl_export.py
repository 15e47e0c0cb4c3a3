"""pyskl 3D annotation pickle export: pyskl's layout, and an exact round trip through our own importer."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_gen import pyskl_convert, pyskl_export
from tests.helpers import load_part, make_prepared_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_prepared_root(tmp_path_factory.mktemp("pyskl_export"))


def export(root: Path, out: Path, *args: str) -> int:
    return pyskl_export.main(["--data-root", str(root), "--out", str(out), "--no-progress", *args])


def test_pickle_has_pyskl_layout(root, tmp_path):
    out = tmp_path / "ntu60_3danno.pkl"
    assert export(root, out, "--dataset", "ntu60", "--benchmark", "xsub", "xview") == 0
    with open(out, "rb") as f:
        content = pickle.load(f)
    assert set(content) == {"split", "annotations"}
    assert set(content["split"]) == {"xsub_train", "xsub_val", "xview_train", "xview_val"}
    annotations = {a["frame_dir"]: a for a in content["annotations"]}
    assert len(annotations) == len(content["annotations"]) == 24  # each clip once, though in two benchmarks
    folder = root / "NTU-RGB-D-60-AGCN" / "xview"
    person_counts = []
    for part in ("train", "val"):
        data, names, labels, num_frame = load_part(folder, part)
        assert content["split"][f"xview_{part}"] == [n.removesuffix(".skeleton") for n in names]
        for i, name in enumerate(names):
            anno = annotations[name.removesuffix(".skeleton")]
            assert set(anno) == {"frame_dir", "label", "total_frames", "keypoint"}
            assert anno["label"] == labels[i] and anno["total_frames"] == num_frame[i]
            keypoint = anno["keypoint"]
            # A second person only when one is there (an actor or a noise body) in the real frames.
            persons = 2 if np.any(data[i, :, : num_frame[i], :, 1]) else 1
            assert persons == 2 or labels[i] != 3  # class 3 is the synthetic two-person action
            person_counts.append(persons)
            assert keypoint.shape == (persons, num_frame[i], 25, 3) and keypoint.dtype == np.float32
            m, t, v = persons - 1, int(num_frame[i]) - 1, 24  # one element, spelled out: keypoint[m, t, v, c]
            assert [keypoint[m, t, v, c] for c in range(3)] == [data[i, c, t, v, m] for c in range(3)]
            assert np.array_equal(keypoint, data[i, :, : num_frame[i], :, :persons].transpose(3, 1, 2, 0))
    assert set(person_counts) == {1, 2}


def test_round_trip_through_pyskl_convert(root, tmp_path):
    out = tmp_path / "a.pkl"
    assert export(root, out, "--dataset", "ntu60", "--benchmark", "xsub", "xview") == 0
    back = tmp_path / "back"
    assert (
        pyskl_convert.main(
            ["--annotation", str(out), "--out-folder", str(back), "--normalize", "none", "--no-progress"]
        )
        == 0
    )
    for benchmark in ("xsub", "xview"):
        for part in ("train", "val"):
            data, names, labels, num_frame = load_part(root / "NTU-RGB-D-60-AGCN" / benchmark, part)
            data2, names2, labels2, num_frame2 = load_part(back / benchmark, part)
            assert (names2, labels2) == (names, labels) and np.array_equal(num_frame2, num_frame)
            real = np.arange(300)[None, None, :, None, None] < num_frame[:, None, None, None, None]
            assert np.array_equal(data2, np.where(real, data, 0))  # pyskl keeps real frames only


def test_xsetup_is_pyskl_xset_and_float16(root, tmp_path):
    ntu120 = tmp_path / "data" / "NTU-RGB-D-120-AGCN" / "xsetup"
    shutil.copytree(root / "NTU-RGB-D-60-AGCN" / "xsub", ntu120)
    out = tmp_path / "ntu120.pkl"
    assert export(tmp_path / "data", out, "--dataset", "ntu120", "--benchmark", "xsetup", "--dtype", "float16") == 0
    with open(out, "rb") as f:
        content = pickle.load(f)
    assert set(content["split"]) == {"xset_train", "xset_val"}
    assert all(a["keypoint"].dtype == np.float16 for a in content["annotations"])


def test_bad_input_gives_one_line(root, tmp_path, capsys):
    out = tmp_path / "x.pkl"
    assert export(tmp_path, out, "--dataset", "ntu60", "--benchmark", "xsub") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_data_joint.npy not found" in err and not out.exists()
    folder = tmp_path / "data" / "NTU-RGB-D-60-AGCN" / "xsub"
    shutil.copytree(root / "NTU-RGB-D-60-AGCN" / "xsub", folder)
    with open(folder / "val_label.pkl", "wb") as f:  # an NTU 120 label in an NTU 60 folder
        pickle.dump((["S001C001P001R001A100.skeleton"] * 12, [99] * 12), f)
    assert export(tmp_path / "data", out, "--dataset", "ntu60", "--benchmark", "xsub") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "val_label.pkl: label 99 is outside 0..59" in err and not out.exists()


def test_an_output_that_cannot_be_a_file_is_refused_before_reading(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pyskl_export, "build_content", lambda *a: pytest.fail("the splits were read before --out"))
    (tmp_path / "out.pkl").mkdir()
    assert export(root, tmp_path / "out.pkl", "--dataset", "ntu60", "--benchmark", "xsub") == 2
    assert capsys.readouterr().err.endswith(f"error: --out {tmp_path / 'out.pkl'} is a folder; give a file name\n")
