"""data_gen: parser, normalisation steps against the literal reference, splits, bad inputs, end to end."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest

from bench.literal_data_gen import (
    literal_angle_between,
    literal_center,
    literal_main,
    literal_nonzero_std,
    literal_pad,
    literal_pre_normalization,
    literal_read_skeleton,
    literal_read_xyz,
    literal_rotate,
    literal_rotation_matrix,
)
from common.manifest import verify
from data_gen import ntu_gendata, writer
from data_gen.normalize import (
    align_to_axes,
    body_energy,
    center_on_joint,
    normalize_sample,
    pad_null_frames,
    rotation_between,
    select_bodies,
)
from data_gen.ntu_splits import (
    DEFAULT_IGNORED_LISTS,
    XSUB_TRAIN_SUBJECTS,
    is_training,
    parse_sample_name,
    read_ignored_list,
)
from data_gen.skeleton_reader import SkeletonFormatError, read_skeleton
from data_gen.synthetic import skeleton_text, write_synthetic_ntu
from engine.plots import action_names
from tests.helpers import SPLIT_FILES

SPLIT_FOLDER_FILES = tuple(sorted((*SPLIT_FILES, "manifest.json")))


# ---- helpers ------------------------------------------------------------------------------------


def joint_line(x: float, y: float, z: float, state: int = 2) -> str:
    return f"{x} {y} {z} 250.5 200.25 900.1 500.2 0.5 0.1 -0.2 0.3 {state}"


def body_block(values: np.ndarray, body_id: int = 72057594037931101, num_joints: int = 25) -> list[str]:
    """Lines of one body: 10 body fields, the joint count, a joint line per row of ``values`` (J, 3)."""
    lines = [f"{body_id} 0 1 1 1 1 0 0.1176251 0.1456264 2", str(num_joints)]
    lines += [joint_line(*row) for row in values]
    return lines


def write_text(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def coords(frame: int, body: int, num_joints: int = 25) -> np.ndarray:
    """Distinct, exactly representable test coordinates for (frame, body): (J, 3)."""
    j = np.arange(num_joints)
    return np.stack(
        [frame + 0.25 * body + 0.0078125 * j, -1.5 + 0.125 * j, np.full(num_joints, 2.5 + frame * 0.5 + body)], -1
    )


def hand_written_file(path: Path, newline: str = "\n") -> Path:
    """Four frames: no body; one body; five bodies (the fifth is dropped); two bodies with 26 joints."""
    lines = ["4", "0", "1", *body_block(coords(1, 0)), "5"]
    for b in range(5):
        lines += body_block(coords(2, b))
    lines += ["2"]
    for b in range(2):
        extra = np.vstack([coords(3, b), [[9.0, 9.0, 9.0]]])  # a 26th joint, read past and dropped
        lines += body_block(extra, num_joints=26)
    return write_text(path, lines, newline)


def run_main(args: list[str], capsys=None) -> tuple[int, str]:
    """main(args) -> (exit code, stderr); SystemExit is turned into its code."""
    try:
        code = ntu_gendata.main(args + ["--no-progress"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def read_labels(path: Path) -> tuple[list, list]:
    with open(path, "rb") as f:
        return pickle.load(f)


def outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """4 classes x 6 samples (the last class two-person): every class in every split's train and val."""
    folder = tmp_path_factory.mktemp("raw")
    write_synthetic_ntu(folder, num_classes=4, samples_per_class=6, seed=3)
    return folder


@pytest.fixture(scope="module")
def ignored_list(tmp_path_factory, synthetic_dir) -> Path:
    """An official-style list (two prose lines) that leaves out two of the synthetic files.

    Names without ``.skeleton``, as in the official lists: the reference reads only that form.
    """
    names = sorted(p.name for p in synthetic_dir.glob("*.skeleton"))
    path = tmp_path_factory.mktemp("lists") / "ignored.txt"
    path.write_text(
        "302 of the captured samples have missing skeletons.\nPlease ignore them.\n\n"
        f"{names[1][:-9]}\n{names[5][:-9]}\n"
    )
    return path


# ---- parser -------------------------------------------------------------------------------------


