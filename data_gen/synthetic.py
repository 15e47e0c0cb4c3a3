"""Synthetic NTU RGB+D raw skeletons (``python data_gen/synthetic.py --out DIR``): real ``.skeleton`` text
and names, Kinect v2 skeletons driven by forward kinematics. A class moves one or two "channels" (an arm
raised, arms overhead, an elbow, a kick, a bow, a squat, a turn, a lean, a nod) with its own rhythm; the
last fifth are two-person actions; body size follows the subject, cameras 1/2/3 look from -45/0/+45
degrees as set by the setup; some files have noise bodies, empty frames, fewer than 64 or more than 300
frames. Sample ``i`` of a class gets camera ``i % 3 + 1`` and a performer changing every 3 samples between
x-sub training and test ones, so >= 6 samples per class put every class in both parts of every benchmark.
Names on the official missing-skeleton lists are avoided; the same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.constants import NUM_FRAMES, NUM_JOINTS
from common.io import atomic_write_bytes, clean_stale_temporaries, ensure_folder
from common.locking import FolderLock
from data_gen import cli
from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS, XSUB_TRAIN_SUBJECTS_NTU60, read_ignored_list
from data_gen.writer import DataGenError

CAMERA_YAW = {1: -np.pi / 4, 2: 0.0, 3: np.pi / 4}
# fmt: off
CHANNELS = (  # a class can drive these, with the amplitude (radians, or 0..1 for the squat) of a full movement
    ("left_arm_side", 1.4), ("right_arm_side", 1.4), ("left_arm_forward", 1.5), ("right_arm_forward", 1.5),
    ("arms_overhead", 2.6), ("left_elbow", 2.0), ("right_elbow", 2.0), ("left_kick", 1.1), ("right_kick", 1.1),
    ("bow", 0.9), ("squat", 0.8), ("turn", 1.2), ("side_lean", 0.4), ("nod", 0.5),
)
# fmt: on
_MIRROR = {0: 1, 1: 0, 2: 3, 3: 2, 5: 6, 6: 5, 7: 8, 8: 7}  # left <-> right channels
REPETITIONS = (1, 2, 4)
_VAL_SUBJECTS_NTU60 = tuple(s for s in range(1, 41) if s not in XSUB_TRAIN_SUBJECTS_NTU60)
_JOINT_FMT = "%.7g " * 11 + "%d\n"
_LEAF_JOINTS = (3, 15, 19, 21, 22, 23, 24)  # Kinect reports no orientation for these


def class_program(label: int) -> list[tuple[int, int]]:
    """(channel, repetitions) pairs that define class ``label`` (0-based); distinct for labels < 126."""
    k = len(CHANNELS)
    channel = label % k
    reps = REPETITIONS[(label // k) % len(REPETITIONS)]
    program = [(channel, reps)]
    extra = (label // (k * len(REPETITIONS))) % 3
    if extra:
        program.append(((channel + (5 if extra == 1 else 9)) % k, reps))
    return program


def is_two_person(label: int, num_classes: int) -> bool:
    """The last fifth of the classes (at least one) are two-person actions."""
    return label >= num_classes - max(1, num_classes // 5)


def sample_fields(label: int, index: int, num_subjects: int, num_setups: int) -> tuple[int, int, int, int]:
    """(setup, camera, subject, replication) of sample ``index`` of class ``label`` (see module docstring)."""
    camera = index % 3 + 1
    # Subjects rotate with the class; with an even count, the slot parity (train / test subject)
    # still alternates every 3 samples.
    slot = (index // 3 + label) % num_subjects
    pool = XSUB_TRAIN_SUBJECTS_NTU60 if slot % 2 == 0 else _VAL_SUBJECTS_NTU60
    subject = pool[slot // 2]
    replication = index // (3 * num_subjects) + 1
    setup = (index // 3 + label) % num_setups + 1
    return setup, camera, subject, replication


@functools.lru_cache(maxsize=1)
def _official_ignored() -> frozenset[str]:
    return frozenset().union(*(read_ignored_list(path) for path in DEFAULT_IGNORED_LISTS.values()))


def sample_name(label: int, index: int, num_subjects: int, num_setups: int) -> str:
    """The file name of sample ``index`` of class ``label``.

    A name on an official missing-skeleton list gets its replication number raised by 100, so that
    the default ignored lists of ``ntu_gendata`` keep every synthetic file.
    """
    setup, camera, subject, replication = sample_fields(label, index, num_subjects, num_setups)
    while True:
        stem = f"S{setup:03d}C{camera:03d}P{subject:03d}R{replication:03d}A{label + 1:03d}"
        if stem not in _official_ignored():
            return stem + ".skeleton"
        replication += 100


# Kinematics on (T,) angles, positions (T, 3) in the body frame: x the actor's right, y up, z backwards (the
# actor faces -z); seen from the camera, an actor facing it has the left shoulder at -x, as in Kinect space.


def _rotation(a: np.ndarray, axis: int) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotations about the x (0), y (1) or z (2) axis."""
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    rows = [((o, z, z), (z, c, -s), (z, s, c)), ((c, z, s), (z, o, z), (-s, z, c)), ((c, -s, z), (s, c, z), (z, z, o))]
    return np.stack([np.stack(row, -1) for row in rows[axis]], -2)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _arm(shoulder, side, elevation, plane, elbow, scale):
    """Elbow, wrist, hand, hand tip, thumb of one arm: each (T, 3)."""
    d1 = np.stack(
        [side * np.sin(elevation) * np.cos(plane), -np.cos(elevation), -np.sin(elevation) * np.sin(plane)], -1
    )
    ahead = np.array([0.0, 0.5, -1.0])
    u = ahead - (d1 @ ahead)[:, None] * d1
    u = _unit(u + 1e-9)
    d2 = np.cos(elbow)[:, None] * d1 + np.sin(elbow)[:, None] * u
    elbow_p = shoulder + 0.27 * scale * d1
    wrist = elbow_p + 0.25 * scale * d2
    hand = wrist + 0.08 * scale * d2
    tip = hand + 0.07 * scale * d2
    thumb = hand + 0.035 * scale * u + np.array([side * 0.02 * scale, 0.0, 0.0])
    return elbow_p, wrist, hand, tip, thumb


