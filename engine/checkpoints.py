"""Run checkpoints: writing them, reading them back (``torch.load(weights_only=True)``), the one reader
``--resume`` uses in every script, the ``module.`` prefix of DataParallel keys, and the guard that keeps
a new run from silently replacing an earlier run's checkpoints.

Every error here is a :class:`common.io.UsageError` (a ``ValueError``) whose message is one line naming
the file or folder; a missing file is also a ``FileNotFoundError``. Pretrained-encoder loading lives in
:mod:`engine.pretrained`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from common.constants import CHECKPOINT_PREFIX
from common.io import OutputError, UsageError, atomic_torch_save, remove_files

# What a checkpoint's ``format`` entry says it is, and the words error messages use for it. Files
# without the entry (the reference's, ours from before it) are read by their keys alone.
PRETRAIN_FORMAT = "skeleton-contrast-moco/1"
CLASSIFIER_FORMAT = "skeleton-contrast-classifier/1"
FORMAT_KINDS: dict[str, str] = {PRETRAIN_FORMAT: "pretraining", CLASSIFIER_FORMAT: "classification"}
CHECKPOINT_SUFFIX = ".pth.tar"
LAST_CHECKPOINT = "checkpoint_last.pth.tar"  # pretraining's; classification writes last_checkpoint.pth.tar
# Names under which scripts keep their latest state, for hints when a folder is given instead of a file.
LAST_NAMES = (LAST_CHECKPOINT, "last_checkpoint.pth.tar")
TENSORBOARD_PREFIX = "events.out.tfevents."


class CheckpointError(UsageError):
    """A file that cannot serve as the checkpoint asked for (one line naming it)."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


# ---------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = CHECKPOINT_PREFIX) -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` removed from every key that has it (DataParallel's ``module.``)."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str = CHECKPOINT_PREFIX) -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` on every key (the reference's DataParallel layout), never twice."""
    return {k if k.startswith(prefix) else prefix + k: v for k, v in state.items()}


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


def recorded_window_size(checkpoint: Mapping[str, Any]) -> int | None:
    """The ``--window-size`` a checkpoint of ours records; None where it records none (the reference's
    checkpoints and ours from before the flag, all pretrained on 64 frames)."""
    args = checkpoint.get("args")
    return args.get("window_size") if isinstance(args, Mapping) else None


# ---------------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------------


def write_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save ``state`` atomically (see :func:`common.io.atomic_write`): a crash or a full disk leaves the
    previous file intact. ``state`` must hold only what ``torch.load(weights_only=True)`` reads back."""
    return atomic_torch_save(dict(state), path)


def _load_failure(exc: BaseException) -> str:
    """The one informative sentence of torch's (multi-paragraph) load error."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return re.split(r"(?<=\.)\s", line, maxsplit=1)[0].rstrip(".")


def _folder_hint(folder: Path) -> str:
    held = [folder / name for name in LAST_NAMES if (folder / name).is_file()]
    return f"; pass a file such as {held[0]}" if held else "; pass a checkpoint file"


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    ``mmap``: map the tensors instead of reading them (cheap when only a few entries are wanted).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{_folder_hint(path)}")
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint {path} not found")
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
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"(truncated, not a checkpoint, or holding arbitrary Python objects): {_load_failure(exc)}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    return checkpoint


def check_format(
    checkpoint: Mapping[str, Any],
    path: str | os.PathLike,
    expected: str,
    required: Sequence[str] = ("epoch", "state_dict", "optimizer"),
    flag: str = "--resume",
) -> None:
    """CheckpointError unless ``checkpoint`` can be what ``expected`` names: its ``format`` entry, when it
    has one, must be ``expected``; without one (the reference's files) it must hold ``required``."""
    kind = FORMAT_KINDS.get(expected, expected)
    found = checkpoint.get("format")
    if found is not None and found != expected:
        family, _, _ = str(found).partition("/")
        if family == expected.partition("/")[0]:
            raise CheckpointError(
                f"{flag} {path}: checkpoint format {found!r}, but this version reads "
                f"{expected!r} (written by another version of this code)"
            )
        what = FORMAT_KINDS.get(found)
        described = f"a {what} checkpoint" if what else f"a checkpoint of format {found!r}"
        raise CheckpointError(f"{flag} {path} is {described}, not a {kind} checkpoint")
    for key in required:
        if key not in checkpoint:
            raise CheckpointError(f"{flag} {path}: not a {kind} checkpoint (no {key!r} entry)")