def test_read_skeleton_hand_written_file(tmp_path):
    raw = read_skeleton(hand_written_file(tmp_path / "S001C001P001R001A001.skeleton"))
    assert raw.num_frames == 4
    assert raw.bodies.shape == (4, 4, 25, 3) and raw.bodies.dtype == np.float64
    assert not raw.bodies[:, 0].any()  # frame 1 has no body
    np.testing.assert_array_equal(raw.bodies[0, 1], coords(1, 0))
    assert not raw.bodies[1:, 1].any()
    for b in range(4):  # the 5th body of frame 3 is beyond the 4 Kinect slots
        np.testing.assert_array_equal(raw.bodies[b, 2], coords(2, b))
    for b in range(2):  # the 26th joint is dropped
        np.testing.assert_array_equal(raw.bodies[b, 3], coords(3, b))
    assert not raw.bodies[2:, 3].any()


def test_read_skeleton_matches_literal_parse_and_crlf(tmp_path):
    path = hand_written_file(tmp_path / "lf.skeleton")
    crlf = hand_written_file(tmp_path / "crlf.skeleton", newline="\r\n")
    literal = literal_read_skeleton(str(path))
    raw = read_skeleton(path)
    for t, frame in enumerate(literal["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"][:4]):
            expected = [[j["x"], j["y"], j["z"]] for j in body["jointInfo"][:25]]
            np.testing.assert_array_equal(raw.bodies[m, t], expected)
    np.testing.assert_array_equal(read_skeleton(crlf).bodies, raw.bodies)


@pytest.mark.parametrize(
    "cut, line, expected",
    [
        (lambda ls: ls[:0], 1, "frame count"),  # empty file
        (lambda ls: ["x"] + ls[1:], 1, "frame count"),
        (lambda ls: ls[:2], 3, "body count of frame 2"),  # only frame 1 (empty) is there
        (lambda ls: ls[:20], 21, "25 joint lines for body 1 of frame 2"),  # cut inside a body
        (lambda ls: ls[:30], 31, "body count of frame 3"),  # cut after a frame
        (lambda ls: ls[:-1], 223, "26 joint lines for body 2 of frame 4"),  # last line missing
        (lambda ls: ls[:-1] + [ls[-1][:12]], 223, "joint line of 12 numbers"),  # last line cut short
        (lambda ls: ls[:10] + ["0.1 0.2 abc 1 2 3 4 5 6 7 8 2"] + ls[11:], 11, "joint line"),
        (lambda ls: ls[:10] + ["0.1 0.2 nan 1 2 3 4 5 6 7 8 2"] + ls[11:], 11, "finite x y z"),
        (lambda ls: ls[:3] + ["1 2 3"] + ls[4:], 4, "body line of 10 fields"),
        (lambda ls: ls[:4] + ["twenty-five"] + ls[5:], 5, "joint count of body 1 of frame 2"),
    ],
)
def test_read_skeleton_names_file_and_line_of_bad_input(tmp_path, cut, line, expected):
    lines = hand_written_file(tmp_path / "good.skeleton").read_text().splitlines()
    assert len(lines) == 223
    bad = tmp_path / "bad.skeleton"
    bad.write_text("\n".join(cut(lines)))
    with pytest.raises(SkeletonFormatError) as info:
        read_skeleton(bad)
    assert info.value.line == line
    assert str(bad) in str(info.value) and f"line {line}:" in str(info.value) and expected in str(info.value)


# ---- normalisation, step by step against the literal loops ----------------------------------------


def mctv(a: np.ndarray) -> np.ndarray:
    """(M, T, V, C), the literal steps' layout -> (M, C, T, V), data_gen's steps' layout."""
    return a.transpose(0, 3, 1, 2)


def mtvc(a: np.ndarray) -> np.ndarray:
    """(M, C, T, V) -> (M, T, V, C)."""
    return a.transpose(0, 2, 3, 1)


