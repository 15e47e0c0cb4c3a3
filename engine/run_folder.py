"""The checkpoint folder of a training run (pretraining, classification): one run at a time, no silent
replacement, no leftovers.

The folder is locked (:class:`common.locking.FolderLock`: a second live run is refused, naming its PID);
a checkpoint of another kind of run is refused, and so are an earlier run's checkpoints unless
``--resume`` continues them or ``--overwrite`` replaces them; ``--overwrite`` deletes only this kind's
checkpoints and the TensorBoard events, never a file another flag reads; temporaries of killed writers
are removed. Nothing here prints: what was tidied comes back as lines (:attr:`ClaimedFolder.notes`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.distributed import broadcast_int
from common.io import OutputError, UsageError, check_output_folder, clean_stale_temporaries, ensure_folder, remove_files
from common.locking import FolderLock, LockHeld
from engine.args import differing_flags, flag
from engine.checkpoints import LAST_NAMES, CheckpointError, read_checkpoint, recorded
from engine.launch import DistContext

FLAG = "--checkpoint-path"
# The checkpoints each kind of run writes: pretraining's, and classification's (the best classifier
# ``<representation>_checkpoint.pth.tar`` and ``last_checkpoint.pth.tar``).
PRETRAIN_FILES = re.compile(r"checkpoint_(last|\d+)\.pth\.tar")
CLASSIFIER_FILES = re.compile(r"(last|[a-z]+-based)_checkpoint\.pth\.tar")


def describe_progress(path: Path) -> tuple[str, Mapping[str, Any]]:
    """(``checkpoint_last.pth.tar: 4 of 10 epochs done``, the run's configuration: a classifier's recorded
    ``config``, else its recorded ``args`` as flags), read cheaply (tensors memory-mapped)."""
    try:
        checkpoint = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return f"{path.name}: unreadable", {}
    args, epoch = recorded(checkpoint), checkpoint.get("epoch")
    config, total = recorded(checkpoint, "config") or {flag(k): v for k, v in args.items()}, args.get("epochs")
    if not isinstance(epoch, int):
        return f"{path.name}: no epoch recorded", config
    done = f"{epoch} of {total} epochs done" if isinstance(total, int) else f"{epoch} epochs done"
    return f"{path.name}: {done}", config


def resumes_in(folder: str | os.PathLike, resume: str | os.PathLike | None) -> bool:
    """Whether ``resume`` names a checkpoint inside ``folder`` (a run continued where it was written)."""
    return bool(resume) and Path(resume).resolve().parent == Path(folder).resolve()


def check_checkpoint_folder(
    folder: str | os.PathLike,
    resume: str | os.PathLike | None,
    overwrite: bool,
    *,
    own: re.Pattern = PRETRAIN_FILES,
    keep: Sequence[str | os.PathLike] = (),
    config: Mapping[str, Any] | None = None,
) -> list[Path]:
    """UsageError for a run that would replace another run's checkpoints silently, or delete a file of
    ``keep`` (those other flags read) with ``overwrite``; else the checkpoints of this kind (``own``) in
    ``folder`` that ``overwrite`` replaces, oldest first (none when the run continues there). The refusal
    of a used folder suggests ``--resume`` only where the run's recorded ``config`` (flag -> value) agrees
    with ``config``. Creates nothing."""
    folder = Path(folder)
    check_output_folder(folder, FLAG)
    found = [p for p in folder.glob("*.pth.tar") if not p.name.startswith(".") and p.is_file()]
    found.sort(key=lambda p: (p.stat().st_mtime, p.name))
    foreign = [p for p in found if not own.fullmatch(p.name)]
    if foreign:
        raise UsageError(
            f"{FLAG} {folder} holds {foreign[0].name}, which this command does not write (another kind of "
            f"run's checkpoint, or an input): choose another {FLAG}"
        )
    continuing = resumes_in(folder, resume)
    kept = [p for p in found for k in keep if k and Path(k).exists() and os.path.samefile(p, k)]
    if overwrite and kept and not continuing:
        raise UsageError(f"--overwrite would delete {kept[0]}, which this run reads: choose another {FLAG}")
    if not found or overwrite or continuing:
        return found if overwrite and not continuing else []
    latest = next((p for p in found if p.name in LAST_NAMES), found[-1])
    progress, recorded = describe_progress(latest)
    differing = differing_flags(recorded, config or {})
    if not resume and not differing:
        raise UsageError(
            f"{FLAG} {folder} already holds the checkpoints of a run ({progress}); continue it with "
            f"--resume {latest}, or pass --overwrite to delete them and start again"
        )
    other = f"a run of other {', '.join(differing)}" if differing else "another run"
    raise UsageError(
        f"{FLAG} {folder} already holds the checkpoints of {other} ({progress}): choose another {FLAG}, "
        "or pass --overwrite to delete them"
    )


@dataclass
class ClaimedFolder:
    """A checkpoint folder held for one run (on ranks other than 0: a stand-in that holds nothing)."""

    folder: Path
    lock: FolderLock | None = None
    created: bool = False  # by this claim: removed again when the run leaves it empty
    replaced: list[Path] = field(default_factory=list)  # the earlier run's checkpoints --overwrite deletes
    notes: list[str] = field(default_factory=list)  # what the claim tidied, one line each

    def discard_previous_run(self) -> list[str]:
        """``--overwrite``: delete the earlier run's checkpoints and TensorBoard events. Call it once the
        new run has been built, so that a run that cannot start deletes nothing. Returns a line to show
        (none when there was nothing to delete)."""
        if not self.replaced:
            return []
        events = [p for p in self.folder.glob("events.out.tfevents.*") if p.is_file()]
        removed, self.replaced = remove_files([*self.replaced, *events]), []
        return [
            f"=> --overwrite: removed {len(removed)} checkpoint and TensorBoard files of the previous run in "
            + str(self.folder)
        ]

    def release(self) -> None:
        """Drop the lock; a folder this claim created and the run left empty goes too."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.created:
            with contextlib.suppress(OSError):  # not empty (the run wrote there): it stays
                self.folder.rmdir()