def _leg(side, flexion, knee, scale):
    """Hip, knee, ankle, foot of one leg relative to the base of the spine, and its vertical extent."""
    hip = np.broadcast_to(np.array([side * 0.09 * scale, -0.03 * scale, 0.0]), (len(flexion), 3))
    thigh = _unit(np.stack([np.full_like(flexion, side * 0.05), -np.cos(flexion), -np.sin(flexion)], -1))
    shin = np.stack([np.zeros_like(flexion), -np.cos(flexion - knee), -np.sin(flexion - knee)], -1)
    knee_p = hip + 0.42 * scale * thigh
    ankle = knee_p + 0.40 * scale * shin
    foot = ankle + np.array([0.0, -0.04, -0.12]) * scale
    return hip, knee_p, ankle, foot, -(ankle[:, 1] - 0.06 * scale)


def _pose(ch: np.ndarray, scale: float) -> np.ndarray:
    """Channel values (T, K) -> joints (T, 25, 3) in the body frame, feet on the floor (y = 0)."""
    t = ch.shape[0]
    squat = ch[:, 10]
    l_elev = 0.15 + ch[:, 0] + ch[:, 2] + ch[:, 4] + 0.5 * ch[:, 5]
    r_elev = 0.15 + ch[:, 1] + ch[:, 3] + ch[:, 4] + 0.5 * ch[:, 6]
    # Forward raises and elbow bends happen in front of the body; sideways raises beside it.
    l_forward = np.clip((ch[:, 2] + ch[:, 5]) / (ch[:, 0] + ch[:, 2] + ch[:, 5] + 1e-3), 0, 1)
    r_forward = np.clip((ch[:, 3] + ch[:, 6]) / (ch[:, 1] + ch[:, 3] + ch[:, 6] + 1e-3), 0, 1)
    l_plane = l_forward * (np.pi / 2) + 0.3 * ch[:, 4]
    r_plane = r_forward * (np.pi / 2) + 0.3 * ch[:, 4]
    l_elbow, r_elbow = 0.2 + ch[:, 5], 0.2 + ch[:, 6]

    joints = np.zeros((t, NUM_JOINTS, 3))
    # Upper body in the torso frame (origin at the base of the spine), then bent and leaned.
    upper = np.zeros((t, NUM_JOINTS, 3))
    upper[:, 1] = [0.0, 0.27 * scale, 0.0]
    upper[:, 20] = [0.0, 0.50 * scale, 0.0]
    upper[:, 2] = [0.0, 0.57 * scale, 0.0]
    neck = upper[:, 2]
    head_offset = np.array([0.0, 0.15 * scale, 0.0])
    upper[:, 3] = neck + np.einsum("tij,j->ti", _rotation(-ch[:, 13], 0), head_offset)
    for side, shoulder_j, arm_js, elev, plane, elbow in (
        (-1.0, 4, (5, 6, 7, 21, 22), l_elev, l_plane, l_elbow),
        (1.0, 8, (9, 10, 11, 23, 24), r_elev, r_plane, r_elbow),
    ):
        shoulder = np.broadcast_to(np.array([side * 0.18 * scale, 0.47 * scale, 0.0]), (t, 3))
        upper[:, shoulder_j] = shoulder
        for j, p in zip(arm_js, _arm(shoulder, side, elev, plane, elbow, scale)):
            upper[:, j] = p
    bend = ch[:, 9] + 0.4 * squat
    torso = _rotation(ch[:, 12], 2) @ _rotation(-bend, 0)  # (T, 3, 3)
    upper_ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20, 21, 22, 23, 24]
    joints[:, upper_ids] = np.einsum("tij,tvj->tvi", torso, upper[:, upper_ids])

    heights = []
    for side, ids, kick in ((-1.0, (12, 13, 14, 15), ch[:, 7]), (1.0, (16, 17, 18, 19), ch[:, 8])):
        *points, height = _leg(side, kick + 1.1 * squat, 0.3 * kick + 2.0 * squat, scale)
        for j, p in zip(ids, points):
            joints[:, j] = p
        heights.append(height)
    joints[:, :, 1] += np.maximum(*heights)[:, None]  # the supporting leg stands on the floor
    return joints


