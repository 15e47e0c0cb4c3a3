"""CTR-GCN npz export/import: the literal layout, exact round trips, streaming, and one-line errors on bad files."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.manifest import verify
from data_gen import ctrgcn_npz as cn
from data_gen.writer import npy_header
from tests.helpers import SPLIT_FILES, load_part, make_prepared_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_prepared_root(tmp_path_factory.mktemp("ctrgcn"))


def xview(root: Path) -> Path:
    return root / "NTU-RGB-D-60-AGCN" / "xview"


def export(root: Path, out: Path, *extra: str) -> int:
    return cn.main(
        [
            "export",
            "--data-root",
            str(root),
            "--dataset",
            "ntu60",
            "--benchmark",
            "xview",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


def import_(npz: Path, root: Path, benchmark: str = "xview") -> int:
    return cn.main(
        [
            "import",
            "--npz",
            str(npz),
            "--data-root",
            str(root),
            "--dataset",
            "ntu60",
            "--benchmark",
            benchmark,
            "--no-progress",
        ]
    )


def literal_ctrgcn_rows(data: np.ndarray, num_frame: int) -> np.ndarray:
    """CTR-GCN's frame vector, element by element: for each frame, for m in persons, for v in joints, for c in xyz
    (frames after the clip's end are zero, as seq_transformation.py pads)."""
    _, frames, joints, persons = data.shape
    out = np.zeros((frames, persons * joints * 3), dtype=np.float32)
    for t in range(num_frame):
        values = []
        for m in range(persons):
            for v in range(joints):
                for c in range(3):
                    values.append(data[c, t, v, m])
        out[t] = values
    return out


def test_export_is_the_ctrgcn_layout(root, tmp_path):
    out = tmp_path / "NTU60_CV.npz"
    assert export(root, out) == 0
    npz = np.load(out)
    assert sorted(npz.files) == sorted(f"{a}_{k}" for a in ("x", "y", "names", "num_frame") for k in ("train", "test"))
    for part, key in (("train", "train"), ("val", "test")):
        data, names, labels, num_frame = load_part(xview(root), part)
        x, y = npz[f"x_{key}"], npz[f"y_{key}"]
        assert x.dtype == np.float32 and x.shape == (len(names), 300, 150)
        assert y.dtype == np.float32 and y.shape == (len(names), 60)
        two_person = [i for i, label in enumerate(labels) if label == 3]  # the synthetic two-person class
        for i in sorted({0, len(names) - 1, *two_person[:1]}):
            np.testing.assert_array_equal(x[i], literal_ctrgcn_rows(data[i], int(num_frame[i])))
        assert np.abs(x[two_person[0], :, 75:]).max() > 0.1  # person 2 really is in values 75..149
        assert [int(np.flatnonzero(row)[0]) for row in y] == labels and (y.sum(axis=1) == 1).all()
        # What CTR-GCN's feeder does with it: reshape to (N, T, M, V, C), coordinates first.
        back = x.reshape(len(x), 300, 2, 25, 3).transpose(0, 4, 1, 3, 2)
        assert np.array_equal(
            np.where(np.arange(300)[None, None, :, None, None] < num_frame[:, None, None, None, None], data, 0), back
        )
        assert list(npz[f"names_{key}"]) == names
        assert np.array_equal(npz[f"num_frame_{key}"], num_frame)


def test_round_trip_with_padding_kept_is_byte_exact(root, tmp_path):
    out = tmp_path / "a.npz"
    assert export(root, out, "--keep-padding") == 0
    assert import_(out, tmp_path / "back") == 0
    back = xview(tmp_path / "back")
    for name in SPLIT_FILES:
        assert (back / name).read_bytes() == (xview(root) / name).read_bytes(), name
    assert verify(back) == []  # import wrote a manifest that matches


def test_round_trips_without_padding(root, tmp_path):
    """ours -> npz -> ours: exact on the real frames, zeros after; npz -> ours -> npz: every array identical."""
    first = tmp_path / "first.npz"
    assert export(root, first) == 0
    assert import_(first, tmp_path / "back") == 0
    for part in ("train", "val"):
        data, names, labels, num_frame = load_part(xview(root), part)
        data2, names2, labels2, num_frame2 = load_part(xview(tmp_path / "back"), part)
        assert (names2, labels2) == (names, labels) and np.array_equal(num_frame2, num_frame)
        real = np.arange(300)[None, None, :, None, None] < num_frame[:, None, None, None, None]
        assert np.array_equal(data2, np.where(real, data, 0))
    second = tmp_path / "second.npz"
    assert export(tmp_path / "back", second) == 0
    a, b = np.load(first), np.load(second)
    for key in a.files:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def _foreign_npz(path: Path, rng: np.random.Generator, compressed: bool = False, width: int = 60):
    """An npz as seq_transformation.py writes it (no extra arrays, float64 one-hot ``width`` wide), with known
    frame counts."""
    arrays, truth = {}, {}
    for key, n in (("train", 5), ("test", 3)):
        lengths = rng.integers(1, 300, n)
        lengths[0] = 300
        x = np.zeros((n, 300, 150), dtype=np.float32)
        for i, length in enumerate(lengths):
            x[i, :length, : 75 if i % 2 else 150] = rng.normal(size=(length, 75 if i % 2 else 150))
        if n > 1:
            x[1, lengths[1] // 2] = 0  # an empty frame inside a clip does not end it
        labels = rng.integers(0, 60, n)
        arrays[f"x_{key}"], arrays[f"y_{key}"] = x, np.eye(width)[labels]
        truth[key] = (x, labels, lengths)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return truth


@pytest.mark.parametrize("compressed", [False, True])
def test_import_of_a_file_without_extra_arrays(tmp_path, compressed):
    truth = _foreign_npz(tmp_path / "NTU60_CS.npz", np.random.default_rng(0), compressed, width=60 + 60 * compressed)
    assert import_(tmp_path / "NTU60_CS.npz", tmp_path / "r", "xsub") == 0
    folder = tmp_path / "r" / "NTU-RGB-D-60-AGCN" / "xsub"
    for part, key in (("train", "train"), ("val", "test")):
        x, labels, lengths = truth[key]
        data, names, got_labels, num_frame = load_part(folder, part)
        assert names == [f"{key}_{i}" for i in range(len(x))]
        assert got_labels == labels.tolist() and np.array_equal(num_frame, lengths)
        for i in range(len(x)):
            np.testing.assert_array_equal(literal_ctrgcn_rows(data[i], 300), x[i])


def test_streaming_keeps_memory_to_a_few_blocks(tmp_path, monkeypatch):
    """Blocks of 2 clips: the peak of either direction stays far below the size of x (64 clips, 11.5 MB)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 300, 150)).astype(np.float32)
    np.savez(
        tmp_path / "big.npz",
        x_train=x,
        y_train=np.eye(60)[rng.integers(0, 60, 64)],
        x_test=x[:2],
        y_test=np.eye(60)[[0, 1]],
    )
    del x
    monkeypatch.setattr(cn, "ROWS_PER_BLOCK", 2)
    tracemalloc.start()
    try:
        assert import_(tmp_path / "big.npz", tmp_path / "r", "xsub") == 0
        _, peak_import = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert (
            cn.main(
                [
                    "export",
                    "--data-root",
                    str(tmp_path / "r"),
                    "--dataset",
                    "ntu60",
                    "--benchmark",
                    "xsub",
                    "--out",
                    str(tmp_path / "again.npz"),
                    "--no-progress",
                ]
            )
            == 0
        )
        _, peak_export = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = 64 * 300 * 150 * 4
    assert peak_import < 0.25 * size and peak_export < 0.25 * size, (peak_import, peak_export, size)
    assert np.array_equal(np.load(tmp_path / "again.npz")["x_train"], np.load(tmp_path / "big.npz")["x_train"])


def _good_arrays() -> dict[str, np.ndarray]:
    x = np.ones((2, 300, 150), dtype=np.float32)
    return {
        "x_train": x,
        "y_train": np.eye(60, dtype=np.float32)[[0, 1]],
        "x_test": x[:1],
        "y_test": np.eye(60, dtype=np.float32)[[2]],
    }


def _bad(name: str) -> dict[str, np.ndarray]:
    arrays = _good_arrays()
    if name == "missing":
        del arrays["y_test"]
    elif name == "shape":
        arrays["x_train"] = np.ones((2, 300, 75), dtype=np.float32)  # one person only
    elif name == "classes":
        arrays["y_train"] = np.eye(50, dtype=np.float32)[[0, 1]]
    elif name == "label":  # wider one-hot rows are fine, a class beyond the dataset's is not
        arrays["y_train"] = np.eye(120, dtype=np.float32)[[0, 100]]
    elif name == "one_hot":
        arrays["y_test"] = arrays["y_test"] + np.eye(60, dtype=np.float32)[[5]]
    elif name == "nan":
        arrays["x_test"] = arrays["x_test"].copy()
        arrays["x_test"][0, 7, 3] = np.nan
    elif name == "objects":
        arrays["names_train"] = np.array(["a", 1], dtype=object)
    elif name == "frames":
        arrays["num_frame_test"] = np.array([301])
    elif name == "duplicate":
        arrays["names_train"] = np.array(["a", "a"])
    elif name == "duplicate_across":
        arrays["names_train"], arrays["names_test"] = np.array(["a", "b"]), np.array(["b"])
    elif name == "long":
        arrays["x_train"] = np.ones((2, 301, 150), dtype=np.float32)
    elif name == "overflow":  # finite as float64, infinite once stored as float32
        arrays["x_train"] = np.ones((2, 300, 150))
        arrays["x_train"][1, 5, 7] = 1e300
    elif name == "long_name":
        arrays["names_train"] = np.array(["a", "b" * 257])
    return arrays


BAD_CASES = {
    "missing": "'y_test'",
    "shape": "x_train has shape (2, 300, 75)",
    "classes": "y_train has shape (2, 50) dtype float32, expected (2, 60)",
    "label": "y_train row 1 is class 100, outside the 60 classes (0..59)",
    "one_hot": "y_test row 0 is not one-hot",
    "nan": "x_test row 0 holds values that are not finite as float32",
    "objects": "names_train is not a C-order array of numbers or strings (objects are not read)",
    "duplicate": "names_train row 1 is 'a', as names_train row 0 is; names must differ",
    "duplicate_across": "names_test row 0 is 'b', as names_train row 1 is; names must differ",
    "long": "x_train has shape (2, 301, 150) dtype float32, expected floats (N, T, 150) with T at most 300",
    "overflow": "x_train row 1 holds values that are not finite as float32",
    "long_name": "names_train has shape (2,) dtype <U257, expected (2,) strings of at most 256 characters",
    "frames": "num_frame_test must lie in [0, 300]",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_npz_gives_one_line_and_writes_nothing(case, root, tmp_path, capsys):
    bad = tmp_path / f"{case}.npz"
    np.savez(bad, **_bad(case))
    target = tmp_path / "r"
    assert import_(bad, target) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and BAD_CASES[case] in err, err
    assert not any(p.is_file() for p in target.rglob("*"))


def test_a_late_error_replaces_nothing(root, tmp_path, capsys):
    """NaN in the last part: the train part was already streamed; the previous good files stay, no partials."""
    target = tmp_path / "r"
    good = tmp_path / "good.npz"
    assert export(root, good) == 0 and import_(good, target) == 0
    folder = xview(target)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = tmp_path / "late.npz"
    np.savez(bad, **_bad("nan"))
    assert import_(bad, target) == 2
    assert "x_test row 0 holds values that are not finite as float32" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_not_a_zip_and_truncated_member(tmp_path, capsys):
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    assert import_(text, tmp_path / "r") == 2
    assert "not an .npz (zip) archive" in capsys.readouterr().err
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(cut, "w") as zf:  # x_train's header announces 2 rows, the data holds 1
        for key, array in _good_arrays().items():
            with zf.open(f"{key}.npy", "w") as f:
                f.write(npy_header(array.shape, array.dtype))
                f.write(array[:1].tobytes() if key == "x_train" else array.tobytes())
    assert import_(cut, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x_train: its header declares shape (2, 300, 150) float32 (360,128 bytes)" in err
    assert not any(p.is_file() for p in (tmp_path / "r").rglob("*"))


def test_unknown_benchmark_and_missing_split(tmp_path, capsys):
    assert (
        cn.main(
            [
                "export",
                "--data-root",
                str(tmp_path),
                "--dataset",
                "ntu60",
                "--benchmark",
                "xsetup",
                "--out",
                str(tmp_path / "o.npz"),
            ]
        )
        == 2
    )
    assert "ntu60 has no benchmark 'xsetup'; expected one of xview, xsub" in capsys.readouterr().err
    assert (
        cn.main(
            [
                "export",
                "--data-root",
                str(tmp_path),
                "--dataset",
                "ntu60",
                "--benchmark",
                "xsub",
                "--out",
                str(tmp_path / "o.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_data_joint.npy not found" in err and not (tmp_path / "o.npz").exists()


def test_what_a_file_declares_is_checked_before_anything_is_read(tmp_path, capsys):
    """A member declaring 10^7 frames a clip (6 GB, a zip bomb of zeros) is refused from its header: the
    peak memory of the import stays far below one such row; likewise a header that declares more rows than
    the member holds."""
    arrays = _good_arrays()
    for shape in ((1, 10**7, 150), (10**7, 300, 150)):
        path = tmp_path / f"bomb{shape[0]}.npz"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, array in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    f.write(npy_header(shape if key == "x_train" else array.shape, array.dtype))
                    f.write(np.zeros(1 << 20, np.uint8).tobytes() if key == "x_train" else array.tobytes())
        tracemalloc.start()
        try:
            assert import_(path, tmp_path / "r") == 2
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {path}: x_train" in err and peak < 20_000_000, (err, peak)
        assert not any(p.is_file() for p in (tmp_path / "r").rglob("*"))


def test_export_refuses_an_output_that_cannot_be_a_file_before_reading(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cn, "open_part", lambda *a: pytest.fail("the split was read before --out was checked"))
    (tmp_path / "folder.npz").mkdir()
    assert export(root, tmp_path / "folder.npz") == 2
    assert capsys.readouterr().err.endswith(f"error: --out {tmp_path / 'folder.npz'} is a folder; give a file name\n")