def random_people(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, M=2, T=300, V=25, C=3) float64 sequences with the gaps and absences real files have."""
    s = np.zeros((n, 2, 300, 25, 3))
    for i in range(n):
        for p in range(2):
            if (i % 5 == 1 and p == 1) or i % 7 == 6:  # person absent / sample empty
                continue
            length = int(rng.integers(1, 300))
            s[i, p, :length] = rng.normal(0, 0.4, (length, 25, 3)) + [0.2, 0.3, 3.0]
            if i % 3 == 0:
                s[i, p, : int(rng.integers(1, 20))] = 0  # leading empty frames
            if i % 4 == 0:
                gap = int(rng.integers(0, length))
                s[i, p, gap : gap + 3] = 0  # empty frames inside
            if i % 6 == 2:
                s[i, p, :, int(rng.integers(0, 25))] = 0  # a joint never tracked
    if n > 2:
        s[2, 0] = 0  # person 0 empty, person 1 present
    return s


def test_body_energy_matches_literal():
    rng = np.random.default_rng(0)
    bodies = random_people(rng, 2).reshape(4, 300, 25, 3).copy()  # four slots
    bodies[3] = 0
    expected = [literal_nonzero_std(b) for b in bodies]
    np.testing.assert_allclose(body_energy(bodies), expected, rtol=1e-12, atol=0)
    assert body_energy(bodies)[3] == 0


def test_pad_null_frames_matches_literal():
    s = random_people(np.random.default_rng(1), 14)
    expected = s.copy()
    literal_pad(expected)
    for i in range(len(s)):
        np.testing.assert_array_equal(mtvc(pad_null_frames(mctv(s[i]))), expected[i])


def test_pad_null_frames_small_case():
    s = np.zeros((3, 8, 1, 3))
    s[0, [2, 3, 5], 0, 0] = [1, 2, 3]  # leading gap: all non-empty frames move to the front, then loop
    s[1, [0, 1, 3], 0, 0] = [1, 2, 3]  # no leading gap: the hole stays and is looped with the rest
    out = mtvc(pad_null_frames(mctv(s)))[:, :, 0, 0]
    assert out[0].tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert out[1].tolist() == [1, 2, 0, 3, 1, 2, 0, 3]
    assert not out[2].any()


def test_center_on_joint_matches_literal():
    s = random_people(np.random.default_rng(2), 14)
    literal_pad(s)
    expected = s.copy()
    literal_center(expected)
    for i in range(len(s)):
        np.testing.assert_allclose(mtvc(center_on_joint(mctv(s[i]))), expected[i], rtol=0, atol=1e-15)
    centred = mtvc(center_on_joint(mctv(s[0])))
    assert not centred[0, :, 1].any()  # the centre joint itself becomes the origin
    zero = s[0] == 0
    assert np.all(centred[zero.all(-1)] == 0)  # zero joints stay zero


@pytest.mark.parametrize(
    "vector, target",
    [
        ([0.3, -0.2, 0.9], [0, 0, 1]),
        ([-1.0, 2.0, 0.5], [1, 0, 0]),
        ([0.0, 0.0, 2.0], [0, 0, 1]),
        ([0.0, 0.0, -2.0], [0, 0, 1]),  # anti-parallel: axis is zero -> identity
        ([0.0, 0.0, 0.0], [1, 0, 0]),
        ([1e-7, 0.0, 0.0], [0, 0, 1]),
        ([1.0, 1e-7, 0.0], [1, 0, 0]),
        ([0.0, 1.0, 0.0], [1, 0, 0]),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])  # float32: unit vector in float32, as the reference
def test_rotation_between_matches_literal(vector, target, dtype):
    v = np.asarray(vector, dtype=dtype)
    expected = literal_rotation_matrix(np.cross(v, target), literal_angle_between(v, target))
    np.testing.assert_allclose(rotation_between(v, np.asarray(target, float)), expected, rtol=0, atol=1e-14)


def test_rotation_between_turns_vector_onto_target():
    rng = np.random.default_rng(3)
    for v in rng.normal(size=(20, 3)):
        for target in np.eye(3):
            turned = rotation_between(v, target) @ v
            np.testing.assert_allclose(turned, np.linalg.norm(v) * target, atol=1e-12)


def test_align_to_axes_matches_literal():
    """The literal rotations run on float32 data, as in the reference (each pass stored in float32)."""
    s = random_people(np.random.default_rng(4), 14)
    literal_pad(s)
    literal_center(s)
    s32 = s.astype(np.float32)
    expected = s32.copy()
    literal_rotate(expected, 0, 1, [0, 0, 1])
    literal_rotate(expected, 4, 8, [1, 0, 0])
    for i in range(len(s)):
        out = mtvc(align_to_axes(mctv(s32[i]).astype(np.float64)))
        np.testing.assert_allclose(out, expected[i], rtol=0, atol=1e-6)
        if s[i, 0, 0, [0, 4, 8]].all():
            # The second rotation puts the shoulders on +x (and, as in the reference, may tilt the
            # spine bone off +z again).
            shoulders = out[0, 0, 8] - out[0, 0, 4]
            np.testing.assert_allclose(shoulders[1:], 0, atol=1e-6)
            assert shoulders[0] > 0


def test_normalize_sample_matches_literal_float32_pipeline():
    s = random_people(np.random.default_rng(5), 14)
    data = np.ascontiguousarray(s.transpose(0, 4, 2, 3, 1), dtype=np.float32)  # (N, C, T, V, M)
    ours = np.stack([normalize_sample(x) for x in data])
    expected = literal_pre_normalization(data.copy())
    assert ours.dtype == np.float32 and ours.shape == data.shape
    assert np.abs(ours - expected).max() <= 1e-5
    assert not ours[6].any()  # the empty sample stays zero


def test_normalize_sample_matches_literal_when_shoulders_face_minus_x():
    """Shoulder bone nearly anti-parallel to +x: an ill-conditioned rotation axis, where only the
    reference's float32 derivation of the bone vectors reproduces its numbers."""
    rng = np.random.default_rng(9)
    data = np.zeros((6, 3, 300, 25, 2), dtype=np.float32)
    for i in range(len(data)):
        person = rng.normal(0, 0.3, (50, 25, 3)) + [0.1, 0.2, 3.0]
        person[0, 1] = person[0, 0] + [0.001 * i, 0.002, 0.25]  # spine almost along +z
        person[0, 8] = person[0, 4] + [-0.33, 0.002 * (i - 3), -0.0015]  # shoulders almost along -x
        data[i, :, :50, :, 0] = person.transpose(2, 0, 1)
    ours = np.stack([normalize_sample(x) for x in data])
    expected = literal_pre_normalization(data.copy())
    assert np.abs(ours - expected).max() <= 1e-5


