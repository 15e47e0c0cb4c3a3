"""data_gen.synthetic: real NTU text layout, split coverage, the variety real files have, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from bench.literal_data_gen import literal_read_skeleton
from common.constants import DATASETS, NTU_DATASETS
from data_gen import synthetic
from data_gen.normalize import body_energy
from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS, is_training, parse_sample_name, read_ignored_list
from data_gen.skeleton_reader import read_skeleton
from tests.helpers import plant_stray_temporaries


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    return synthetic.write_synthetic_ntu(folder, num_classes=5, samples_per_class=8, long_samples=1, seed=11)


def test_files_have_the_ntu_text_layout(files):
    assert len(files) == 40 and files == sorted(files)
    for path in files[:6]:
        lines = path.read_text().split("\n")
        assert lines[-1] == ""  # ends with a newline
        p, frames = 1, int(lines[0])
        for _ in range(frames):
            bodies = int(lines[p])
            p += 1
            for _ in range(bodies):
                body = lines[p].split()
                assert len(body) == 10 and int(body[0]) > 0 and body[-1] == "2"
                assert lines[p + 1] == "25"
                for joint in lines[p + 2 : p + 27]:
                    fields = joint.split()
                    assert len(fields) == 12 and fields[-1] in ("1", "2")
                    x, y, z = map(float, fields[:3])
                    assert 0.5 < z < 6.5 and abs(x) < 3 and abs(y) < 2.5  # metres, in front of the camera
                p += 27
        assert p == len(lines) - 1
        assert literal_read_skeleton(str(path))["numFrame"] == frames


def test_every_class_is_in_train_and_val_of_every_benchmark(files):
    names = [parse_sample_name(p.name) for p in files]
    assert len({p.name for p in files}) == len(files)
    assert {n.camera for n in names} == {1, 2, 3}
    assert len({n.subject for n in names}) == 6 and len({n.setup for n in names}) == 4
    for benchmark in {b for name in NTU_DATASETS for b in DATASETS[name]["benchmarks"]}:  # xsub, xview, xsetup
        for training in (True, False):
            labels = {n.label for n in names if is_training(n, benchmark) == training}
            assert labels == set(range(5)), (benchmark, training)


def test_names_avoid_the_official_missing_skeleton_lists():
    official = set().union(*(read_ignored_list(p) for p in DEFAULT_IGNORED_LISTS.values()))
    # Sample 7 of class 7 with 6 subjects and 3 setups would be S001C002P006R001A008, which is listed.
    assert synthetic.sample_fields(7, 7, num_subjects=6, num_setups=3) == (1, 2, 6, 1)
    assert "S001C002P006R001A008" in official
    assert synthetic.sample_name(7, 7, num_subjects=6, num_setups=3) == "S001C002P006R101A008.skeleton"
    names = {synthetic.sample_name(c, i, 6, 3) for c in range(60) for i in range(48)}
    assert len(names) == 60 * 48 and not {n[:-9] for n in names} & official


def test_variety_of_real_recordings(files):
    raws = {p.name: read_skeleton(p) for p in files}
    lengths = [r.num_frames for r in raws.values()]
    assert min(lengths) < 64 < max(lengths) and sum(n > 300 for n in lengths) == 1
    max_bodies = [int(np.max((r.bodies != 0).any(axis=(2, 3)).sum(0))) for r in raws.values()]
    assert max(max_bodies) >= 3  # noise bodies on top of the actors
    empty_frames = [int((~(r.bodies != 0).any(axis=(0, 2, 3))).sum()) for r in raws.values()]
    assert sum(e > 0 for e in empty_frames) >= 3
    for name, raw in raws.items():
        label = parse_sample_name(name).label
        present = (raw.bodies != 0).any(axis=(2, 3))  # (4, T)
        if synthetic.is_two_person(label, 5):
            assert (present.sum(0) >= 2).mean() > 0.5, name  # two actors most of the time
        # The actors move more than noise bodies: the two top-energy slots cover most frames.
        top = np.argsort(body_energy(raw.bodies), kind="stable")[::-1][:2]
        assert present[top].any(0).sum() >= 0.8 * present.any(0).sum(), name


def test_subject_and_camera_change_the_skeleton():
    def first_frame(subject, camera):
        frames = synthetic.synthetic_sequence(0, 0, num_classes=5, subject=subject, setup=1, camera=camera, seed=0)
        return next(f for f in frames if f)[0]

    spines = [np.linalg.norm(first_frame(subject, 2)[20] - first_frame(subject, 2)[0]) for subject in range(1, 9)]
    assert np.ptp(spines) > 0.05  # body size depends on the subject (spine base to shoulders, metres)
    frontal = first_frame(1, 2)
    assert (frontal[8] - frontal[4])[0] > 0.2  # Kinect camera space: left shoulder -> right shoulder is +x
    a, c = first_frame(1, 1), first_frame(1, 3)
    shoulders = lambda s: np.arctan2(*(s[8] - s[4])[[2, 0]])  # noqa: E731 -- yaw of the shoulder line
    assert abs(shoulders(a) - shoulders(c)) > 0.8  # cameras 1 and 3 are 90 degrees apart


def test_classes_move_different_joints():
    """The class program decides which limb moves: a left-arm class moves the left hand most."""
    assert synthetic.class_program(0) == [(0, 1)]
    assert len({tuple(synthetic.class_program(c)) for c in range(120)}) == 120
    ranges = {}
    for label in (0, 1, 7):  # left arm sideways, right arm sideways, left kick
        frames = synthetic.synthetic_sequence(label, 4, num_classes=20, subject=1, setup=1, camera=2, seed=0)
        actor = np.stack([f[0] for f in frames if f and np.linalg.norm(f[0][3] - f[0][0]) > 0.4])
        ranges[label] = np.ptp(actor - actor[:, :1], axis=0).sum(-1)  # motion per joint, relative to the hip
    assert ranges[0][7] > 3 * ranges[0][11]  # left hand moves, right hand hardly
    assert ranges[1][11] > 3 * ranges[1][7]
    assert ranges[7][14] > 3 * ranges[7][18]  # left ankle vs right ankle


def test_deterministic_by_seed(tmp_path):
    first = synthetic.write_synthetic_ntu(tmp_path / "a", num_classes=2, samples_per_class=3, seed=5)
    again = synthetic.write_synthetic_ntu(tmp_path / "b", num_classes=2, samples_per_class=3, seed=5)
    other = synthetic.write_synthetic_ntu(tmp_path / "c", num_classes=2, samples_per_class=3, seed=6)
    assert [p.name for p in first] == [p.name for p in again] == [p.name for p in other]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(first, again))
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, other))


def test_cli(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path), "--num-classes", "2", "--samples-per-class", "2"]) == 0
    assert len(list(tmp_path.glob("*.skeleton"))) == 4
    assert "wrote 4 files" in capsys.readouterr().out
    assert synthetic.main(["--out", str(tmp_path / "new"), "--num-classes", "0"]) == 2
    assert capsys.readouterr().err.endswith(": error: --num-classes must be in 1..120 (NTU action numbers), got 0\n")
    assert synthetic.main(["--out", str(tmp_path / "new"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err.endswith(": error: --seed must be >= 0, got -1\n")
    assert not (tmp_path / "new").exists()


def test_cli_output_problems_are_one_line(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert synthetic.main(["--out", str(target), "--num-classes", "1", "--samples-per-class", "1"]) == 2
    assert capsys.readouterr().err.endswith(f": error: --out {target} is a file, not a folder\n")


def test_cli_removes_what_a_killed_run_left(tmp_path, capsys):
    """A killed run's temporary (its writer's PID is gone) is removed at start and named on stdout."""
    out = tmp_path / "raw"
    out.mkdir()
    stray = plant_stray_temporaries(out, "S001C001P001R001A001.skeleton", "S001C001P001R001A002.skeleton")[0]
    assert synthetic.main(["--out", str(out), "--num-classes", "2", "--samples-per-class", "4"]) == 0
    assert not stray.exists()
    assert f"removed {stray}, a temporary file left by an interrupted run" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