def _window(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) phase in [0, 1] of a movement that starts and ends at random points of the sequence."""
    start, end = rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)
    return np.clip((np.linspace(0.0, 1.0, n) - start) / (end - start), 0.0, 1.0)


def _channels(rng: np.random.Generator, program, n: int, mirror: bool = False, lag: float = 0.0) -> np.ndarray:
    """(n, K) channel values: the class's movements plus small idle sway."""
    k = len(CHANNELS)
    time = np.linspace(0.0, 1.0, n)
    ch = 0.05 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2, k) * time[:, None] + rng.uniform(0, 2 * np.pi, k))
    ch[:, 10] = np.abs(ch[:, 10])  # a squat cannot be negative
    phase = np.clip(_window(rng, n) - lag, 0.0, 1.0)
    for channel, reps in program:
        if mirror:
            channel = _MIRROR.get(channel, channel)
        amplitude = CHANNELS[channel][1] * rng.uniform(0.75, 1.15)
        ch[:, channel] += amplitude * 0.5 * (1.0 - np.cos(2 * np.pi * reps * phase))
    return ch


def _to_camera(points: np.ndarray, yaw: float | np.ndarray, position: np.ndarray, camera: dict) -> np.ndarray:
    """Body-frame (T, V, 3) -> camera space: turn by yaw, place on the floor, view from the camera."""
    yaw = np.broadcast_to(np.asarray(yaw, dtype=np.float64), points.shape[:1])
    world = np.einsum("tij,tvj->tvi", _rotation(yaw, 1), points) + position[:, None, :]
    view = _rotation(np.array([camera["pitch"]]), 0)[0] @ _rotation(np.array([camera["yaw"]]), 1)[0]
    cam = world @ view.T
    cam[..., 1] -= camera["height"]
    cam[..., 2] += camera["distance"]
    return cam


