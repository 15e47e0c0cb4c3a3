"""Skeleton clip augmentations (``feeders.augmentations``), the three input representations
(``feeders.views``) and the datasets over data_gen's arrays (``feeders.datasets``); the names the
commands load data with are importable from here."""

from feeders.augmentations import SPATIAL_AUGMENTS
from feeders.datasets import (
    CheckedLoader,
    DownstreamDataset,
    PretrainDataset,
    SplitPaths,
    check_split,
    num_classes,
    split_paths,
)

__all__ = [
    "SPATIAL_AUGMENTS",
    "CheckedLoader",
    "DownstreamDataset",
    "PretrainDataset",
    "SplitPaths",
    "check_split",
    "num_classes",
    "split_paths",
]