def claim_folder(folder: str | os.PathLike, *, purpose: str, **rules: Any) -> ClaimedFolder:
    """Create and lock ``folder`` (``purpose`` recorded in the lock file and named to a second run), apply
    :func:`check_checkpoint_folder`'s ``rules``, tidy what a killed run left. UsageError leaves the folder
    as it was."""
    folder = Path(folder)
    check_output_folder(folder, FLAG)
    claim = ClaimedFolder(folder, created=not folder.exists())
    ensure_folder(folder, FLAG)
    try:
        try:
            claim.lock = FolderLock(folder, purpose).__enter__()
        except LockHeld as exc:
            raise UsageError(f"{FLAG} {exc}") from None
        except OSError as exc:
            raise OutputError(f"{FLAG} {folder}: cannot create its lock file: {exc.strerror}") from None
        claim.replaced = check_checkpoint_folder(folder, **rules)
    except UsageError:
        claim.release()
        raise
    if claim.lock.stale_holder is not None:
        claim.notes.append(
            f"=> {folder}: took over the lock of PID {claim.lock.stale_holder}, which is no longer running"
        )
    for path in clean_stale_temporaries(folder):
        claim.notes.append(f"=> removed {path}, a temporary file left by an interrupted run")
    return claim


@contextlib.contextmanager
def run_folder(ctx: DistContext, folder: str | os.PathLike, *, purpose: str, **rules: Any) -> Iterator[ClaimedFolder]:
    """Rank 0 claims ``folder`` (:func:`claim_folder`) for the duration of the block; the other ranks learn
    whether it could and raise with it when it could not (every rank must enter). They get a stand-in
    claim that holds and replaces nothing."""
    claim, error = ClaimedFolder(Path(folder)), None
    if ctx.is_main:
        try:
            claim = claim_folder(folder, purpose=purpose, **rules)
        except UsageError as exc:
            error = exc
    if broadcast_int(error is not None, ctx.device):
        raise error if error is not None else UsageError(f"rank 0 could not claim {FLAG} {folder}")
    try:
        yield claim
    finally:
        claim.release()
