"""A slow, literal re-implementation of the reference preprocessing (2s-AGCN ``data_gen/``).

Written from the reference's behaviour, loop for loop: every file parsed into per-joint dicts, once per
benchmark; bodies ranked with ``argsort`` of the energies; one float32 array of the whole part in
memory; normalisation with Python loops over samples, persons, frames and joints, each step writing
into the float32 array. ``bench/bench_data_gen.py`` uses it as the speed and memory baseline, and the
tests compare ``data_gen`` with it (``tests/test_data_gen_literal.py`` pins the literal version itself).
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np

from data_gen.ntu_splits import XSETUP_TRAIN_SETUPS, XSUB_TRAIN_SUBJECTS, XVIEW_TRAIN_CAMERAS

MAX_FRAME = 300
NUM_JOINT = 25
MAX_BODY_KINECT = 4
MAX_BODY_TRUE = 2

BODY_KEYS = (
    "bodyID",
    "clipedEdges",
    "handLeftConfidence",
    "handLeftState",
    "handRightConfidence",
    "handRightState",
    "isResticted",
    "leanX",
    "leanY",
    "trackingState",
)
JOINT_KEYS = (
    "x",
    "y",
    "z",
    "depthX",
    "depthY",
    "colorX",
    "colorY",
    "orientationW",
    "orientationX",
    "orientationY",
    "orientationZ",
    "trackingState",
)


def literal_read_skeleton(path: str) -> dict:
    """The file as nested dicts: one dict of floats per body and per joint line."""
    with open(path) as f:
        sequence = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                body = {k: float(v) for k, v in zip(BODY_KEYS, f.readline().split())}
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    body["jointInfo"].append({k: float(v) for k, v in zip(JOINT_KEYS, f.readline().split())})
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    return sequence


def literal_nonzero_std(s: np.ndarray) -> float:
    """(T, V, 3): std(x) + std(y) + std(z) over the frames whose coordinates do not sum to zero."""
    s = s[s.sum(-1).sum(-1) != 0]
    if len(s) == 0:
        return 0
    return s[:, :, 0].std() + s[:, :, 1].std() + s[:, :, 2].std()


def literal_read_xyz(path: str, max_body: int = MAX_BODY_KINECT, num_joint: int = NUM_JOINT) -> np.ndarray:
    """(3, T, V, 2) float64: the two most energetic body slots."""
    info = literal_read_skeleton(path)
    data = np.zeros((max_body, info["numFrame"], num_joint, 3))
    for n, frame in enumerate(info["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, joint in enumerate(body["jointInfo"]):
                if m < max_body and j < num_joint:
                    data[m, n, j, :] = [joint["x"], joint["y"], joint["z"]]
    energy = np.array([literal_nonzero_std(x) for x in data])
    # A stable ascending sort, reversed (what numpy's small-array sort gives the reference).
    index = energy.argsort(kind="stable")[::-1][0:MAX_BODY_TRUE]
    return data[index].transpose(3, 1, 2, 0)


def literal_rotation_matrix(axis: np.ndarray, theta: float) -> np.ndarray:
    """Counter-clockwise rotation about ``axis`` by ``theta``, in the Euler-Rodrigues (quaternion) form."""
    if np.abs(axis).sum() < 1e-6 or np.abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis)
    axis = axis / math.sqrt(np.dot(axis, axis))
    a = math.cos(theta / 2.0)
    b, c, d = -axis * math.sin(theta / 2.0)
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c + a * d), 2 * (b * d - a * c)],
            [2 * (b * c - a * d), a * a + c * c - b * b - d * d, 2 * (c * d + a * b)],
            [2 * (b * d + a * c), 2 * (c * d - a * b), a * a + d * d - b * b - c * c],
        ]
    )


def literal_angle_between(v1: np.ndarray, v2: np.ndarray) -> float:
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0
    u1 = v1 / np.linalg.norm(v1)
    u2 = np.asarray(v2) / np.linalg.norm(v2)
    return np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0))


# The steps below work in place on s = data.transpose(N, M, T, V, C), like the reference.


def literal_pad(s: np.ndarray) -> None:
    for i_s, skeleton in enumerate(s):
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            if person[0].sum() == 0:
                index = person.sum(-1).sum(-1) != 0
                tmp = person[index].copy()
                person *= 0
                person[: len(tmp)] = tmp
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:  # noqa: SIM102 (the reference's nesting, kept literally)
                    if person[i_f:].sum() == 0:
                        rest = len(person) - i_f
                        num = int(np.ceil(rest / i_f))
                        pad = np.concatenate([person[0:i_f] for _ in range(num)], 0)[:rest]
                        s[i_s, i_p, i_f:] = pad
                        break


def literal_center(s: np.ndarray) -> None:
    num_frames, num_joints = s.shape[2], s.shape[3]
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        center = skeleton[0][:, 1:2, :].copy()
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            mask = (person.sum(-1) != 0).reshape(num_frames, num_joints, 1)
            s[i_s, i_p] = (s[i_s, i_p] - center) * mask


def literal_rotate(s: np.ndarray, first: int, second: int, target: list[int]) -> None:
    """Rotate so that person 0's bone ``first -> second`` in frame 0 is parallel to ``target``."""
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        bone = skeleton[0, 0, second] - skeleton[0, 0, first]
        matrix = literal_rotation_matrix(np.cross(bone, target), literal_angle_between(bone, target))
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    continue
                for i_j, joint in enumerate(frame):
                    s[i_s, i_p, i_f, i_j] = np.dot(matrix, joint)


