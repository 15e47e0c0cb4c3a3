"""Datasets over the arrays written by data_gen: pretraining pairs of views and downstream (view, label).

Layout (identical to the reference's): ``<data_root>/<folder>/<split>/{train,val}_data_joint.npy``
(float32, N x 3 x T x 25 x 2), ``{part}_label.pkl`` (pickle of (sample_names, labels)) and
``{part}_num_frame.npy`` (N integer frame counts).

Randomness: item ``i`` of epoch ``e`` draws from ``np.random.default_rng((seed, e, i))``, so results do
not depend on the number of DataLoader workers, on which worker serves an item, or on where a run was
resumed. The epoch lives in shared memory, so ``set_epoch`` reaches persistent workers too; call it
before iterating the loader each epoch.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch.utils.data import Dataset

from common import safe_pickle
from feeders.augmentations import center_crop_resize, check_spatial_augment, pretrain_view, temporal_crop_resize
from feeders.views import view_transform

PARTS = ("train", "val")
NUM_JOINTS = 25
NUM_PERSONS = 2

# Plain data: a new dataset is one more entry. ``prepare`` is the command that writes ``folder``
# ({out} = <data_root>/<folder>); it goes into the error a missing file raises.
DATASETS: dict[str, dict[str, Any]] = {
    "ntu60": {
        "folder": "NTU-RGB-D-60-AGCN",
        "num_class": 60,
        "protocols": {"cross_view": "xview", "cross_subject": "xsub"},
        "prepare": "python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> --out-folder {out}",
    },
    "ntu120": {
        "folder": "NTU-RGB-D-120-AGCN",
        "num_class": 120,
        "protocols": {"cross_setup": "xsetup", "cross_subject": "xsub"},
        "prepare": "python data_gen/ntu_gendata.py --dataset ntu120 --data-path <RAW> --out-folder {out}",
    },
    "pku1": {
        "folder": "PKU-MMD-1",
        "num_class": 51,
        "protocols": {"cross_subject": "xsub", "cross_view": "xview"},
        "prepare": "python data_gen/pku_gendata.py --dataset pku1 --data-path <RAW> --out-folder {out}",
    },
    "pku2": {
        "folder": "PKU-MMD-2",
        "num_class": 41,
        "protocols": {"cross_subject": "xsub"},
        "prepare": "python data_gen/pku_gendata.py --dataset pku2 --data-path <RAW> --out-folder {out}",
    },
}


class SplitPaths(NamedTuple):
    """The three files of one part (train or val) of one split."""

    data: Path
    label: Path
    num_frame: Path


def valid_pairs() -> list[str]:
    """All ``dataset/protocol`` combinations, e.g. ``['ntu60/cross_view', ...]``."""
    return [f"{name}/{protocol}" for name, spec in DATASETS.items() for protocol in spec["protocols"]]


def num_classes(dataset: str) -> int:
    """Number of action classes of a registered dataset."""
    return _spec(dataset)["num_class"]


def _spec(dataset: str) -> dict[str, Any]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid dataset/protocol pairs: {', '.join(valid_pairs())}")
    return DATASETS[dataset]


def split_paths(data_root: str | os.PathLike, dataset: str, protocol: str, part: str) -> SplitPaths:
    """Paths of ``part`` ('train' or 'val') of ``dataset`` under ``protocol`` (nothing is opened)."""
    spec = _spec(dataset)
    if protocol not in spec["protocols"]:
        raise ValueError(
            f"dataset {dataset!r} has no protocol {protocol!r}; valid dataset/protocol pairs: {', '.join(valid_pairs())}"
        )
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    folder = Path(data_root) / spec["folder"] / spec["protocols"][protocol]
    return SplitPaths(
        data=folder / f"{part}_data_joint.npy",
        label=folder / f"{part}_label.pkl",
        num_frame=folder / f"{part}_num_frame.npy",
    )


def _prepare_hint(path: Path) -> str:
    """The data_gen command that writes ``path``, found from the dataset folder it lies in."""
    out = path.parent.parent
    for spec in DATASETS.values():
        if out.name == spec["folder"]:
            return spec["prepare"].format(out=out)
    return "the data_gen script for your dataset (see the README)"


class DataFileError(ValueError):
    """A data file that is empty, truncated, or cut short while a run reads it (one-line message).

    A DataLoader re-raises a worker's exception with the worker's traceback in its message; ``str()``
    keeps only this error's own line, so a script can still print it as one line.
    """

    def __str__(self) -> str:
        text = super().__str__()
        marker = f"{type(self).__name__}: "
        own = [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]
        return own[-1] if own else text


LABELS_HOLD = "label files hold (names, labels) only"


def _load_labels(path: Path) -> tuple[list[str], np.ndarray]:
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: empty file (0 bytes), not a label pickle; make it again with: "
                            f"{_prepare_hint(path)}")
    try:
        # Restricted: a label file is data, never code (a downloaded folder could carry anything).
        content = safe_pickle.load(path, LABELS_HOLD)
    except safe_pickle.RefusedPickle:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways; all mean "not a label file"
        raise ValueError(f"{path}: not a readable label pickle ({type(exc).__name__}: {exc})") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path}: expected a pickle of (sample_names, labels), got {type(content).__name__}")
    names, labels = content
    names = [str(n) for n in names]
    try:
        labels = np.asarray(labels)
    except ValueError as exc:
        raise ValueError(f"{path}: labels are not a flat list of integers ({exc})") from None
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: labels must be a flat list of integers, got dtype {labels.dtype} "
                         f"shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be >= 0 (action number - 1), found {labels.min()}")
    if len(names) != len(labels):
        raise ValueError(f"{path}: {len(names)} sample names but {len(labels)} labels")
    return names, labels.astype(np.int64)


class _Split(NamedTuple):
    data: np.ndarray  # memory map (N, 3, T, 25, 2)
    num_frames: np.ndarray  # (N,) int64
    names: list[str] | None
    labels: np.ndarray | None
    data_bytes: int  # the data file's size by its header


def _open_split(paths: SplitPaths, need_labels: bool) -> _Split:
    """Open and validate a split; every error names the offending file(s) and shape(s)."""
    paths = SplitPaths(*(Path(p) for p in paths))
    needed = [paths.data, paths.num_frame] + ([paths.label] if need_labels else [])
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; make it with: {_prepare_hint(path)}")
    data_bytes = npy_size(paths.data)
    try:
        data = np.load(paths.data, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise ValueError(f"{paths.data}: not a readable .npy array ({exc})") from None
    if data.ndim != 5 or data.shape[1] != 3 or data.shape[3] != NUM_JOINTS or data.shape[4] != NUM_PERSONS:
        raise ValueError(f"{paths.data}: expected shape (N, 3, T, {NUM_JOINTS}, {NUM_PERSONS}), got {data.shape}")
    npy_size(paths.num_frame)
    try:
        num_frames = np.load(paths.num_frame)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{paths.num_frame}: not a readable .npy array ({exc})") from None
    if num_frames.ndim != 1 or not np.issubdtype(num_frames.dtype, np.integer):
        raise ValueError(f"{paths.num_frame}: expected N integer frame counts, got dtype {num_frames.dtype} "
                         f"shape {num_frames.shape}")
    if len(num_frames) != data.shape[0]:
        raise ValueError(f"{paths.data} has shape {data.shape} but {paths.num_frame} has shape {num_frames.shape}: "
                         "sample counts disagree")
    if num_frames.size and (num_frames.min() < 0 or num_frames.max() > data.shape[2]):
        raise ValueError(f"{paths.num_frame}: frame counts must lie in [0, {data.shape[2]}] (T of {paths.data}), "
                         f"found [{num_frames.min()}, {num_frames.max()}]")
    names = labels = None
    if need_labels:
        names, labels = _load_labels(paths.label)
        if len(labels) != data.shape[0]:
            raise ValueError(f"{paths.data} has shape {data.shape} but {paths.label} holds {len(labels)} labels: "
                             "sample counts disagree")
    return _Split(data, num_frames.astype(np.int64), names, labels, data_bytes)


def npy_size(path: Path) -> int:
    """The size in bytes a ``.npy`` file must have by its header; DataFileError when it is shorter.

    Checked before the file is memory-mapped: reading a mapped page past the end of a file is a
    SIGBUS, which kills a DataLoader worker with a misleading "out of shared memory" message.
    """
    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path}: empty file (0 bytes), not a .npy array; make it again with: "
                            f"{_prepare_hint(path)}")
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
            shape, _, dtype = read_header[version](f)
            offset = f.tell()
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < needed:
        raise DataFileError(f"{path}: truncated: its header declares shape {tuple(shape)} {dtype} ({needed:,} bytes) "
                            f"but the file has {size:,} bytes (an interrupted copy?); make it again with: "
                            f"{_prepare_hint(path)}")
    return needed


def check_split(paths: SplitPaths, need_labels: bool = True) -> int:
    """Check that a split's files exist and agree; return its number of samples.

    Raises FileNotFoundError (naming the file and the data_gen command that writes it) or ValueError
    (naming the files and shapes that disagree). Cheap: the data is memory-mapped, not read.
    """
    return int(_open_split(paths, need_labels).data.shape[0])


def stratified_subset(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset: round(fraction * n_c) clips of each class c,
    at least one (the semi-supervised protocol)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = max(1, int(np.floor(fraction * len(members) + 0.5)))
        chosen.append(rng.choice(members, size=min(k, len(members)), replace=False))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _fresh_seed(seed: int | None) -> int:
    """``seed`` itself, or fresh OS entropy when None (store it so the run can be repeated)."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


