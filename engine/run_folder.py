"""The checkpoint folder of a training run: one run at a time, no silent replacement, no leftovers.

:func:`claim_folder` creates ``--checkpoint-path`` if needed, locks it (:class:`common.locking.FolderLock`:
a second live run is refused, naming its PID), refuses a folder that holds another run's checkpoints
unless told ``--resume`` or ``--overwrite`` (:func:`engine.checkpoints.check_checkpoint_folder`) and
removes the temporary files a killed run left (:func:`common.io.clean_stale_temporaries`).
:func:`run_folder` does that on rank 0 for the length of a run and tells the other ranks whether it
could. Pretraining and classification both train through it.

Nothing here prints: what was tidied comes back as lines (:attr:`ClaimedFolder.notes`) for the script to
show.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.distributed import broadcast_int
from common.io import OutputError, UsageError, clean_stale_temporaries, ensure_folder
from common.locking import FolderLock, LockHeld
from engine.checkpoints import (
    LAST_CHECKPOINT,
    check_checkpoint_folder,
    check_folder_writable,
    remove_previous_run,
    resumes_in,
)
from engine.launch import DistContext

FLAG = "--checkpoint-path"


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
        removed = remove_previous_run(self.folder, self.replaced)
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


def _lock(folder: Path, purpose: str) -> FolderLock:
    lock = FolderLock(folder, purpose)
    try:
        lock.__enter__()
    except LockHeld as exc:
        raise UsageError(f"{FLAG} {exc}") from None
    except OSError as exc:
        raise OutputError(f"{FLAG} {folder}: cannot create its lock file: {exc.strerror}") from None
    return lock


def _tidy(claim: ClaimedFolder) -> None:
    """Note a lock taken over from a dead run and remove that run's temporary files."""
    stale = claim.lock.stale_holder if claim.lock is not None else None
    if stale is not None:
        claim.notes.append(f"=> {claim.folder}: took over the lock of PID {stale}, which is no longer running")
    for path in clean_stale_temporaries(claim.folder):
        claim.notes.append(f"=> removed {path}, a temporary file left by an interrupted run")


def claim_folder(
    folder: str | os.PathLike,
    *,
    purpose: str,
    resume: str | os.PathLike | None,
    overwrite: bool,
    last_name: str = LAST_CHECKPOINT,
) -> ClaimedFolder:
    """Create and lock ``folder``, refuse another run's checkpoints, tidy what a killed run left.

    ``purpose`` is recorded in the lock file (and named to a second run); ``last_name`` is the file the
    script keeps its latest state in (for the refusal's hint). The claim's ``replaced`` files are the
    earlier run's checkpoints when ``overwrite`` starts afresh (none when ``resume`` continues a
    checkpoint of this folder). Raises :class:`common.io.UsageError` (or its ``OutputError``), leaving
    the folder as it was.
    """
    folder = Path(folder)
    check_folder_writable(folder, FLAG)
    claim = ClaimedFolder(folder, created=not folder.exists())
    ensure_folder(folder, FLAG)
    try:
        claim.lock = _lock(folder, purpose)
        previous = check_checkpoint_folder(folder, resume or None, overwrite, last_name=last_name, flag=FLAG)
    except UsageError:
        claim.release()
        raise
    _tidy(claim)
    resuming_here = resumes_in(folder, resume)
    claim.replaced = previous if overwrite and not resuming_here else []
    return claim


@contextlib.contextmanager
def run_folder(
    ctx: DistContext,
    folder: str | os.PathLike,
    *,
    purpose: str,
    resume: str | os.PathLike | None,
    overwrite: bool,
    last_name: str = LAST_CHECKPOINT,
) -> Iterator[ClaimedFolder]:
    """Rank 0 claims ``folder`` (:func:`claim_folder`) for the duration of the block; the other ranks
    learn whether it could and raise with it when it could not (every rank must enter). They get a
    stand-in claim that holds and replaces nothing."""
    claim, error = ClaimedFolder(Path(folder)), None
    if ctx.is_main:
        try:
            claim = claim_folder(folder, purpose=purpose, resume=resume, overwrite=overwrite, last_name=last_name)
        except UsageError as exc:
            error = exc
    if broadcast_int(error is not None, ctx.device):
        raise error if error is not None else UsageError(f"rank 0 could not claim {FLAG} {folder}")
    try:
        yield claim
    finally:
        claim.release()