def _noise_body(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 25, 3) a compact jittering blob somewhere in the room (a chair, a coat...)."""
    centre = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.6, 0.4), rng.uniform(2.0, 4.5)])
    shape = rng.normal(0.0, rng.uniform(0.03, 0.08), (NUM_JOINTS, 3))
    return centre + shape + rng.normal(0.0, 0.01, (n, NUM_JOINTS, 3))


def synthetic_sequence(
    label: int,
    index: int,
    *,
    num_classes: int,
    subject: int,
    setup: int,
    camera: int,
    seed: int = 0,
    long: bool = False,
) -> list[list[np.ndarray]]:
    """The bodies of one synthetic sample: per frame, the (25, 3) camera-space bodies in listing order."""
    rng = np.random.default_rng([seed, 2, label, index])
    scale = float(np.random.default_rng([seed, 1, subject]).uniform(0.85, 1.15))
    setup_rng = np.random.default_rng([seed, 3, setup])
    cam = {"yaw": CAMERA_YAW[camera] + setup_rng.normal(0.0, 0.05), "pitch": setup_rng.uniform(-0.15, 0.05)}
    cam.update(height=setup_rng.uniform(0.7, 1.2), distance=setup_rng.uniform(2.6, 3.4))
    if long:
        active = int(rng.integers(NUM_FRAMES + 1, NUM_FRAMES + 41))  # beyond what a sample stores
    else:
        active = int(rng.integers(24, 64)) if rng.random() < 0.2 else int(rng.integers(64, 161))
    actors = _actors(rng, label, num_classes, active, scale, cam)
    return _listing(rng, actors, active, long)


def _actors(
    rng: np.random.Generator, label: int, num_classes: int, active: int, scale: float, cam: dict
) -> list[np.ndarray]:
    """The (active, 25, 3) camera-space bodies performing the action: one, or two facing each other."""
    program = class_program(label)
    two = is_two_person(label, num_classes)
    actors = []
    base = np.array([rng.uniform(-0.3, 0.3), 0.0, rng.uniform(-0.3, 0.3)])
    if two:
        gap = rng.uniform(0.5, 0.8)
        approach = rng.uniform(0.0, 0.3) * _window(rng, active)
        for sign, mirror, lag in ((-1.0, False, 0.0), (1.0, True, rng.uniform(0.05, 0.15))):
            ch = _channels(rng, program, active, mirror=mirror, lag=lag)
            yaw = sign * (np.pi / 2 - 0.4) + rng.normal(0.0, 0.1) + ch[:, 11]
            position = base + np.stack([sign * (gap - approach), np.zeros(active), np.zeros(active)], -1)
            other_scale = scale if sign < 0 else float(rng.uniform(0.85, 1.15))
            actors.append(_to_camera(_pose(ch, other_scale), yaw, position, cam))
    else:
        ch = _channels(rng, program, active)
        yaw = rng.normal(0.0, 0.25) + ch[:, 11]
        actors.append(_to_camera(_pose(ch, scale), yaw, np.broadcast_to(base, (active, 3)), cam))
    for actor in actors:  # Kinect joint noise
        actor += rng.normal(0.0, 0.004, actor.shape)
    if two and rng.random() < 0.3:  # the Kinect lists bodies in no particular order
        actors.reverse()
    return actors


def _listing(rng: np.random.Generator, actors: list[np.ndarray], active: int, long: bool) -> list[list[np.ndarray]]:
    """Per frame, the bodies the Kinect lists: the actors (a few frames dropped, idle frames around them)
    and, now and then, an object taken for a body."""
    lead = int(rng.integers(1, 6)) if rng.random() < 0.3 else 0
    trail = int(rng.integers(1, 4)) if rng.random() < 0.2 else 0
    total = lead + active + trail
    frames: list[list[np.ndarray]] = [[] for _ in range(total)]
    drop = rng.random() < 0.1 and active > 10
    dropped = set(rng.choice(active, size=int(rng.integers(1, 3)), replace=False).tolist()) if drop else set()
    for t in range(active):
        if t not in dropped:
            frames[lead + t].extend(actor[t] for actor in actors)
    num_noise = int(rng.choice(4, p=[0.6, 0.25, 0.1, 0.05])) if not long else 0
    num_noise = min(num_noise, 4 - len(actors))
    for _ in range(num_noise):
        # Either an object mistaken for a body over a stretch of frames, listed after the actors, or a
        # glitch of a few frames that the Kinect may list first (then the actors shift slots).
        glitch = rng.random() < 0.3
        length = int(rng.integers(2, 9)) if glitch else int(rng.integers(max(2, total // 10), max(3, total // 2)))
        length = min(length, total)
        start = int(rng.integers(0, total - length + 1))
        blob = _noise_body(rng, length)
        first = glitch and rng.random() < 0.5
        for t in range(length):
            if first:
                frames[start + t].insert(0, blob[t])
            else:
                frames[start + t].append(blob[t])
    return frames


def skeleton_text(frames: list[list[np.ndarray]], seed_key: Sequence[int]) -> str:
    """The ``.skeleton`` text of per-frame body lists; the non-xyz fields are plausible Kinect values."""
    rng = np.random.default_rng(list(seed_key))
    # One tracking ID per listing position, as a Kinect keeps IDs while bodies stay in view.
    body_ids = [72057594037927936 + int(v) for v in rng.integers(1000, 99999, 4 + 8)]
    pieces = [f"{len(frames)}\n"]
    for bodies in frames:
        pieces.append(f"{len(bodies)}\n")
        for position, body in enumerate(bodies):
            body_id = body_ids[position]
            xyz = body  # (25, 3) x y z in metres
            z = np.maximum(xyz[:, 2], 0.5)
            rows = np.empty((NUM_JOINTS, 12))
            rows[:, :3] = xyz
            rows[:, 3] = 256.0 + 365.5 * xyz[:, 0] / z  # depth image (512 x 424) projection
            rows[:, 4] = 212.0 - 365.5 * xyz[:, 1] / z
            rows[:, 5] = 960.0 + 1062.0 * xyz[:, 0] / z  # colour image (1920 x 1080) projection
            rows[:, 6] = 540.0 - 1062.0 * xyz[:, 1] / z
            quat = _unit(rng.normal(0.0, 1.0, (NUM_JOINTS, 4)))
            quat[list(_LEAF_JOINTS)] = 0.0
            rows[:, 7:11] = quat
            rows[:, 11] = np.where(rng.random(NUM_JOINTS) < 0.05, 1, 2)  # 1 = inferred, 2 = tracked
            (hand_left, hand_right), (lean_x, lean_y) = rng.integers(0, 4, 2), rng.normal(0.0, 0.1, 2)
            pieces.append(f"{body_id} 0 1 {hand_left} 1 {hand_right} 0 {lean_x:.7g} {lean_y:.7g} 2\n")
            pieces.append(f"{NUM_JOINTS}\n")
            pieces.append((_JOINT_FMT * NUM_JOINTS) % tuple(rows.ravel().tolist()))
    return "".join(pieces)


def check_sizes(num_classes: int, samples_per_class: int, num_subjects: int, num_setups: int, seed: int) -> None:
    """DataGenError naming the first of :func:`write_synthetic_ntu`'s sizes (or its seed) that is out of range."""
    problems = {
        f"--num-classes must be in 1..120 (NTU action numbers), got {num_classes}": not 1 <= num_classes <= 120,
        f"--samples-per-class must be >= 1, got {samples_per_class}": samples_per_class < 1,
        f"--num-subjects must be even, in 2..40, got {num_subjects}": not 2 <= num_subjects <= 40 or num_subjects % 2,
        f"--num-setups must be in 2..32, got {num_setups}": not 2 <= num_setups <= 32,
        "--samples-per-class too large for three-digit replication numbers": 3 * num_subjects * 99 < samples_per_class,
        f"--seed must be >= 0, got {seed}": seed < 0,
    }
    for message in (m for m, bad in problems.items() if bad):
        raise DataGenError(message)