def read_resume_checkpoint(
    path: str | os.PathLike,
    expected_format: str,
    required: Sequence[str] = ("epoch", "state_dict", "optimizer"),
    flag: str = "--resume",
) -> dict[str, Any]:
    """The checkpoint ``--resume`` names, checked to be of ``expected_format`` (:func:`check_format`):
    one reader for pretraining and classification. Errors are one line and start with ``flag``."""
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointNotFound as exc:
        raise CheckpointNotFound(f"{flag}: {exc}") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{flag} {exc}" if str(exc).startswith(str(path)) else f"{flag}: {exc}") from None
    check_format(checkpoint, path, expected_format, required, flag)
    epoch = checkpoint.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{flag} {path}: 'epoch' entry {epoch!r} is not a count of epochs")
    return checkpoint


# ---------------------------------------------------------------------------------------------------
# The checkpoint folder of a run
# ---------------------------------------------------------------------------------------------------


def run_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The checkpoint files (``*.pth.tar``, temporaries excluded) directly in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if p.name.endswith(CHECKPOINT_SUFFIX) and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _latest(files: Sequence[Path], last_name: str) -> Path:
    named = [p for p in files if p.name == last_name]
    return named[0] if named else files[-1]


def describe_progress(path: Path) -> str:
    """``checkpoint_last.pth.tar: 4 of 10 epochs done`` (or where a run stopped mid-epoch), read cheaply
    (tensors memory-mapped); ``checkpoint_last.pth.tar: unreadable`` when it cannot be read."""
    try:
        checkpoint = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return f"{path.name}: unreadable"
    epoch, step = checkpoint.get("epoch"), checkpoint.get("step", 0)
    args = checkpoint.get("args")
    total = args.get("epochs") if isinstance(args, Mapping) else None
    if not isinstance(epoch, int):
        return f"{path.name}: no epoch recorded"
    done = f"{epoch} of {total} epochs done" if isinstance(total, int) else f"{epoch} epochs done"
    if isinstance(step, int) and step > 0:
        return f"{path.name}: stopped in epoch {epoch} at step {step}, {done}"
    return f"{path.name}: {done}"


def check_folder_writable(folder: str | os.PathLike, flag: str = "--checkpoint-path") -> None:
    """OutputError unless ``folder`` is a writable folder or can be created as one (creates nothing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, not a folder")
    existing = folder
    while not existing.exists():  # the folder will be created under its nearest existing ancestor
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing} is not writable)"
        raise OutputError(f"{flag} {folder} is not writable{where}")


def resumes_in(folder: str | os.PathLike, resume: str | os.PathLike | None) -> bool:
    """Whether ``resume`` names a checkpoint inside ``folder`` (a run continued where it was written)."""
    return bool(resume) and Path(resume).resolve().parent == Path(folder).resolve()


def check_checkpoint_folder(
    folder: str | os.PathLike,
    resume: str | os.PathLike | None,
    overwrite: bool,
    *,
    last_name: str = LAST_CHECKPOINT,
    flag: str = "--checkpoint-path",
) -> list[Path]:
    """Refuse a run that would silently replace another run's checkpoints; returns the checkpoint files
    already in ``folder`` (for the caller to remove when ``overwrite``).

    Passes when ``folder`` holds no checkpoint, when ``resume`` is a file in ``folder`` (continuing that
    run) or with ``overwrite``. Otherwise raises :class:`UsageError`, one line naming the folder, how
    far its run got and both ways on. Also :class:`common.io.OutputError` when ``folder`` is a file or
    cannot be written. Creates nothing.
    """
    folder = Path(folder)
    check_folder_writable(folder, flag)
    found = run_checkpoints(folder)
    if not found or overwrite:
        return found
    latest = _latest(found, last_name)
    progress = describe_progress(latest)
    if resume:
        if resumes_in(folder, resume):
            return found
        raise UsageError(
            f"{flag} {folder} already holds the checkpoints of another run ({progress}); resuming "
            f"{resume} there would replace them: choose an empty {flag}, or pass --overwrite to "
            "delete them"
        )
    raise UsageError(
        f"{flag} {folder} already holds the checkpoints of a run ({progress}); continue it with "
        f"--resume {latest}, or pass --overwrite to delete them and start again"
    )


def remove_previous_run(folder: str | os.PathLike, checkpoints: Sequence[Path]) -> list[Path]:
    """Delete ``checkpoints`` (what :func:`check_checkpoint_folder` found) and the TensorBoard event
    files in ``folder``, so that a run started with ``--overwrite`` leaves no file of the previous one
    to be mistaken for its own. Returns what was removed."""
    folder = Path(folder)
    events = [p for p in folder.glob(TENSORBOARD_PREFIX + "*") if p.is_file()] if folder.is_dir() else []
    return remove_files([*checkpoints, *events])
