"""Run checkpoints: writing them, reading them back (``torch.load(weights_only=True)``, every weight
checked to be finite) and the one reader ``--resume`` uses in every script.

Every error here is a :class:`CheckpointError` (a :class:`common.io.UsageError`) whose message is one
line naming the file. Pretrained-encoder loading lives in :mod:`engine.pretrained`, the checkpoint folder
of a run in :mod:`engine.run_folder`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.io import UsageError, atomic_torch_save
from moco.builder import strip_prefix

# What a checkpoint's ``format`` entry says it is, and the words error messages use for it. Files
# without the entry (the reference's, ours from before it) are read by their keys alone.
PRETRAIN_FORMAT = "skeleton-contrast-moco/1"
CLASSIFIER_FORMAT = "skeleton-contrast-classifier/1"
FORMAT_KINDS: dict[str, str] = {PRETRAIN_FORMAT: "pretraining", CLASSIFIER_FORMAT: "classification"}
LAST_CHECKPOINT = "checkpoint_last.pth.tar"  # pretraining's latest state
CLASSIFIER_LAST_CHECKPOINT = "last_checkpoint.pth.tar"  # classification's, as the reference names it
LAST_NAMES = (LAST_CHECKPOINT, CLASSIFIER_LAST_CHECKPOINT)


class CheckpointError(UsageError):
    """A file that cannot serve as the checkpoint asked for (one line naming it)."""


def model_state(checkpoint: Mapping[str, Any], source: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (its ``state_dict`` entry, or the dict itself when it is one),
    with DataParallel's ``module.`` prefix removed."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{source}: expected a 'state_dict' entry mapping parameter names to tensors; "
            f"top-level keys are {sorted(checkpoint)[:10]}"
        )
    return strip_prefix(state)


def recorded(checkpoint: Mapping[str, Any], entry: str = "args") -> Mapping[str, Any]:
    """What a checkpoint of ours records under ``entry``: its ``args`` (name -> value) or, a classifier's,
    its ``config`` (flag -> value); ``{}`` where there is none (the reference's files)."""
    value = checkpoint.get(entry)
    return value if isinstance(value, Mapping) else {}


def write_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save ``state`` atomically (see :func:`common.io.atomic_write`): a crash or a full disk leaves the
    previous file intact. ``state`` must hold only what ``torch.load(weights_only=True)`` reads back."""
    return atomic_torch_save(dict(state), path)


def _load_failure(exc: BaseException) -> str:
    """The one informative sentence of torch's (multi-paragraph) load error."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return re.split(r"(?<=\.)\s", line, maxsplit=1)[0].rstrip(".")


def non_finite_tensor(checkpoint: Mapping[str, Any]) -> str | None:
    """The name of the first model tensor holding NaN or infinity, or None."""
    state = checkpoint.get("state_dict", checkpoint)
    for key, value in state.items() if isinstance(state, Mapping) else ():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False, flag: str = "") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file (after
    ``flag``, the option that gave it, when given) and the first non-finite weight.

    ``mmap``: map the tensors instead of reading them (cheap when only a few entries are wanted; the
    weights are then not checked).
    """
    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        held = [path / name for name in LAST_NAMES if (path / name).is_file()]
        hint = f"pass a file such as {held[0]}" if held else "pass a checkpoint file"
        raise CheckpointError(f"{where} is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise CheckpointError(f"{flag}: checkpoint {path} not found" if flag else f"checkpoint {path} not found")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            # Files in torch's legacy (non-zip) format cannot be mapped; read them whole.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError) as exc:
        raise CheckpointError(
            f"{where}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"(truncated, not a checkpoint, or holding arbitrary Python objects): {_load_failure(exc)}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{where}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    bad = None if mmap else non_finite_tensor(checkpoint)
    if bad is not None:
        raise CheckpointError(f"{where}: {bad} holds non-finite values (NaN or infinity); the weights are unusable")
    return checkpoint


def read_resume_checkpoint(path: str | os.PathLike, expected: str) -> dict[str, Any]:
    """The checkpoint ``--resume`` names (one reader for pretraining and classification), checked to be of
    the ``expected`` format: its ``format`` entry, when it has one; without one (the reference's files),
    its keys. Errors are one line starting with ``--resume``."""
    checkpoint = read_checkpoint(path, flag="--resume")
    kind, found = FORMAT_KINDS[expected], checkpoint.get("format")
    if found is not None and found != expected:
        if str(found).partition("/")[0] == expected.partition("/")[0]:
            raise CheckpointError(
                f"--resume {path}: checkpoint format {found!r}, but this version reads {expected!r} (written by "
                "another version of this code)"
            )
        described = (
            f"a {FORMAT_KINDS[found]} checkpoint" if found in FORMAT_KINDS else f"a checkpoint of format {found!r}"
        )
        raise CheckpointError(f"--resume {path} is {described}, not a {kind} checkpoint")
    missing = [key for key in ("epoch", "state_dict", "optimizer") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"--resume {path}: not a {kind} checkpoint (no {missing[0]!r} entry)")
    epoch = checkpoint["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"--resume {path}: 'epoch' entry {epoch!r} is not a count of epochs")
    return checkpoint
