"""The one converter driver: from the jobs a converter lists to committed split folders.

A converter (NTU, PKU-MMD, pyskl, CTR-GCN npz import) says only how to list and read its input: a
:class:`Plan` of jobs, each naming the (folder, part) its samples go to and how many it should give, and a
``work`` function from a job's payload to samples and skips (DataGenError for a bad job). The driver owns
the rest: part sizes and the refusal of an empty part, the worker pool, ``--skip-bad`` and
``skipped_samples.txt``, progress, the warnings about long and empty clips, the commit and the summary.
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from tqdm import tqdm

from common.constants import NUM_FRAMES, SAMPLE_SHAPE
from common.io import OutputError
from data_gen.parallel import imap_ordered
from data_gen.writer import SKIPPED_LIST, DataGenError, RunOutputs


class Sample(NamedTuple):
    """One prepared clip."""

    name: str
    label: int
    data: np.ndarray  # (3, T, 25, 2) float32
    num_frame: int  # the frames kept (at most T)
    frames: int  # the source's frame count: more than 300 is warned about


Skip = tuple  # (name, reason): left out and listed in skipped_samples.txt
Result = list[Union[Sample, Skip]]


@dataclass
class Job:
    key: str  # what skipped_samples.txt names when the whole job is bad
    parts: tuple[tuple[str, str], ...]  # the (folder, part) its samples go to
    size: int  # the samples it should give
    payload: Any  # what ``Plan.work`` gets (pickled to a worker process)


@dataclass
class Plan:
    """What a converter hands the driver."""

    out: Path
    tool: str
    arguments: dict[str, Any]  # what determines the contents, recorded in the manifests
    source: str  # what the samples come from, for messages
    parts: list[tuple[str, str]]  # every (folder, part) to write, in order
    jobs: list[Job]
    work: Callable[[Any], Result]  # a module-level function where workers > 1
    skipped: list[Skip] = field(default_factory=list)  # left out while listing (--skip-bad)
    files: dict[str, str | None] = field(default_factory=dict)  # beside the folders; None: removed
    long_verb: str = f"cut to their first {NUM_FRAMES}"
    row_shape: tuple[int, ...] = SAMPLE_SHAPE
    chunksize: int = 1
    window: int = 32  # jobs per worker in flight: bounds the memory of results not yet written


@dataclass
class Summary:
    """What a run wrote and left out."""

    out: Path
    written: dict[str, dict[str, int]] = field(default_factory=dict)  # folder -> part -> samples
    skipped: list[Skip] = field(default_factory=list)
    long: list[str] = field(default_factory=list)  # clips longer than 300 frames
    empty: list[str] = field(default_factory=list)  # clips without any body

    def lines(self, noun: str, skip_bad: bool) -> list[str]:
        """``OUT/xsub: train 40, val 20`` per folder, then the skipped count (with --skip-bad, or when any)."""
        lines = [f"{self.out / n}: " + ", ".join(f"{p} {c}" for p, c in ps.items()) for n, ps in self.written.items()]
        if self.skipped or skip_bad:
            listed = f", listed in {self.out / SKIPPED_LIST}" if self.skipped else ""
            lines.append(f"skipped {len(self.skipped)} {noun}{listed}")
        return lines


def preview(items: Sequence[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "")


def input_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file (a broken link, a folder, a FIFO...), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else "no such file"
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISREG(mode):
        return None
    return "a folder, not a file" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"


def check_input(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a readable regular file, else DataGenError: ``WHAT PATH: PROBLEM``."""
    if (problem := input_problem(Path(path))) is not None:
        raise DataGenError(f"{what} {path}: {problem}")
    return Path(path)


def refuse_or_skip(skip_bad: bool, skipped: list, key: str, message: str) -> None:
    """``message`` as a DataGenError or, with ``--skip-bad``, ``key`` listed as skipped for it."""
    if not skip_bad:
        raise DataGenError(message)
    skipped.append((key, message))


def _guarded(work: Callable[[Any], Result], payload: Any) -> tuple[bool, Result | str]:
    """A job in a worker: a bad one comes back as its message, so it never stops the pool."""
    try:
        return True, work(payload)
    except DataGenError as error:
        return False, str(error)


def check_out_folder(path: str | os.PathLike, flag: str = "--out-folder") -> Path:
    """At the start of a run: ``path`` can be (or become) a folder; OutputError otherwise, nothing created."""
    existing = next(p for p in (Path(path), *Path(path).parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder")
    return Path(path)


def run(plan: Plan, *, workers: int = 1, skip_bad: bool = False, progress: bool = True) -> Summary:
    """Write every part of ``plan`` (see the module docstring); nothing is replaced unless all succeed."""
    sizes = dict.fromkeys(plan.parts, 0)
    for key, size in ((key, job.size) for job in plan.jobs for key in job.parts):
        sizes[key] += size
    for folder, part in (key for key, size in sizes.items() if size == 0):
        why = "a part without samples cannot be trained or evaluated on"
        raise DataGenError(f"{plan.source}: no sample for {folder}/{part}; nothing was written ({why})")
    summary = Summary(plan.out, skipped=list(plan.skipped))
    with RunOutputs(plan.out, "data_gen", tool=plan.tool, arguments=plan.arguments) as out:
        for (folder, part), size in sizes.items():
            out.part(folder, part, size, plan.row_shape)
        first = _write(plan, out, summary, workers, skip_bad, progress)
        for folder, part in (key for key, writer in out.parts.items() if not writer.names):
            raise DataGenError(
                f"{plan.source}: every sample of {folder}/{part} was skipped as bad (first: {first[folder, part]}); "
                "nothing was written"
            )
        out.stage_file(SKIPPED_LIST, "".join(f"{n}\t{r}\n" for n, r in summary.skipped) or None)
        for name, text in plan.files.items():
            out.stage_file(name, text)
        summary.written = out.commit()
    long = (summary.long, f"clips longer than {NUM_FRAMES} frames were {plan.long_verb}")
    for names, what in (long, (summary.empty, "clips hold no body in any frame; stored as zeros")):
        if names:
            warnings.warn(f"{len(names)} {what}: {preview(names)}", stacklevel=2)
    return summary


def _write(plan: Plan, out: RunOutputs, summary: Summary, workers: int, skip_bad: bool, progress: bool) -> dict:
    """Run the jobs in order (in ``workers`` processes) and append each sample to its parts; the first
    reason a sample of each part was skipped for."""
    first: dict[tuple[str, str], str] = {}
    work, payloads = functools.partial(_guarded, plan.work), (job.payload for job in plan.jobs)
    results = imap_ordered(work, payloads, workers, chunksize=plan.chunksize, window=plan.window)
    desc, total = Path(plan.tool.split()[0]).stem, sum(job.size for job in plan.jobs)
    try:
        with tqdm(total=total, unit="clip", desc=desc, disable=not progress) as bar:
            for job, (ok, result) in zip(plan.jobs, results):
                if not ok and not skip_bad:
                    raise DataGenError(result)
                for item in result if ok else [(job.key, result)]:
                    if not isinstance(item, Sample):
                        summary.skipped.append(item)
                        first.update({key: item[1] for key in job.parts if key not in first})
                        continue
                    summary.long += [item.name] if item.frames > NUM_FRAMES else []
                    summary.empty += [] if item.data.any() else [item.name]
                    for key in job.parts:
                        out.parts[key].append(item.name, item.label, item.data, item.num_frame)
                bar.update(job.size)
    finally:
        results.close()  # stops the worker pool
    return first
