"""Datasets over the arrays written by data_gen: pretraining pairs of views and downstream (view, label).

Layout (identical to the reference's, described in ``common.split_folder``):
``<data_root>/<folder>/<split>/{train,val}_data_joint.npy`` (float32, N x 3 x T x 25 x 2),
``{part}_label.pkl`` (pickle of (sample_names, labels)) and ``{part}_num_frame.npy`` (N integer frame
counts). Opening a dataset checks those files, then compares the folder with its ``manifest.json``
(sizes and ``.npy`` headers only; a warning, once per folder, when they differ).

Randomness: item ``i`` of epoch ``e`` draws from ``np.random.default_rng((seed, e, i))``, so results do
not depend on the number of DataLoader workers, on which worker serves an item, or on where a run was
resumed. The epoch lives in shared memory, so ``set_epoch`` reaches persistent workers too; call it
before iterating the loader each epoch.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.constants import DATASETS, VALID_PAIRS, WINDOW_SIZE
from common.io import UsageError
from common.manifest import warn_if_mismatch
from common.split_folder import DataFileError, SplitPaths, npy_size, open_split, part_paths, prepare_hint
from feeders.augmentations import (
    PRETRAIN_CROP_RATIO,
    center_crop_resize,
    check_spatial_augment,
    pretrain_view,
    temporal_crop_resize,
)
from feeders.views import view_transform

# How a DataLoader reports a worker that died ("... is killed by signal: Bus error", "... exited
# unexpectedly").
WORKER_DIED = "DataLoader worker (pid"


def num_classes(dataset: str) -> int:
    """Number of action classes of a registered dataset."""
    return _spec(dataset)["num_class"]


def _spec(dataset: str) -> dict[str, Any]:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid dataset/protocol pairs: {', '.join(VALID_PAIRS)}")
    return DATASETS[dataset]


def split_paths(data_root: str | os.PathLike, dataset: str, protocol: str, part: str) -> SplitPaths:
    """Paths of ``part`` ('train' or 'val') of ``dataset`` under ``protocol`` (nothing is opened)."""
    spec = _spec(dataset)
    if protocol not in spec["protocols"]:
        raise UsageError(
            f"dataset {dataset!r} has no protocol {protocol!r}; valid dataset/protocol pairs: {', '.join(VALID_PAIRS)}"
        )
    return part_paths(Path(data_root) / spec["folder"] / spec["protocols"][protocol], part)


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
        split = open_split(paths, need_labels)
        self.paths = SplitPaths(*(Path(p) for p in paths))
        warn_if_mismatch(self.paths.data.parent)
        self.num_frames = split.num_frames
        self._all_names = split.names
        self._all_labels = split.labels
        self._data: np.ndarray | None = split.data
        self._data_bytes = split.header.file_size
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
            raise DataFileError(
                f"{self.paths.data}: cut to {size:,} of its {self._data_bytes:,} bytes while this run "
                f"was reading it (rewritten in place?); make it again with: "
                f"{prepare_hint(self.paths.data)}, then rerun"
            )

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would copy the whole array into each worker; reopen it there instead.
        state = self.__dict__.copy()
        state["_data"] = None
        return state


def _quiet_worker(worker_init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """Signals in a DataLoader worker: the main process decides how a run ends and says so in one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the main process stops us
    # SIGTERM (a batch system's, the loader's shutdown, multiprocessing's at exit) ends a worker quietly,
    # with a status the main process does not report; ignored, it would leave the interpreter's exit
    # waiting forever for the worker.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    if hasattr(signal, "SIGBUS"):  # die without torch's "shared memory" guess: the main process names the file
        signal.signal(signal.SIGBUS, signal.SIG_DFL)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


class CheckedLoader(DataLoader):
    """A DataLoader that says why a worker died when a data file was cut short under it, and whose
    workers leave quietly however the run ends.

    A worker reading a memory-mapped file that another program truncates dies of SIGBUS, which the
    DataLoader reports as ``RuntimeError: DataLoader worker (pid N) is killed by signal: Bus error``.
    When a worker dies, the dataset's files are checked (``check_files``): a file cut short raises its
    one-line :class:`DataFileError` instead; any other death is re-raised as it was. :meth:`close` ends
    persistent workers at once (call it when the run stops, however it stops).
    """

    def __init__(self, *args: Any, worker_init_fn: Callable[[int], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, worker_init_fn=functools.partial(_quiet_worker, worker_init_fn), **kwargs)

    def __iter__(self) -> Iterator[Any]:
        return self._checked(super().__iter__())

    def _checked(self, batches: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from batches
        except RuntimeError as exc:
            check_files = getattr(self.dataset, "check_files", None)
            if str(exc).startswith(WORKER_DIED) and check_files is not None:
                check_files()  # raises DataFileError when the file was cut
            raise

    def close(self) -> None:
        """Stop the worker processes now (persistent ones otherwise live until the loader is freed)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


class PretrainDataset(_SplitDataset):
    """Two augmented views of each clip, each in one or two representations.

    ``views``: the kind of view (``feeders.views.VIEWS``) of each representation contrasted, e.g.
    ('sequence', 'clip') for seq-based and graph-based (inter-skeleton): item -> (s1_v1, s2_v1, s1_v2,
    s2_v2), augmented view k in both kinds; one kind (intra-skeleton): item -> (v1, v2). Each view: its
    own crop-resize with ratio ``l_ratio`` to ``input_size`` frames, then shear or joint corruption
    (``spatial_augment``: see ``feeders.augmentations.SPATIAL_AUGMENTS``).
    """

    def __init__(
        self,
        paths: SplitPaths,
        views: Sequence[str] | str,
        l_ratio: Sequence[float] = PRETRAIN_CROP_RATIO,
        input_size: int = WINDOW_SIZE,
        seed: int | None = 0,
        spatial_augment: str = "shear_or_corruption",
    ) -> None:
        check_spatial_augment(spatial_augment, "spatial_augment")  # here, not first in a DataLoader worker
        views = (views,) if isinstance(views, str) else views
        if len(views) not in (1, 2):
            raise ValueError(f"expected the views of 1 or 2 representations, got {views!r}")
        self.views = tuple(views)
        self._transforms = [view_transform(v) for v in self.views]
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
    (e.g. the semi-supervised protocol's subset); ``labels`` and ``names`` then describe the subset.
    """

    def __init__(
        self,
        paths: SplitPaths,
        view: str,
        train: bool,
        l_ratio: Sequence[float] | float | None = None,
        input_size: int = WINDOW_SIZE,
        seed: int | None = 0,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.view = view
        self._transform = view_transform(view)
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
                raise ValueError(
                    f"indices must lie in [0, {n_all}) for {self.paths.data}, "
                    f"got [{self.indices.min()}, {self.indices.max()}]"
                )
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
