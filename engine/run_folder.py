"""The checkpoint folder of a training run: one run at a time, no silent replacement, no leftovers.

:func:`claim_folder` creates ``--checkpoint-path`` if needed, locks it (:class:`common.locking.FolderLock`:
a second live run is refused, naming its PID), refuses a folder that holds files another kind of run
wrote, or checkpoints of an earlier run unless told ``--resume`` or ``--overwrite``, and removes the
temporary files a killed run left (:func:`common.io.clean_stale_temporaries`). ``--overwrite`` deletes
only the command's own kind of files (``own``) and their TensorBoard events, never a file another flag
reads (``keep``). :func:`run_folder` does that on rank 0 for the length of a run and tells the other
ranks whether it could. Pretraining and classification both train through it.

Nothing here prints: what was tidied comes back as lines (:attr:`ClaimedFolder.notes`) for the script to
show.
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
from common.io import OutputError, UsageError, clean_stale_temporaries, ensure_folder, remove_files
from common.locking import FolderLock, LockHeld
from engine.checkpoints import LAST_CHECKPOINT, CheckpointError, differing_flags, read_checkpoint
from engine.launch import DistContext

FLAG = "--checkpoint-path"
CHECKPOINT_SUFFIX = ".pth.tar"
TENSORBOARD_PREFIX = "events.out.tfevents."
# The checkpoints each kind of run writes: pretraining's, and classification's (the best classifier
# ``<representation>_checkpoint.pth.tar`` and ``last_checkpoint.pth.tar``).
PRETRAIN_FILES = re.compile(r"checkpoint_(last|\d+)\.pth\.tar")
CLASSIFIER_FILES = re.compile(r"(last|[a-z]+-based)_checkpoint\.pth\.tar")


def check_folder_writable(folder: str | os.PathLike, flag: str = FLAG) -> None:
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


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint files (``*.pth.tar``, temporaries excluded) directly in ``folder``, oldest first."""
    found = [p for p in folder.glob("*" + CHECKPOINT_SUFFIX) if not p.name.startswith(".") and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def describe_progress(path: Path) -> tuple[str, Mapping[str, Any]]:
    """(``checkpoint_last.pth.tar: 4 of 10 epochs done``, what the run recorded of its flags), read
    cheaply (tensors memory-mapped); ``...: unreadable`` when it cannot be read."""
    try:
        checkpoint = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return f"{path.name}: unreadable", {}
    epoch, step, args = checkpoint.get("epoch"), checkpoint.get("step", 0), checkpoint.get("args")
    total = args.get("epochs") if isinstance(args, Mapping) else None
    config = checkpoint.get("config")
    config = config if isinstance(config, Mapping) else {}
    if not isinstance(epoch, int):
        return f"{path.name}: no epoch recorded", config
    done = f"{epoch} of {total} epochs done" if isinstance(total, int) else f"{epoch} epochs done"
    if isinstance(step, int) and step > 0:
        return f"{path.name}: stopped in epoch {epoch} at step {step}, {done}", config
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
    last_name: str = LAST_CHECKPOINT,
) -> list[Path]:
    """Refuse a run that would silently replace another run's checkpoints; returns this kind's
    checkpoint files already in ``folder`` (for the caller to remove when ``overwrite``).

    Refused always: a checkpoint this kind of run does not write (``own``), and, with ``overwrite``, a
    file among ``keep`` (the files other flags read). Passes when ``folder`` holds none of this kind's
    checkpoints, when ``resume`` is a file in ``folder`` or with ``overwrite``. A refusal suggests
    ``--resume`` only where the run's recorded ``config`` (flag -> value) agrees with ``config``.
    Also :class:`common.io.OutputError` when ``folder`` cannot be written. Creates nothing.
    """
    folder = Path(folder)
    check_folder_writable(folder)
    found = run_checkpoints(folder) if folder.is_dir() else []
    foreign = [p for p in found if not own.fullmatch(p.name)]
    if foreign:
        raise UsageError(
            f"{FLAG} {folder} holds {foreign[0].name}, which this command does not write (another kind of "
            f"run's checkpoint, or an input): choose another {FLAG}"
        )
    kept = [p for p in found for k in keep if k and Path(k).exists() and os.path.samefile(p, k)]
    if overwrite and kept and not resumes_in(folder, resume):
        raise UsageError(f"--overwrite would delete {kept[0]}, which this run reads: choose another {FLAG}")
    if not found or overwrite or resumes_in(folder, resume):
        return found
    latest = next((p for p in found if p.name == last_name), found[-1])
    progress, recorded = describe_progress(latest)
    differing = differing_flags(recorded, config or {})
    if resume or differing:
        other = f"a run of other {', '.join(differing)}" if differing else "another run"
        raise UsageError(
            f"{FLAG} {folder} already holds the checkpoints of {other} ({progress}): choose another {FLAG}, "
            "or pass --overwrite to delete them"
        )
    raise UsageError(
        f"{FLAG} {folder} already holds the checkpoints of a run ({progress}); continue it with "
        f"--resume {latest}, or pass --overwrite to delete them and start again"
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
        events = [p for p in self.folder.glob(TENSORBOARD_PREFIX + "*") if p.is_file()]
        removed = remove_files([*self.replaced, *events])
        self.replaced = []
        return [
            f"=> --overwrite: removed {len(removed)} checkpoint and TensorBoard files of the previous run in "
            f"{self.folder}"
        ]

    def release(self) -> None:
        """Drop the lock; a folder this claim created and the run left empty goes too."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.created:
            with contextlib.suppress(OSError):  # not empty (the run wrote there): it stays
                self.folder.rmdir()


def _lock(claim: ClaimedFolder, purpose: str) -> None:
    """Take the folder's lock; note a lock taken over from a dead run and remove that run's temporaries."""
    lock = FolderLock(claim.folder, purpose)
    try:
        lock.__enter__()
    except LockHeld as exc:
        raise UsageError(f"{FLAG} {exc}") from None
    except OSError as exc:
        raise OutputError(f"{FLAG} {claim.folder}: cannot create its lock file: {exc.strerror}") from None
    claim.lock = lock
    if lock.stale_holder is not None:
        claim.notes.append(
            f"=> {claim.folder}: took over the lock of PID {lock.stale_holder}, which is no longer running"
        )


def claim_folder(folder: str | os.PathLike, *, purpose: str, **rules: Any) -> ClaimedFolder:
    """Create and lock ``folder``, apply :func:`check_checkpoint_folder`'s ``rules`` (``resume``,
    ``overwrite``, ``own``, ``keep``, ``config``, ``last_name``), tidy what a killed run left.

    ``purpose`` is recorded in the lock file (and named to a second run). The claim's ``replaced`` files
    are the earlier run's checkpoints when ``overwrite`` starts afresh (none when ``resume`` continues a
    checkpoint of this folder). Raises :class:`common.io.UsageError`, leaving the folder as it was.
    """
    folder = Path(folder)
    check_folder_writable(folder)
    claim = ClaimedFolder(folder, created=not folder.exists())
    ensure_folder(folder, FLAG)
    try:
        _lock(claim, purpose)
        previous = check_checkpoint_folder(folder, **rules)
    except UsageError:
        claim.release()
        raise
    for path in clean_stale_temporaries(folder):
        claim.notes.append(f"=> removed {path}, a temporary file left by an interrupted run")
    claim.replaced = previous if rules.get("overwrite") and not resumes_in(folder, rules.get("resume")) else []
    return claim


@contextlib.contextmanager
def run_folder(ctx: DistContext, folder: str | os.PathLike, *, purpose: str, **rules: Any) -> Iterator[ClaimedFolder]:
    """Rank 0 claims ``folder`` (:func:`claim_folder`, with its ``rules``) for the duration of the block;
    the other ranks learn whether it could and raise with it when it could not (every rank must enter).
    They get a stand-in claim that holds and replaces nothing."""
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