def literal_pre_normalization(data: np.ndarray) -> np.ndarray:
    """(N, C, T, V, M) -> (N, C, T, V, M), modified in place (pad, centre, to +z, to +x)."""
    s = np.transpose(data, [0, 4, 2, 3, 1])
    literal_pad(s)
    literal_center(s)
    literal_rotate(s, 0, 1, [0, 0, 1])
    literal_rotate(s, 4, 8, [1, 0, 0])
    return np.transpose(s, [0, 4, 2, 3, 1])


def literal_gendata(data_path: str, out_path: str, ignored_sample_path: str | None, benchmark: str, part: str) -> None:
    """One (benchmark, part) of the reference: list, parse, normalise in RAM, save.

    Files are taken in sorted order (the reference takes ``os.listdir`` order).
    """
    ignored = []
    if ignored_sample_path is not None:
        with open(ignored_sample_path) as f:
            ignored = [line.strip() + ".skeleton" for line in f.readlines()]
    names, labels = [], []
    for filename in sorted(os.listdir(data_path)):
        if filename in ignored:
            continue
        action = int(filename[filename.find("A") + 1 : filename.find("A") + 4])
        subject = int(filename[filename.find("P") + 1 : filename.find("P") + 4])
        camera = int(filename[filename.find("C") + 1 : filename.find("C") + 4])
        setup = int(filename[filename.find("S") + 1 : filename.find("S") + 4])
        training = {
            "xview": camera in XVIEW_TRAIN_CAMERAS,
            "xsub": subject in XSUB_TRAIN_SUBJECTS,
            "xsetup": setup in XSETUP_TRAIN_SETUPS,
        }[benchmark]
        if training == (part == "train"):
            names.append(filename)
            labels.append(action - 1)
    with open(os.path.join(out_path, f"{part}_label.pkl"), "wb") as f:
        pickle.dump((names, list(labels)), f)
    frames = np.zeros(len(labels), dtype=np.int64)
    data = np.zeros((len(labels), 3, MAX_FRAME, NUM_JOINT, MAX_BODY_TRUE), dtype=np.float32)
    for i, name in enumerate(names):
        sample = literal_read_xyz(os.path.join(data_path, name))
        data[i, :, 0 : sample.shape[1], :, :] = sample
        frames[i] = sample.shape[1]
    np.save(os.path.join(out_path, f"{part}_num_frame.npy"), frames)
    data = literal_pre_normalization(data)
    np.save(os.path.join(out_path, f"{part}_data_joint.npy"), data)


def literal_main(data_path: str, out_folder: str, ignored_sample_path: str | None, benchmarks: list[str]) -> None:
    for benchmark in benchmarks:
        for part in ("train", "val"):
            out_path = os.path.join(out_folder, benchmark)
            os.makedirs(out_path, exist_ok=True)
            literal_gendata(data_path, out_path, ignored_sample_path, benchmark, part)
