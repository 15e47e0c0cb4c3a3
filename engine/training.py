"""Training utilities shared by pretraining, classification and retrieval scripts."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from common.io import UsageError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def select_device(requested: str = "auto") -> torch.device:
    """The one place a script picks its device: ``auto`` takes CUDA when there is one.

    Raises :class:`common.io.UsageError` for a device torch cannot provide.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"--device {requested}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA was asked for but torch sees no GPU")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def args_to_dict(args: Any) -> dict[str, Any]:
    """An argparse namespace as plain JSON/torch-safe values (for metrics files and checkpoints)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, (Path, torch.device)):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


@torch.no_grad()
def correct_counts(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...]) -> torch.Tensor:
    """(len(topk),) int64 number of rows whose target is among the ``k`` highest scores of (B, C) ``output``,
    on its device (no host sync)."""
    hits = output.topk(min(max(topk), output.shape[1]), dim=1).indices == target[:, None]  # (B, k_max)
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in topk])


def learning_rate_at(epoch: int, base_lr: float, epochs: int, schedule: Iterable[int], cos: bool) -> float:
    """The reference's schedule: cosine over ``epochs``, or x0.1 at each milestone reached."""
    if cos:
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base_lr * 0.1 ** sum(1 for milestone in schedule if epoch >= milestone)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state, (version, internal, gauss) = np.random.get_state(), random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_cached_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_key"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def summary_writer(log_dir: str | os.PathLike | None, purge_step: int | None = None) -> SummaryWriter | None:
    """A TensorBoard writer, or ``None`` when ``log_dir`` is None (non-zero ranks). ``purge_step``: a
    resumed run's first step; TensorBoard then hides what an earlier writer logged from it on."""
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # here: it loads TensorBoard, which only training needs

    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def loader_options(workers: int, device: torch.device) -> dict[str, Any]:
    """The DataLoader settings every command uses: ``workers`` processes kept across epochs, pinned
    memory for a GPU."""
    return dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Crops and shuffle order keyed by (seed, epoch): a resumed run sees what an uninterrupted one would."""
    loader.dataset.set_epoch(epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.generator.manual_seed(seed * 100_003 + epoch)
