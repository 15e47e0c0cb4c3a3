"""NTU RGB+D sample names, benchmark splits and the official lists of samples to ignore.

A sample name is ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication, action; 1-based,
three digits each), optionally followed by ``.skeleton``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.constants import RESOURCES_FOLDER
from data_gen.writer import DataGenError

# Training performers of the cross-subject benchmark. The NTU 120 list extends the NTU 60 one; NTU 60
# only has performers 1..40, so the extended list gives the same split there (the reference uses the
# extended list for both datasets).
XSUB_TRAIN_SUBJECTS_NTU60 = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
# fmt: off
XSUB_TRAIN_SUBJECTS_NTU120_EXTRA = (
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80,
    81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
)
# fmt: on
XSUB_TRAIN_SUBJECTS = frozenset(XSUB_TRAIN_SUBJECTS_NTU60 + XSUB_TRAIN_SUBJECTS_NTU120_EXTRA)
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
XSETUP_TRAIN_SETUPS = frozenset(range(2, 33, 2))
_TRAINING = {"xsub": ("subject", XSUB_TRAIN_SUBJECTS), "xview": ("camera", XVIEW_TRAIN_CAMERAS)}
_TRAINING["xsetup"] = ("setup", XSETUP_TRAIN_SETUPS)

DEFAULT_IGNORED_LISTS = {
    "ntu60": RESOURCES_FOLDER / "NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": RESOURCES_FOLDER / "NTU_RGBD120_samples_with_missing_skeletons.txt",
}

SKELETON_SUFFIX = ".skeleton"
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class SampleName:
    """The fields encoded in an NTU sample name."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int  # 1-based, as in the name; the stored label is action - 1

    @property
    def label(self) -> int:
        return self.action - 1


def strip_suffix(name: str) -> str:
    """``S001C001P001R001A001.skeleton`` -> ``S001C001P001R001A001`` (names without it pass through)."""
    return name[: -len(SKELETON_SUFFIX)] if name.endswith(SKELETON_SUFFIX) else name


def parse_sample_name(name: str) -> SampleName:
    """Read the fields of ``name`` (with or without ``.skeleton``); DataGenError if it is not an NTU name."""
    match = _NAME_RE.fullmatch(strip_suffix(name))
    if match is None:
        raise DataGenError(f"{name!r} is not an NTU sample name: expected SsssCcccPpppRrrrAaaa[.skeleton]")
    setup, camera, subject, replication, action = (int(g) for g in match.groups())
    if action < 1:
        raise DataGenError(f"{name!r}: action number must be >= 1, got A{action:03d}")
    return SampleName(setup, camera, subject, replication, action)


def is_training(sample: SampleName, benchmark: str) -> bool:
    """Whether ``sample`` belongs to the training part of ``benchmark`` (xsub, xview or xsetup)."""
    if benchmark not in _TRAINING:
        raise ValueError(f"unknown benchmark {benchmark!r}: expected one of xsub, xview, xsetup")
    return getattr(sample, _TRAINING[benchmark][0]) in _TRAINING[benchmark][1]


def read_ignored_list(path: str | Path) -> set[str]:
    """The sample names (without ``.skeleton``) of an ignored-samples file; other lines (the official files
    open with prose) are skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return {token for token in (strip_suffix(line.strip()) for line in f) if _NAME_RE.fullmatch(token)}