def write_synthetic_ntu(
    out_dir: str | Path,
    *,
    num_classes: int = 10,
    samples_per_class: int = 12,
    num_subjects: int = 6,
    num_setups: int = 4,
    long_samples: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write ``num_classes * samples_per_class`` synthetic ``.skeleton`` files into ``out_dir``.

    ``num_subjects`` (even, 2..40) performers alternate between x-sub training and test subjects;
    ``num_setups`` >= 2; the first ``long_samples`` files (in writing order) are longer than 300 frames.
    Names come from ``sample_name``. Returns the paths, sorted by name. Deterministic in all arguments.
    """
    check_sizes(num_classes, samples_per_class, num_subjects, num_setups, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in range(num_classes):
        for index in range(samples_per_class):
            setup, camera, subject, _ = sample_fields(label, index, num_subjects, num_setups)
            long = len(paths) < long_samples
            frames = synthetic_sequence(
                label, index, num_classes=num_classes, subject=subject, setup=setup, camera=camera, seed=seed, long=long
            )
            path = out_dir / sample_name(label, index, num_subjects, num_setups)
            paths.append(atomic_write_bytes(path, skeleton_text(frames, (seed, 4, label, index)).encode("ascii")))
    return sorted(paths)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write synthetic NTU RGB+D .skeleton files.")
    parser.add_argument("--out", required=True, help="folder to write the .skeleton files into")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--samples-per-class", type=int, default=12, help=">= 6: every class in every part")
    parser.add_argument("--num-subjects", type=int, default=6)
    parser.add_argument("--num-setups", type=int, default=4)
    parser.add_argument("--long-samples", type=int, default=0, help="how many files get more than 300 frames")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _work(args: argparse.Namespace) -> list[str]:
    sizes = {k: getattr(args, k) for k in ("num_classes", "samples_per_class", "num_subjects", "num_setups")}
    check_sizes(**sizes, seed=args.seed)
    out = ensure_folder(args.out, "--out")
    with FolderLock(out, "synthetic"):
        removed = clean_stale_temporaries(out)  # a killed run's files (never another live run's)
        paths = write_synthetic_ntu(out, **sizes, long_samples=args.long_samples, seed=args.seed)
    lines = [f"removed {path}, a temporary file left by an interrupted run" for path in removed]
    return [*lines, f"wrote {len(paths)} files to {args.out}"]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_tool(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