class _SplitDataset(Dataset):
    """Shared machinery: lazy per-process memory map, shared epoch counter, per-item generator."""

    def __init__(self, paths: SplitPaths, need_labels: bool, seed: int | None) -> None:
        split = _open_split(paths, need_labels)
        self.paths = SplitPaths(*(Path(p) for p in paths))
        self.num_frames = split.num_frames
        self._all_names = split.names
        self._all_labels = split.labels
        self._data: np.ndarray | None = split.data
        self._data_bytes = split.data_bytes
        self.seed = _fresh_seed(seed)
        # In shared memory so that set_epoch in the main process reaches persistent DataLoader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch``; call before iterating the loader each epoch."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, int(self._epoch), int(index)))

    @property
    def data(self) -> np.ndarray:
        """The (N, 3, T, 25, 2) memory map, opened once per process."""
        if self._data is None:
            npy_size(self.paths.data)
            self._data = np.load(self.paths.data, mmap_mode="r")
        return self._data

    def _clip(self, index: int) -> np.ndarray:
        """Sample ``index`` of the memory map, once the mapped file is known to still hold it.

        One ``fstat`` per item: a file truncated in place during a run would otherwise be a SIGBUS.
        """
        data = self.data
        self._check_mapped_size(data)
        return data[index]

    def check_files(self) -> None:
        """DataFileError if the data file was cut short since it was opened (call it when a worker died)."""
        self._check_mapped_size(self.data)
        npy_size(self.paths.data)

    def _check_mapped_size(self, data: np.ndarray) -> None:
        mapping = getattr(data, "_mmap", None)
        size = mapping.size() if mapping is not None else os.stat(self.paths.data).st_size
        if size < self._data_bytes:
            raise DataFileError(f"{self.paths.data}: cut to {size:,} of its {self._data_bytes:,} bytes while this run "
                                f"was reading it (rewritten in place?); make it again with: "
                                f"{_prepare_hint(self.paths.data)}, then rerun")

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would copy the whole array into each worker; reopen it there instead.
        state = self.__dict__.copy()
        state["_data"] = None
        return state


