"""Skeleton clip augmentations, the three input representations and the datasets over data_gen's arrays."""

from feeders.augmentations import (
    SPATIAL_AUGMENTS,
    center_crop_resize,
    joint_corruption,
    pretrain_view,
    shear,
    temporal_crop_resize,
)
from feeders.datasets import (
    CheckedLoader,
    DataFileError,
    DownstreamDataset,
    PretrainDataset,
    SplitPaths,
    check_split,
    num_classes,
    split_paths,
    valid_pairs,
)
from feeders.views import (
    VIEW_TRANSFORMS,
    to_clip_view,
    to_graph_view,
    to_image_view,
    to_seq_view,
    view_shape,
    view_transform,
)

__all__ = [
    "SPATIAL_AUGMENTS",
    "VIEW_TRANSFORMS",
    "CheckedLoader",
    "DataFileError",
    "DownstreamDataset",
    "PretrainDataset",
    "SplitPaths",
    "center_crop_resize",
    "check_split",
    "joint_corruption",
    "num_classes",
    "pretrain_view",
    "shear",
    "split_paths",
    "temporal_crop_resize",
    "to_clip_view",
    "to_graph_view",
    "to_image_view",
    "to_seq_view",
    "valid_pairs",
    "view_shape",
    "view_transform",
]