def test_select_bodies_matches_literal_on_files(tmp_path):
    """Energy ranking, the 300-frame layout and the float32 store, through real text files."""
    rng = np.random.default_rng(6)
    for k in range(4):
        frames = []
        for t in range(int(rng.integers(5, 40))):
            count = [0, 1, 2, 3, 4, 5][(t + k) % 6] if k else 2
            frames.append([rng.normal(0, 0.1 + 0.2 * b, (25, 3)) + [0, 0, 3] for b in range(count)])
        path = tmp_path / f"sample{k}.skeleton"
        path.write_text(skeleton_text(frames, (k,)))
        expected = literal_read_xyz(str(path))
        ours = select_bodies(read_skeleton(path).bodies)
        assert ours.shape == (3, 300, 25, 2) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours[:, : expected.shape[1]], expected.astype(np.float32))
        assert not ours[:, expected.shape[1] :].any()


def test_select_bodies_orders_by_energy_and_breaks_ties_like_reference():
    bodies = np.zeros((4, 3, 25, 3))
    bodies[1] = np.random.default_rng(7).normal(0, 1.0, (3, 25, 3))  # strongest in slot 1
    bodies[3] = np.random.default_rng(8).normal(0, 0.1, (3, 25, 3))
    out = select_bodies(bodies, max_frames=3)
    np.testing.assert_array_equal(out[..., 0], bodies[1].transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_array_equal(out[..., 1], bodies[3].transpose(2, 0, 1).astype(np.float32))
    # Slot 1 holds slot 0's joints in reverse order: exactly equal energies (small exact values).
    twins = np.zeros((4, 2, 25, 3))
    twins[0] = np.arange(150.0).reshape(2, 25, 3)
    twins[1] = twins[0, :, ::-1]
    energy = body_energy(twins)
    assert energy[0] == energy[1] > 0
    out = select_bodies(twins, max_frames=2)
    # a stable ascending sort, reversed, puts the later of equal slots first
    np.testing.assert_array_equal(out[..., 0], twins[1].transpose(2, 0, 1))
    np.testing.assert_array_equal(out[..., 1], twins[0].transpose(2, 0, 1))


# ---- splits and lists ----------------------------------------------------------------------------


def test_xsub_training_subjects_include_ntu120_extras():
    # Typed here from the NTU RGB+D 120 cross-subject protocol, on purpose not imported: a slip in either
    # copy of the list shows as a difference.
    ntu60 = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
    # fmt: off
    extra = {
        45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80,
        81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
    }
    # fmt: on
    assert ntu60 | extra == XSUB_TRAIN_SUBJECTS
    train = {p for p in range(1, 107) if is_training(parse_sample_name(f"S001C001P{p:03d}R001A001"), "xsub")}
    assert train == ntu60 | extra


def test_xview_and_xsetup_splits():
    cams = [c for c in (1, 2, 3) if is_training(parse_sample_name(f"S001C{c:03d}P001R001A001.skeleton"), "xview")]
    assert cams == [2, 3]
    setups = [s for s in range(1, 33) if is_training(parse_sample_name(f"S{s:03d}C001P001R001A001"), "xsetup")]
    assert setups == list(range(2, 33, 2))
    with pytest.raises(ValueError, match="xsub, xview, xsetup"):
        is_training(parse_sample_name("S001C001P001R001A001"), "xwhat")


def test_parse_sample_name_fields_and_errors():
    name = parse_sample_name("S017C003P020R002A060.skeleton")
    assert (name.setup, name.camera, name.subject, name.replication, name.action, name.label) == (17, 3, 20, 2, 60, 59)
    for bad in ("S017C003P020R002.skeleton", "readme.skeleton", "S17C003P020R002A060"):
        with pytest.raises(ValueError, match="SsssCcccPpppRrrrAaaa"):
            parse_sample_name(bad)


def test_read_ignored_list_prose_suffix_and_crlf(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(
        b'302 of the captured samples in the "NTU RGB+D" dataset have missing skeletons.\r\n'
        b"If you are working on skeleton-based analysis, please ignore these files.\r\n\r\n"
        b"S001C002P005R002A008\r\nS001C002P006R001A008.skeleton\r\n  S003C001P001R001A001  \r\n"
    )
    assert read_ignored_list(path) == {"S001C002P005R002A008", "S001C002P006R001A008", "S003C001P001R001A001"}


def test_project_resources_are_the_official_lists():
    ntu60 = read_ignored_list(DEFAULT_IGNORED_LISTS["ntu60"])
    ntu120 = read_ignored_list(DEFAULT_IGNORED_LISTS["ntu120"])
    assert len(ntu60) == 302 and len(ntu120) == 535
    assert "S001C002P005R002A008" in ntu60 and ntu60 <= ntu120
    names = action_names("ntu120", 120)  # the resource file, read as the plots read it
    assert len(names) == 120 and names[0] == "1. drink water" and names[119].startswith("120. finger-guessing")


# ---- the command: end to end --------------------------------------------------------------------


def test_end_to_end_matches_literal_reference(tmp_path, synthetic_dir, ignored_list, capsys):
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    code, _ = run_main(
        [
            "--data-path",
            str(synthetic_dir),
            "--ignored-sample-path",
            str(ignored_list),
            "--out-folder",
            str(ours),
            "--dataset",
            "ntu60",
        ],
        capsys,
    )
    assert code == 0
    literal_main(str(synthetic_dir), str(ref), str(ignored_list), ("xsub", "xview"))
    assert outputs(ours) == [f"{b}/{f}" for b in ("xsub", "xview") for f in SPLIT_FOLDER_FILES]
    assert verify(ours / "xsub") == [] and verify(ours / "xview") == []

    files = sorted(p.name for p in synthetic_dir.glob("*.skeleton"))
    kept = [n for n in files if n not in (files[1], files[5])]
    for benchmark in ("xsub", "xview"):
        seen = []
        for part in ("train", "val"):
            folder = ours / benchmark
            data = np.load(folder / f"{part}_data_joint.npy", mmap_mode="r")
            names, labels = read_labels(folder / f"{part}_label.pkl")
            frames = np.load(folder / f"{part}_num_frame.npy")
            assert data.dtype == np.float32 and data.shape == (len(names), 3, 300, 25, 2)
            assert frames.dtype == np.int64 and frames.shape == (len(names),)
            assert names == sorted(names) and all(isinstance(label, int) for label in labels)
            assert labels == [int(n[17:20]) - 1 for n in names]
            assert names == [n for n in kept if is_training(parse_sample_name(n), benchmark) == (part == "train")]
            assert frames.tolist() == [int((synthetic_dir / n).read_text().split("\n", 1)[0]) for n in names]
            for name in names:
                assert is_training(parse_sample_name(name), benchmark) == (part == "train")
            ref_names, ref_labels = read_labels(ref / benchmark / f"{part}_label.pkl")
            assert (names, labels) == (ref_names, ref_labels)
            np.testing.assert_array_equal(frames, np.load(ref / benchmark / f"{part}_num_frame.npy"))
            assert np.abs(data - np.load(ref / benchmark / f"{part}_data_joint.npy")).max() <= 1e-5
            seen += names
        assert sorted(seen) == kept


def test_workers_give_identical_output(tmp_path, synthetic_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    assert (
        ntu_gendata.main(
            [
                "--data_path",
                str(synthetic_dir),
                "--out_folder",
                str(one),
                "--no-progress",
                "--dataset",
                "ntu120",
                "--benchmarks",
                "xsetup",
            ]
        )
        == 0
    )
    assert (
        ntu_gendata.main(
            [
                "--data-path",
                str(synthetic_dir),
                "--out-folder",
                str(two),
                "--no-progress",
                "--dataset",
                "ntu120",
                "--benchmarks",
                "xsetup",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert outputs(one) == outputs(two) == [f"xsetup/{f}" for f in SPLIT_FOLDER_FILES]
    for name in SPLIT_FOLDER_FILES:  # the manifest too: it records what determines the contents, not --workers
        assert (one / "xsetup" / name).read_bytes() == (two / "xsetup" / name).read_bytes()
    _, labels = read_labels(one / "xsetup" / "train_label.pkl")
    assert set(labels) == {0, 1, 2, 3}


def test_default_out_folder_and_ignored_list(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ntu_gendata.main(["--data-path", str(synthetic_dir), "--benchmarks", "xview", "--no-progress"]) == 0
    folder = tmp_path / "data" / "NTU-RGB-D-60-AGCN"
    assert outputs(folder) == [f"xview/{f}" for f in SPLIT_FOLDER_FILES]
    names = read_labels(folder / "xview" / "train_label.pkl")[0]
    names += read_labels(folder / "xview" / "val_label.pkl")[0]
    assert len(names) == 24  # synthetic names avoid the official missing-skeleton list


def test_ignored_names_may_carry_the_suffix(tmp_path, synthetic_dir):
    names = sorted(p.name for p in synthetic_dir.glob("*.skeleton"))
    listing = tmp_path / "ignored.txt"
    listing.write_text(f"prose\nprose\n{names[0]}\r\n{names[3][:-9]}\n")
    ntu_gendata.generate(synthetic_dir, tmp_path / "out", listing, ("xview",), progress=False)
    kept = [n for part in ("train", "val") for n in read_labels(tmp_path / "out" / "xview" / f"{part}_label.pkl")[0]]
    assert sorted(kept) == [n for i, n in enumerate(names) if i not in (0, 3)]


def test_benchmark_not_of_the_dataset_is_an_error(tmp_path, synthetic_dir, capsys):
    code, err = run_main(
        [
            "--data-path",
            str(synthetic_dir),
            "--out-folder",
            str(tmp_path / "o"),
            "--dataset",
            "ntu60",
            "--benchmarks",
            "xsetup",
        ],
        capsys,
    )
    assert code == 2 and "xsetup" in err and "xsub xview" in err
    assert not (tmp_path / "o").exists()


# ---- the command: bad input ---------------------------------------------------------------------


def copy_files(source: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted(source.glob("*.skeleton"))[:count]:
        paths.append(target / path.name)
        paths[-1].write_bytes(path.read_bytes())
    return paths


def truncate(path: Path, keep_lines: int) -> None:
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:keep_lines]))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_truncated_file_stops_with_file_and_line_and_leaves_nothing(tmp_path, synthetic_dir, capsys, workers):
    raw, out = tmp_path / "raw", tmp_path / "out"
    paths = copy_files(synthetic_dir, raw, 20)
    truncate(paths[5], 300)
    with pytest.raises(SkeletonFormatError) as info:
        read_skeleton(paths[5])
    code, err = run_main(["--data-path", str(raw), "--out-folder", str(out), "--workers", workers], capsys)
    assert code == 2
    assert str(info.value) in err and str(paths[5]) in err and f"line {info.value.line}:" in err
    assert len(err.strip().splitlines()) == 1
    assert outputs(out) == []  # no complete-looking output, and no partial file either


def test_failed_run_keeps_previous_outputs(tmp_path, synthetic_dir, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    paths = copy_files(synthetic_dir, raw, 12)  # every part of xsub and xview gets samples
    assert run_main(["--data-path", str(raw), "--out-folder", str(out)], capsys)[0] == 0
    before = {name: (out / name).read_bytes() for name in outputs(out)}
    paths[-1].write_text("12\n1\nnot a body line\n")
    assert run_main(["--data-path", str(raw), "--out-folder", str(out)], capsys)[0] == 2
    assert {name: (out / name).read_bytes() for name in outputs(out)} == before


def test_skip_bad_lists_skipped_files_and_finishes(tmp_path, synthetic_dir, capsys):
    raw, out, clean = tmp_path / "raw", tmp_path / "out", tmp_path / "clean"
    paths = copy_files(synthetic_dir, raw, 12)
    truncate(paths[2], 100)
    lines = paths[7].read_text().split("\n")
    bad_line = next(i for i, line in enumerate(lines) if i > 40 and len(line.split()) == 12)
    lines[bad_line] = "0.1 0.2 oops 1 2 3 4 5 6 7 8 2"
    paths[7].write_text("\n".join(lines))
    code, _ = run_main(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)
    assert code == 0
    skipped = (out / "skipped_samples.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == [paths[2].name, paths[7].name]
    assert str(paths[7]) in skipped[1] and f"line {bad_line + 1}:" in skipped[1]
    # The rest is exactly what a run without the bad files gives.
    copy_files(raw, clean / "raw", 12)
    (clean / "raw" / paths[2].name).unlink()
    (clean / "raw" / paths[7].name).unlink()
    assert run_main(["--data-path", str(clean / "raw"), "--out-folder", str(clean / "out")], capsys)[0] == 0
    assert outputs(out) == sorted([*outputs(clean / "out"), "skipped_samples.txt"])
    for name in outputs(clean / "out"):
        if not name.endswith("manifest.json"):
            assert (out / name).read_bytes() == (clean / "out" / name).read_bytes()
            continue
        ours, theirs = (json.loads((root / name).read_text()) for root in (out, clean / "out"))
        assert ours["files"] == theirs["files"] and ours["parts"] == theirs["parts"]
        assert ours["arguments"] == {**theirs["arguments"], "data_path": str(raw), "skip_bad": True}


@pytest.mark.parametrize("case", ["missing", "empty", "no-skeletons"])
def test_missing_or_empty_data_folder_is_a_one_line_error(tmp_path, case, capsys):
    folder = tmp_path / "raw"
    if case != "missing":
        folder.mkdir()
    if case == "no-skeletons":
        (folder / "readme.txt").write_text("hello")
    code, err = run_main(["--data-path", str(folder), "--out-folder", str(tmp_path / "out")], capsys)
    assert code == 2 and str(folder) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_ignored_list_is_a_one_line_error(tmp_path, synthetic_dir, capsys):
    missing = tmp_path / "nope.txt"
    code, err = run_main(
        [
            "--data-path",
            str(synthetic_dir),
            "--ignored-sample-path",
            str(missing),
            "--out-folder",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and str(missing) in err and len(err.strip().splitlines()) == 1


def test_long_sequence_is_cut_with_a_warning(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = [[np.full((25, 3), 0.01 * t) + np.arange(75).reshape(25, 3) * 0.01] for t in range(1, 321)]
    (raw / "S001C001P001R001A001.skeleton").write_text(skeleton_text(frames, (0,)))
    (raw / "S001C002P001R001A001.skeleton").write_text(skeleton_text(frames[:10], (0,)))  # for xview/train
    with pytest.warns(
        UserWarning, match="1 clips longer than 300 frames were cut to their first 300: S001C001P001R001A001"
    ):
        summary = ntu_gendata.generate(raw, tmp_path / "out", None, ("xview",), progress=False)
    assert summary.long == ["S001C001P001R001A001.skeleton"]
    assert np.load(tmp_path / "out" / "xview" / "val_num_frame.npy").tolist() == [300]
    data = np.load(tmp_path / "out" / "xview" / "val_data_joint.npy")
    # The kept part is the first 300 frames of the file, normalised.
    expected = normalize_sample(select_bodies(read_skeleton(raw / "S001C001P001R001A001.skeleton").bodies))
    np.testing.assert_array_equal(data[0], expected)


def test_crlf_files_give_identical_output(tmp_path, synthetic_dir):
    lf, crlf = tmp_path / "lf", tmp_path / "crlf"
    for path in copy_files(synthetic_dir, lf, 8):  # the first 6 are all xsub/train
        (crlf / path.name).parent.mkdir(exist_ok=True)
        (crlf / path.name).write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    for folder in (lf, crlf):
        ntu_gendata.generate(folder, folder / "out", None, ("xsub",), progress=False)
    for name in SPLIT_FILES:
        assert (lf / "out" / "xsub" / name).read_bytes() == (crlf / "out" / "xsub" / name).read_bytes()


def test_sample_without_bodies_stays_zero_with_a_warning(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C002P001R001A003.skeleton").write_text("3\n0\n0\n0\n")
    frames = [[np.arange(75).reshape(25, 3) * 0.01 + 0.01 * t] for t in range(1, 5)]
    (raw / "S001C001P001R001A003.skeleton").write_text(skeleton_text(frames, (0,)))  # for xview/val
    with pytest.warns(UserWarning, match="1 clips hold no body in any frame; stored as zeros: S001C002P001R001A003"):
        summary = ntu_gendata.generate(raw, tmp_path / "out", None, ("xview",), progress=False)
    assert summary.empty == ["S001C002P001R001A003.skeleton"]
    data = np.load(tmp_path / "out" / "xview" / "train_data_joint.npy")
    assert data.shape == (1, 3, 300, 25, 2) and not data.any()
    assert read_labels(tmp_path / "out" / "xview" / "train_label.pkl") == (["S001C002P001R001A003.skeleton"], [2])


def test_bad_file_name_is_an_error_unless_skipped(tmp_path, synthetic_dir, capsys):
    raw = tmp_path / "raw"
    copy_files(synthetic_dir, raw, 12)  # every part of xsub and xview gets samples
    (raw / "notes.skeleton").write_text("1\n0\n")
    code, err = run_main(["--data-path", str(raw), "--out-folder", str(tmp_path / "out")], capsys)
    assert code == 2 and "notes.skeleton" in err and "SsssCcccPpppRrrrAaaa" in err
    code, _ = run_main(["--data-path", str(raw), "--out-folder", str(tmp_path / "out"), "--skip-bad"], capsys)
    assert code == 0
    assert (tmp_path / "out" / "skipped_samples.txt").read_text().startswith("notes.skeleton\t")


def test_actions_beyond_the_dataset_are_an_error(tmp_path, synthetic_dir, capsys):
    raw = tmp_path / "raw"
    first = copy_files(synthetic_dir, raw, 7)[0]  # the 7th file gives xsub/val a sample
    (raw / "S018C001P008R001A061.skeleton").write_bytes(first.read_bytes())
    code, err = run_main(["--data-path", str(raw), "--out-folder", str(tmp_path / "out")], capsys)
    assert code == 2 and "A061" in err and "60 actions" in err and "--dataset" in err
    assert (
        run_main(["--data-path", str(raw), "--out-folder", str(tmp_path / "out"), "--dataset", "ntu120"], capsys)[0]
        == 0
    )


@pytest.mark.parametrize("kind", ["broken link", "fifo", "folder"])
def test_entries_named_like_samples_that_are_not_files(tmp_path, synthetic_dir, capsys, kind):
    """Never one sample fewer without a word: an error, or with --skip-bad a line of skipped_samples.txt."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    copy_files(synthetic_dir, raw, 12)
    entry = raw / "S001C001P001R001A004.skeleton"
    if kind == "broken link":
        entry.symlink_to(tmp_path / "gone.skeleton")
    elif kind == "fifo":
        os.mkfifo(entry)  # opening it to read would wait forever
    else:
        entry.mkdir()
    problem = {
        "broken link": "a broken symbolic link",
        "fifo": "not a regular file (a FIFO, socket or device)",
        "folder": "a folder, not a file",
    }[kind]
    code, err = run_main(["--data-path", str(raw), "--out-folder", str(out)], capsys)
    assert code == 2 and err.endswith(f": error: {entry}: {problem}\n") and not out.exists()
    code, _ = run_main(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)
    assert code == 0
    assert (out / "skipped_samples.txt").read_text() == f"{entry.name}\t{entry}: {problem}\n"


@pytest.mark.parametrize(
    "signum, code, line", [(signal.SIGINT, 130, "interrupted (SIGINT)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_interrupted_run_is_one_line_and_leaves_nothing(
    tmp_path, synthetic_dir, capsys, monkeypatch, signum, code, line, workers
):
    """Ctrl-C or SIGTERM halfway: the shell's status, one line, the temporaries and the lock removed, the
    previous outputs as they were."""
    out = tmp_path / "out"
    assert (
        run_main(["--data-path", str(synthetic_dir), "--out-folder", str(out), "--benchmarks", "xview"], capsys)[0] == 0
    )
    before = {name: (out / name).read_bytes() for name in outputs(out)}
    calls = {"n": 0}
    append = writer.PartWriter.append

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signum)
        return append(self, *args)

    monkeypatch.setattr(writer.PartWriter, "append", interrupted)
    argv = ["--data-path", str(synthetic_dir), "--out-folder", str(out), "--workers", workers]
    status, err = run_main(argv, capsys)
    assert status == code and err.endswith(f": error: {line}\n") and err.count("error:") == 1
    assert {name: (out / name).read_bytes() for name in outputs(out)} == before
    assert sorted(p.name for p in out.iterdir()) == ["xview"]  # no staged folder, no lock