class PretrainDataset(_SplitDataset):
    """Two augmented views of each clip, in one or two representations.

    ``representations`` = ('seq-based', 'graph-based') etc. (inter-skeleton): item -> (s1_v1, s2_v1, s1_v2, s2_v2),
    view k converted to both representations; a single name (intra-skeleton): item -> (v1, v2).
    A pair name such as 'seq-based_and_graph-based' is accepted too. Each view: its own crop-resize with
    ratio ``l_ratio`` to ``input_size`` frames, then shear or joint corruption (``spatial_augment``: see
    ``feeders.augmentations.SPATIAL_AUGMENTS``).
    """

    def __init__(self, paths: SplitPaths, representations: Sequence[str] | str, l_ratio: Sequence[float] = (0.1, 1.0),
                 input_size: int = 64, seed: int | None = 0, spatial_augment: str = "shear_or_corruption") -> None:
        check_spatial_augment(spatial_augment, "spatial_augment")  # here, not first in a DataLoader worker
        if isinstance(representations, str):
            representations = tuple(representations.split("_and_"))
        if len(representations) not in (1, 2):
            raise ValueError(f"expected 1 or 2 representations, got {representations!r}")
        self.representations = tuple(representations)
        self._transforms = [view_transform(r) for r in self.representations]
        self.l_ratio = _ratio_pair(l_ratio)
        self.input_size = int(input_size)
        self.spatial_augment = spatial_augment
        super().__init__(paths, need_labels=False, seed=seed)

    def __len__(self) -> int:
        return len(self.num_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = self._rng(index)
        clip = self._clip(index)  # (3, T, 25, 2) memory-map view: only cropped frames get read
        n = int(self.num_frames[index])
        views = [pretrain_view(clip, n, rng, self.l_ratio, self.input_size, self.spatial_augment) for _ in range(2)]
        return tuple(torch.from_numpy(f(v)) for v in views for f in self._transforms)


class DownstreamDataset(_SplitDataset):
    """(view, label) for linear evaluation, fine-tuning, retrieval and the semi-supervised protocol.

    ``train=True``: random crop with ratio ``l_ratio`` (default (0.5, 1.0)); ``train=False``: centre crop
    keeping ``l_ratio`` (default 0.95) of the frames. ``indices`` restricts the dataset to those samples
    (e.g. from :func:`stratified_subset`); ``labels`` and ``names`` then describe the subset.
    """

    def __init__(self, paths: SplitPaths, representation: str, train: bool,
                 l_ratio: Sequence[float] | float | None = None, input_size: int = 64, seed: int | None = 0,
                 indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.representation = representation
        self._transform = view_transform(representation)
        self.train = bool(train)
        if self.train:
            self.l_ratio: tuple[float, float] | float = _ratio_pair((0.5, 1.0) if l_ratio is None else l_ratio)
        else:
            self.l_ratio = _ratio_single(0.95 if l_ratio is None else l_ratio)
        self.input_size = int(input_size)
        super().__init__(paths, need_labels=True, seed=seed)
        n_all = len(self.num_frames)
        if indices is None:
            self.indices = np.arange(n_all, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n_all):
                raise ValueError(f"indices must lie in [0, {n_all}) for {self.paths.data}, "
                                 f"got [{self.indices.min()}, {self.indices.max()}]")
        self.labels: np.ndarray = self._all_labels[self.indices]
        self.names: list[str] = [self._all_names[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[i])
        clip = self._clip(index)
        n = int(self.num_frames[index])
        if self.train:
            # Keyed by the underlying sample, so a subset sees the same crops as the full set.
            view = temporal_crop_resize(clip, n, self.l_ratio, self.input_size, self._rng(index))
        else:
            view = center_crop_resize(clip, n, self.l_ratio, self.input_size)
        return torch.from_numpy(self._transform(view)), int(self.labels[i])


def _ratio_pair(ratio: Sequence[float] | float) -> tuple[float, float]:
    values = [float(r) for r in np.atleast_1d(ratio)]
    if len(values) != 2 or not 0.0 < values[0] <= values[1] <= 1.0:
        raise ValueError(f"a random crop ratio must be (lo, hi) with 0 < lo <= hi <= 1, got {ratio!r}")
    return values[0], values[1]


def _ratio_single(ratio: Sequence[float] | float) -> float:
    values = [float(r) for r in np.atleast_1d(ratio)]  # the reference passes [0.95]
    if len(values) != 1 or not 0.0 < values[0] <= 1.0:
        raise ValueError(f"a centre crop ratio must be one number in (0, 1], got {ratio!r}")
    return values[0]
