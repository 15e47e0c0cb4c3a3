"""Numbers and names that more than one module needs, each defined once (layer 0).

This module imports nothing from the project and nothing outside the standard library, so that every
other module, down to the data files' readers, can take its numbers from here.

- The sample layout: a prepared clip is float32 (C, T, V, M) = (3 coordinates, 300 frames, 25 Kinect v2
  joints, 2 persons); a dataset part stacks N of them, ``(N, *SAMPLE_SHAPE)``.
- The datasets: folder under the data root, number of classes, protocol -> benchmark folder, the
  benchmarks the preparation writes by default, and the command that prepares it.
- The names a checkpoint's keys are built from: the MoCo encoder slots and the ``module.`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------
# The sample layout

NUM_COORDINATES = 3  # x, y, z (camera space, metres)
NUM_FRAMES = 300  # frames stored per clip: longer sequences are cut (NTU) or resampled (PKU-MMD)
NUM_JOINTS = 25  # Kinect v2 joints, in the NTU order
NUM_PERSONS = 2  # persons kept per clip (the two most energetic bodies)
SAMPLE_SHAPE: tuple[int, int, int, int] = (NUM_COORDINATES, NUM_FRAMES, NUM_JOINTS, NUM_PERSONS)
# One frame flattened (the seq-based view's width, a PKU-MMD text line, a CTR-GCN frame vector): 150.
VALUES_PER_FRAME = NUM_PERSONS * NUM_JOINTS * NUM_COORDINATES
MAX_BODIES = 4  # bodies the Kinect tracks at most in one frame of a raw NTU file
WINDOW_SIZE = 64  # frames of every view: each crop is resized to this (the reference's)

# ------------------------------------------------------------------------------------------------
# Datasets and the prepared folders

PARTS: tuple[str, str] = ("train", "val")
DEFAULT_DATA_ROOT = "./data"
RESOURCES_FOLDER = Path(__file__).resolve().parents[1] / "data_gen" / "resources"
ACTION_NAMES_FILE = RESOURCES_FOLDER / "ntu_action_names.tsv"

# Plain data: a new dataset is one more entry. ``protocols``: protocol name -> benchmark folder;
# ``benchmarks``: the folders its preparation writes by default, in writing order; ``prepare``: the
# command that writes ``<data_root>/<folder>`` ({out}), quoted in the error a missing file raises.
DATASETS: dict[str, dict[str, Any]] = {
    "ntu60": {
        "folder": "NTU-RGB-D-60-AGCN",
        "num_class": 60,
        "protocols": {"cross_view": "xview", "cross_subject": "xsub"},
        "benchmarks": ("xsub", "xview"),
        "prepare": "python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> --out-folder {out}",
    },
    "ntu120": {
        "folder": "NTU-RGB-D-120-AGCN",
        "num_class": 120,
        "protocols": {"cross_setup": "xsetup", "cross_subject": "xsub"},
        "benchmarks": ("xsub", "xsetup"),
        "prepare": "python data_gen/ntu_gendata.py --dataset ntu120 --data-path <RAW> --out-folder {out}",
    },
    "pku1": {
        "folder": "PKU-MMD-1",
        "num_class": 51,
        "protocols": {"cross_subject": "xsub", "cross_view": "xview"},
        "benchmarks": ("xsub", "xview"),
        "prepare": "python data_gen/pku_gendata.py --dataset pku1 --data-path <RAW> --out-folder {out}",
    },
    "pku2": {
        "folder": "PKU-MMD-2",
        "num_class": 41,
        "protocols": {"cross_subject": "xsub"},
        "benchmarks": ("xsub",),
        "prepare": "python data_gen/pku_gendata.py --dataset pku2 --data-path <RAW> --out-folder {out}",
    },
}
NTU_DATASETS: tuple[str, ...] = ("ntu60", "ntu120")
PYSKL_FOLDERS: dict[str, str] = {"xset": "xsetup"}  # pyskl's split prefixes that are not our folder names
# ``dataset/protocol`` combinations, e.g. 'ntu60/cross_view'.
VALID_PAIRS: tuple[str, ...] = tuple(
    f"{name}/{protocol}" for name, spec in DATASETS.items() for protocol in spec["protocols"]
)


def default_out_folder(dataset: str) -> str:
    """Where the preparation of ``dataset`` writes by default, e.g. ``./data/NTU-RGB-D-60-AGCN``."""
    return f"{DEFAULT_DATA_ROOT}/{DATASETS[dataset]['folder']}"


# ------------------------------------------------------------------------------------------------
# Checkpoint key names (the reference's, so that its checkpoints load into ours)

# (query encoder, key encoder) of each stream: S1 (the only one of intra-skeleton contrast), then S2.
ENCODER_PAIRS: tuple[tuple[str, str], ...] = (("encoder_q", "encoder_k"), ("encoder_r", "encoder_l"))
# The query encoder of each representation, by its position in a pair name (A_and_B: A -> encoder_q).
QUERY_ENCODERS: tuple[str, ...] = tuple(query for query, _ in ENCODER_PAIRS)
CHECKPOINT_PREFIX = "module."  # what nn.DataParallel puts before every key; checkpoints keep it
