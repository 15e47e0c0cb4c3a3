#!/usr/bin/env python
"""Self-supervised pretraining: inter-skeleton contrast (two representations, the paper's method) or
intra-skeleton contrast (one representation, its baseline) with MoCo.

The paper's recipe (NTU 60 cross-view; see script_pretrain.sh for the others):

    python main_moco_inter_skeleton.py --lr 0.01 --batch-size 64 --mlp --moco-t 0.07 --moco-k 16384 \\
        --checkpoint-path ./checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based \\
        --schedule 351 --epochs 451 --pre-dataset ntu60 --protocol cross_view \\
        --skeleton-representation seq-based_and_graph-based

Devices: the CPU; one GPU; every visible GPU of one machine through nn.DataParallel (what a plain
``python`` launch does when several GPUs are visible, as the reference's scripts run it); or
``torchrun --nproc_per_node=N [--nnodes=M ...]`` (DistributedDataParallel, one process per GPU).
``--batch-size`` is always the total over all GPUs and processes.

Outputs in --checkpoint-path: ``checkpoint_{epoch:04d}.pth.tar`` when epoch % --save-freq == 0 and at the
last epoch (0-based, as the reference numbers them: 451 epochs end with checkpoint_0450),
``checkpoint_last.pth.tar`` after every epoch and on SIGINT/SIGTERM, TensorBoard scalars. One run owns
the folder at a time (a lock file), and a new run refuses a folder that holds another run's checkpoints
unless told ``--resume`` or ``--overwrite``.

Exit status: 0 trained (or the resumed run had already finished), 1 non-finite loss, 2 bad input
(flags, data, checkpoint, folder, full disk), 128 + N after signal N (SIGINT 130, SIGTERM 143).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import cli
from common.constants import REPRESENTATION_CHOICES
from common.distributed import all_reduce_, barrier, broadcast_int
from common.io import UsageError, atomic_copy, write_json_atomic
from common.representations import parse_representation
from engine.args import (
    WINDOW_SIZE,
    add_data_model_runtime_args,
    add_optim_args,
    check_window_size,
    encoder_kwargs,
    momentum_value,
    positive_float,
    positive_int,
)
from engine.checkpoints import (
    LAST_CHECKPOINT,
    PRETRAIN_FORMAT,
    read_resume_checkpoint,
    recorded_window_size,
    write_checkpoint,
)
from engine.launch import (
    DistContext,
    ResumableSampler,
    env_is_main_process,
    env_world_size,
    parallel_mode,
    process_context,
    rank0_printer,
    wrap_model,
)
from engine.run_folder import ClaimedFolder, run_folder
from engine.training import (
    AverageMeter,
    accuracy,
    args_to_dict,
    capture_rng_state,
    learning_rate_at,
    restore_rng_state,
    seed_everything,
    set_learning_rate,
    summary_writer,
)
from feeders import SPATIAL_AUGMENTS, CheckedLoader, DataFileError, PretrainDataset, check_split, split_paths
from moco import info_nce_labels
from moco.builder import MoCo, build_moco, checkpoint_state_dict, load_checkpoint_state_dict
from moco.step import contrastive_step

PROG = "main_moco_inter_skeleton.py"
# The reference's pretraining feeder: crops of 10-100% of the valid frames, resized to --window-size (64).
CROP_RATIO = (0.1, 1.0)
CHECKPOINT_FORMAT = PRETRAIN_FORMAT
LOCK_PURPOSE = "pretraining"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inter-skeleton (pair of representations) or intra-skeleton (one) MoCo pretraining.",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--skeleton-representation",
        required=True,
        choices=REPRESENTATION_CHOICES,
        help="a pair (inter-skeleton contrast; the first is encoder_q, the second encoder_r) or one "
        "representation (intra-skeleton contrast)",
    )
    run.add_argument(
        "--checkpoint-path",
        default="./checkpoints",
        help="folder for checkpoints and TensorBoard logs (default ./checkpoints)",
    )
    run.add_argument(
        "--resume",
        default="",
        metavar="PATH",
        help="continue exactly from a checkpoint of this script (e.g. checkpoint_last.pth.tar)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a --checkpoint-path that holds another run's checkpoints, deleting "
        "them and its TensorBoard logs (without it such a folder is refused; with --resume of a "
        "checkpoint in that folder nothing is deleted)",
    )
    run.add_argument(
        "--save-freq",
        type=positive_int,
        default=10,
        metavar="N",
        help="write checkpoint_{epoch:04d} when epoch %% N == 0 and at the last epoch (default 10)",
    )
    run.add_argument(
        "--metrics-json",
        default=None,
        metavar="PATH",
        help="write the final loss and accuracies, per-epoch history and arguments here",
    )

    add_optim_args(parser, epochs=200, batch_size=256, lr=0.001, schedule=[100, 160], weight_decay=1e-4, cos=True)

    moco = parser.add_argument_group("MoCo")
    moco.add_argument("--moco-dim", type=positive_int, default=128, help="feature dimension (default 128)")
    moco.add_argument(
        "--moco-k", type=positive_int, default=16384, help="queue size; number of negative keys (default 16384)"
    )
    moco.add_argument(
        "--moco-m", type=momentum_value, default=0.999, help="momentum of the key encoders, in [0, 1) (default 0.999)"
    )
    moco.add_argument("--moco-t", type=positive_float, default=0.07, help="softmax temperature (default 0.07)")
    moco.add_argument("--mlp", action="store_true", help="2-layer MLP projection head on every encoder")
    moco.add_argument(
        "--shuffle-bn",
        action="store_true",
        help="shuffle the key batch across GPUs/processes so BatchNorm cannot leak the positive "
        "(MoCo's shuffling BN; only matters with several GPUs)",
    )
    moco.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on the CPU)")
    moco.add_argument(
        "--spatial-augment",
        default="shear_or_corruption",
        choices=SPATIAL_AUGMENTS,
        help="what follows each view's crop-resize: the paper's shear or joint corruption "
        "(p = 0.5 each, the default), always one of them, or none (crop-resize only; "
        "the demo's choice for a few hundred steps on tiny data)",
    )

    add_data_model_runtime_args(
        parser,
        "--pre-dataset",
        print_freq=10,
        workers=32,
        workers_help="data loading workers, capped at the CPUs available to each process",
    )
    parser.set_defaults(protocol="cross_subject")  # the reference's pretraining default
    return parser


# ---------------------------------------------------------------------------------------------------
# Set-up: everything checked before a process group, a model or a file exists
# ---------------------------------------------------------------------------------------------------


class Plan(NamedTuple):
    """What the start-up checks found: the representations, the data split and the checkpoint to resume."""

    representations: tuple[str, ...]
    paths: Any
    checkpoint: dict[str, Any] | None

    @property
    def resumed_epoch(self) -> int | None:
        return None if self.checkpoint is None else int(self.checkpoint["epoch"])


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_arguments(args: argparse.Namespace, representations: tuple[str, ...], world_size: int) -> None:
    """Option combinations that cannot work (single values are checked by their argparse types)."""
    if args.batch_size % world_size:
        raise UsageError(f"--batch-size {args.batch_size} must be divisible by the {world_size} processes")
    if args.moco_k % args.batch_size:
        raise UsageError(
            f"--moco-k {args.moco_k} must be divisible by --batch-size {args.batch_size} "
            "(each step replaces one whole block of the queue)"
        )
    if not args.resume and args.start_epoch >= args.epochs:
        raise UsageError(f"--start-epoch {args.start_epoch} leaves nothing to train with --epochs {args.epochs}")
    check_window_size(args.window_size, representations)


def load_resume_checkpoint(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``--resume`` checkpoint, checked against the options of this run."""
    checkpoint = read_resume_checkpoint(path, PRETRAIN_FORMAT)
    saved = checkpoint.get("args", {}).get("skeleton_representation")
    if saved is not None and saved != args.skeleton_representation:
        raise UsageError(
            f"--resume {path} was pretrained as {saved!r}, "
            f"not --skeleton-representation {args.skeleton_representation!r}"
        )
    window = recorded_window_size(checkpoint)
    window = WINDOW_SIZE if window is None else window
    if window != args.window_size:
        raise UsageError(
            f"--resume {path} was pretrained with --window-size {window}, "
            f"not {args.window_size}: the views would change mid-run"
        )
    if int(checkpoint["epoch"]) > args.epochs:
        raise UsageError(
            f"--resume {path} has already trained {checkpoint['epoch']} epochs, more than --epochs {args.epochs}"
        )
    return checkpoint


def prepare(args: argparse.Namespace) -> Plan:
    """The start-up checks, cheapest first; UsageError on the first problem."""
    representations = parse_representation(args.skeleton_representation)
    check_arguments(args, representations, env_world_size())
    try:
        paths = split_paths(args.data_root, args.pre_dataset, args.protocol, "train")
        num_clips = check_split(paths, need_labels=False)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if num_clips < args.batch_size:
        raise UsageError(f"{paths.data} holds {num_clips} clips, fewer than one batch of {args.batch_size}")
    checkpoint = load_resume_checkpoint(args.resume, args) if args.resume else None
    return Plan(representations, paths, checkpoint)


def finished_message(args: argparse.Namespace, plan: Plan) -> str | None:
    """The line saying that the resumed run has nothing left to train, or None."""
    if plan.checkpoint is None or plan.resumed_epoch != args.epochs or int(plan.checkpoint.get("step", 0)):
        return None
    return (
        f"=> nothing to train: {args.resume} already completed --epochs {args.epochs} "
        "(pass a larger --epochs to train further)"
    )


# ---------------------------------------------------------------------------------------------------
# Stopping: signals and non-finite losses
# ---------------------------------------------------------------------------------------------------


class StopNow(BaseException):
    """A second SIGINT/SIGTERM: leave at once, without saving. A BaseException so that no ``except
    Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """SIGINT/SIGTERM set a flag; training stops at the next step boundary, saves checkpoint_last and
    exits with 128 + signal number. A second signal stops at once (no save), exiting 128 + its number."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            raise StopNow(signum)
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving {LAST_CHECKPOINT} at the next step boundary "
            "(send it again to quit without saving)",
            file=sys.stderr,
            flush=True,
        )


def _ignore_stop_signals_in_worker(worker_id: int) -> None:
    # Ctrl-C (and a batch system's SIGTERM) reach the whole process group; the workers must keep feeding
    # the main process until it has reached a step boundary and saved. They exit when it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class NonFiniteLoss(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------------


class Meters:
    """Epoch sums of the loss and each stream's contrast accuracy, kept on the device in float32 (every
    device has it; the host reads them only at print steps and at the end of the epoch)."""

    def __init__(self, streams: int) -> None:
        self.loss = AverageMeter("loss")
        self.acc = [AverageMeter(f"acc_s{i + 1}") for i in range(streams)]

    def update(self, loss: torch.Tensor, logits: Sequence[torch.Tensor]) -> None:
        n = logits[0].shape[0]
        self.loss.update(loss.float(), n)
        for meter, lg in zip(self.acc, logits):  # one logits tensor per stream
            meter.update(accuracy(lg, info_nce_labels(lg), topk=(1,))[0], n)

    def state(self) -> dict[str, Any]:
        """Sums and count as plain floats (a host sync): for checkpoints of an interrupted epoch."""

        def f(value: Any) -> float:
            return float(value.item() if isinstance(value, torch.Tensor) else value)

        return {"loss_sum": f(self.loss.sum), "acc_sums": [f(m.sum) for m in self.acc], "count": self.loss.count}

    def load_state(self, state: dict[str, Any]) -> None:
        self.loss.sum, self.loss.count = float(state["loss_sum"]), int(state["count"])
        for meter, value in zip(self.acc, state["acc_sums"]):
            meter.sum, meter.count = float(value), int(state["count"])

    def global_averages(self, device: torch.device) -> dict[str, float]:
        """Averages over all ranks (one small float32 all-reduce; the division happens on the host)."""

        def t(value: Any) -> torch.Tensor:
            return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(())

        totals = torch.stack([t(self.loss.sum)] + [t(m.sum) for m in self.acc] + [t(self.loss.count)])
        totals = all_reduce_(totals, "sum").tolist()
        count = max(totals[-1], 1.0)
        out = {"train_loss": totals[0] / count}
        for i, value in enumerate(totals[1:-1]):
            out[f"acc_s{i + 1}"] = value / count
        return out


def step_seed(data_seed: int, epoch: int, step: int) -> int:
    """A seed for the randomness of one step (shuffling BN), independent of where a run was resumed."""
    return int(np.random.SeedSequence((data_seed, epoch, step)).generate_state(1, np.uint64)[0] >> 1)


class EpochResult(NamedTuple):
    averages: dict[str, float]
    steps_done: int  # steps of this epoch completed, counting those before a resume
    stop: bool  # a signal asked to stop (agreed by all ranks); steps_done < steps_per_epoch if mid-epoch


def _agree_on_stop(ctx: DistContext, nonfinite: torch.Tensor, stop: StopRequest) -> tuple[bool, bool]:
    """(non-finite loss seen, stop requested), the same on every rank."""
    if not ctx.distributed:
        return bool(nonfinite), stop.signum is not None
    flags = torch.stack([nonfinite.to(torch.float32), torch.tensor(float(stop.signum is not None), device=ctx.device)])
    bad, stopping = (all_reduce_(flags, "max") > 0).tolist()
    return bad, stopping


def train_one_epoch(run: Run, epoch: int, *, start_step: int, meters: Meters, stop: StopRequest) -> EpochResult:
    """Train until the epoch ends or a stop is agreed on. The host waits for the device only every
    --print-freq steps, where it reads the loss, checks it is finite and (under torchrun) agrees with
    the other ranks on stopping."""
    args, ctx = run.args, run.ctx
    run.model.train()
    nonfinite = torch.zeros((), dtype=torch.bool, device=ctx.device)
    # In a log file (not a terminal) the bar redraws rarely, so logs stay readable.
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=start_step,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not ctx.is_main,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 60.0,
    )
    step, stopping = start_step, False
    try:
        for views in run.loader:
            views = [v.to(ctx.device, non_blocking=True) for v in views]
            out = contrastive_step(
                run.model,
                run.base,
                views,
                run.optimizer,
                rank=ctx.rank,
                world_size=ctx.world_size,
                shuffle_bn=args.shuffle_bn,
                shuffle_seed=step_seed(run.data_seed, epoch, step),
                autocast_dtype=run.autocast_dtype,
            )
            nonfinite |= ~torch.isfinite(out.loss)
            meters.update(out.loss, out.logits)
            step += 1
            bar.update(1)
            sync_point = (step - 1) % args.print_freq == 0 or step == run.steps_per_epoch
            # Ranks must stop at the same step, so under torchrun they agree only where they synchronise
            # anyway; one process also stops as soon as asked.
            if not (sync_point or (not ctx.distributed and stop.signum is not None)):
                continue
            bad, stopping = _agree_on_stop(ctx, nonfinite, stop)
            if bad:
                raise NonFiniteLoss(f"non-finite loss (nan or inf) at epoch {epoch}, step {step}")
            postfix = {"loss": f"{meters.loss.avg:.4f}"}
            postfix.update({m.name: f"{m.avg:.2f}" for m in meters.acc})
            bar.set_postfix(postfix, refresh=False)
            if stopping:
                break
    finally:
        bar.close()
    return EpochResult(meters.global_averages(ctx.device), step, stopping)


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def make_checkpoint(
    base: MoCo,
    optimizer: torch.optim.Optimizer,
    args: argparse.Namespace,
    *,
    epoch: int,
    step: int,
    data_seed: int,
    meters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything --resume needs, readable with ``torch.load(weights_only=True)``.

    epoch: the epoch to run next (the reference's epoch + 1 convention); step: how many steps of that
    epoch are already done (0 except after a signal).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "arch": args.skeleton_representation,
        "state_dict": checkpoint_state_dict(base),
        "optimizer": optimizer.state_dict(),
        "args": args_to_dict(args),
        "data_seed": int(data_seed),
        "world_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
        "rng": capture_rng_state(),
        "meters": meters or {},
    }


def numbered_name(epoch: int) -> str:
    """The reference's name for the checkpoint written after (0-based) ``epoch``."""
    return f"checkpoint_{epoch:04d}.pth.tar"


def save_checkpoint(state: dict[str, Any], folder: Path, numbered_epoch: int | None) -> Path:
    """Write checkpoint_last (and checkpoint_{numbered_epoch:04d}), each atomically; the numbered file
    is written once and hard-linked (or copied) to checkpoint_last. A full disk raises OutputError and
    leaves every earlier file as it was."""
    last = folder / LAST_CHECKPOINT
    if numbered_epoch is None:
        return write_checkpoint(state, last)
    numbered = write_checkpoint(state, folder / numbered_name(numbered_epoch))
    atomic_copy(numbered, last)
    return numbered


# ---------------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one training run works with, built by :func:`build_run`."""

    args: argparse.Namespace
    ctx: DistContext
    base: MoCo  # the model itself (checkpoints, queues)
    model: nn.Module  # what the step calls: ``base`` or its DataParallel / DDP wrapper
    optimizer: torch.optim.Optimizer
    dataset: PretrainDataset
    sampler: ResumableSampler
    loader: DataLoader
    local_batch: int
    steps_per_epoch: int
    data_seed: int
    autocast_dtype: torch.dtype | None
    start_epoch: int
    start_step: int
    meters_state: dict[str, Any]
    folder: Path

    @property
    def mode(self) -> str:
        return parallel_mode(self.model, self.ctx)


class Progress(NamedTuple):
    """Where a run starts: epoch, steps of it already done, and what an interrupted epoch needs."""

    epoch: int
    step: int
    layout: tuple[Any, Any]  # (batch size, process count) of the run that stopped mid-epoch
    meters_state: dict[str, Any]


def configure_numerics(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """Seeds, cuDNN's determinism and the autocast dtype (bf16 with --amp on CUDA)."""
    if args.seed is not None:
        seed_everything(args.seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if not args.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16
    warnings.warn("--amp applies to CUDA only; training in float32 on the CPU", stacklevel=2)
    return None


def choose_data_seed(args: argparse.Namespace, checkpoint: dict[str, Any] | None, device: torch.device) -> int:
    """Augmentations and sampling order are functions of (data_seed, epoch, index): a resumed run draws
    the same clips and crops as an uninterrupted one. Every rank gets rank 0's."""
    if checkpoint is not None and "data_seed" in checkpoint:
        data_seed = int(checkpoint["data_seed"])
    else:
        data_seed = args.seed if args.seed is not None else secrets.randbits(62)
    return broadcast_int(data_seed, device)


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[MoCo, torch.optim.Optimizer]:
    base = build_moco(
        args.skeleton_representation,
        dim=args.moco_dim,
        K=args.moco_k,
        m=args.moco_m,
        T=args.moco_t,
        mlp=args.mlp,
        **encoder_kwargs(args),
    ).to(device)
    # All parameters, in the reference's order, so optimizer states match its checkpoints; the key
    # encoders never get gradients, so SGD leaves them to the momentum update.
    optimizer = torch.optim.SGD(base.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return base, optimizer


def restore(
    base: MoCo, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any] | None, args: argparse.Namespace
) -> Progress:
    """Load a --resume checkpoint into the model, the optimizer and the RNGs; where to start."""
    if checkpoint is None:
        return Progress(args.start_epoch, 0, (None, None), {})
    try:
        load_checkpoint_state_dict(base, checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UsageError(
            f"--resume {args.resume} does not fit the model built from these options "
            f"(representation and encoder sizes must match): {str(exc).splitlines()[0]}"
        ) from None
    step = int(checkpoint.get("step", 0))
    layout = (checkpoint.get("args", {}).get("batch_size"), checkpoint.get("world_size", 1))
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"])
    return Progress(int(checkpoint["epoch"]), step, layout, checkpoint.get("meters", {}) if step else {})


def build_loader(
    args: argparse.Namespace, ctx: DistContext, plan: Plan, data_seed: int
) -> tuple[PretrainDataset, ResumableSampler, DataLoader]:
    dataset = PretrainDataset(
        plan.paths,
        plan.representations,
        l_ratio=CROP_RATIO,
        input_size=args.window_size,
        seed=data_seed,
        spatial_augment=args.spatial_augment,
    )
    sampler = ResumableSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=data_seed)
    # Processes on one machine share its CPUs (torchrun tells how many processes run here).
    per_process_cpus = max(1, _available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = min(args.workers, per_process_cpus)
    loader = CheckedLoader(
        dataset,
        batch_size=args.batch_size // ctx.world_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_stop_signals_in_worker if workers else None,
        # Its own generator for the workers' base seed: the global one then only serves the model
        # (dropout), whose state checkpoints carry, so resumed runs draw what uninterrupted ones do.
        generator=torch.Generator().manual_seed(data_seed),
    )
    return dataset, sampler, loader


def build_run(args: argparse.Namespace, ctx: DistContext, plan: Plan) -> Run:
    """Model, optimizer, restored state and data: everything training needs."""
    autocast_dtype = configure_numerics(args, ctx.device)
    data_seed = choose_data_seed(args, plan.checkpoint, ctx.device)
    base, optimizer = build_model(args, ctx.device)
    progress = restore(base, optimizer, plan.checkpoint, args)
    if plan.checkpoint is not None:
        plan.checkpoint.clear()  # its tensors now live in the model and optimizer; free the copy
    # Queues and BatchNorm statistics are not broadcast each step: queues are kept identical by
    # gathering keys, and only rank 0's statistics are ever saved.
    model = wrap_model(base, ctx, trainable=True, requested_device=args.device, broadcast_buffers=False)
    dataset, sampler, loader = build_loader(args, ctx, plan, data_seed)
    local_batch = args.batch_size // ctx.world_size
    steps_per_epoch = sampler.num_samples // local_batch
    if progress.step and not (progress.step < steps_per_epoch and progress.layout == (args.batch_size, ctx.world_size)):
        raise UsageError(
            f"--resume {args.resume} stopped at step {progress.step} of an epoch with batch size and "
            f"process count {progress.layout}; finishing that epoch needs the same --batch-size and "
            "number of processes"
        )
    return Run(
        args=args,
        ctx=ctx,
        base=base,
        model=model,
        optimizer=optimizer,
        dataset=dataset,
        sampler=sampler,
        loader=loader,
        local_batch=local_batch,
        steps_per_epoch=steps_per_epoch,
        data_seed=data_seed,
        autocast_dtype=autocast_dtype,
        start_epoch=progress.epoch,
        start_step=progress.step,
        meters_state=progress.meters_state,
        folder=Path(args.checkpoint_path),
    )


# ---------------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------------


class FitResult(NamedTuple):
    history: list[dict[str, Any]]
    status: str  # "completed" or "interrupted"
    signum: int | None  # the signal that stopped the run


def run_epoch(run: Run, epoch: int, stop: StopRequest, writer: Any) -> tuple[dict[str, Any] | None, bool]:
    """Train one epoch and save its checkpoints. Returns (the epoch's record, or None when a signal
    stopped it part-way; whether to stop now)."""
    args, ctx = run.args, run.ctx
    lr = learning_rate_at(epoch, args.lr, args.epochs, args.schedule, args.cos)
    set_learning_rate(run.optimizer, lr)
    first = run.start_step if epoch == run.start_epoch else 0
    run.sampler.set_epoch(epoch, start=first * run.local_batch)
    run.dataset.set_epoch(epoch)
    meters = Meters(run.base.num_streams)
    if first and run.meters_state:
        meters.load_state(run.meters_state)
    t0 = time.time()
    result = train_one_epoch(run, epoch, start_step=first, meters=meters, stop=stop)
    if result.stop and result.steps_done < run.steps_per_epoch:
        if ctx.is_main:
            state = make_checkpoint(
                run.base,
                run.optimizer,
                args,
                epoch=epoch,
                step=result.steps_done,
                data_seed=run.data_seed,
                meters=meters.state(),
            )
            path = save_checkpoint(state, run.folder, None)
            print(
                f"=> stopped at epoch {epoch}, step {result.steps_done}/{run.steps_per_epoch}; "
                f"saved {path}; continue with --resume {path}",
                flush=True,
            )
        return None, True
    record = {"epoch": epoch, "lr": lr, **result.averages, "seconds": time.time() - t0}
    if ctx.is_main:
        numbered = epoch % args.save_freq == 0 or epoch == args.epochs - 1
        state = make_checkpoint(run.base, run.optimizer, args, epoch=epoch + 1, step=0, data_seed=run.data_seed)
        save_checkpoint(state, run.folder, epoch if numbered else None)
        _log_epoch(writer, {**record, "numbered": numbered}, args, run.steps_per_epoch - first, run.base.num_streams)
    return record, result.stop  # a signal during the epoch's last step: saved above


def fit(run: Run) -> FitResult:
    """Train from where the run starts to --epochs, or until a signal; a second signal raises StopNow."""
    history: list[dict[str, Any]] = []
    stop = StopRequest()
    writer = summary_writer(run.folder if run.ctx.is_main else None)
    try:
        with stop:
            for epoch in range(run.start_epoch, run.args.epochs):
                record, stopping = run_epoch(run, epoch, stop, writer)
                if record is not None:
                    history.append(record)
                if stopping:
                    return FitResult(history, "interrupted", stop.signum)
    finally:
        if writer is not None:
            writer.close()
    return FitResult(history, "completed", None)


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def run_metrics(
    args: argparse.Namespace,
    result: FitResult,
    *,
    start_epoch: int,
    steps_per_epoch: int,
    world_size: int,
    device: str,
    mode: str,
    data_seed: int,
    wall_seconds: float,
) -> dict[str, Any]:
    """What --metrics-json receives: status, the last epoch's loss and accuracies, the history."""
    history = result.history
    final = history[-1] if history else {}
    return {
        "status": result.status,
        "skeleton_representation": args.skeleton_representation,
        "final": {k: final[k] for k in final if k == "train_loss" or k.startswith("acc_s")},
        "epochs_completed": history[-1]["epoch"] + 1 if history else start_epoch,
        "history": history,
        "steps_per_epoch": steps_per_epoch,
        "world_size": world_size,
        "device": device,
        "mode": mode,
        "data_seed": data_seed,
        "wall_seconds": wall_seconds,
        "args": args_to_dict(args),
    }


def report(run: Run, result: FitResult, started: float) -> int:
    """Write --metrics-json (rank 0) and return the exit status: 0, or 128 + N after signal N."""
    barrier()
    if run.ctx.is_main and run.args.metrics_json:
        write_json_atomic(
            run.args.metrics_json,
            run_metrics(
                run.args,
                result,
                start_epoch=run.start_epoch,
                steps_per_epoch=run.steps_per_epoch,
                world_size=run.ctx.world_size,
                device=str(run.ctx.device),
                mode=run.mode,
                data_seed=run.data_seed,
                wall_seconds=time.time() - started,
            ),
        )
    if result.status == "interrupted" and result.signum is not None:
        return 128 + int(result.signum)
    return 0


def _log_epoch(writer: Any, record: dict[str, Any], args: argparse.Namespace, steps: int, streams: int) -> None:
    epoch = record["epoch"]
    if writer is not None:
        writer.add_scalar("train_loss", record["train_loss"], global_step=epoch)
        for i in range(streams):
            writer.add_scalar(f"acc_s{i + 1}", record[f"acc_s{i + 1}"], global_step=epoch)
        if streams == 1:
            writer.add_scalar("acc", record["acc_s1"], global_step=epoch)  # the reference's intra name
        writer.add_scalar("lr", record["lr"], global_step=epoch)
        writer.flush()
    accs = "  ".join(f"acc_s{i + 1} {record[f'acc_s{i + 1}']:6.2f}" for i in range(streams))
    per_step = record["seconds"] / max(steps, 1)
    saved = f"  -> {numbered_name(epoch)}" if record.get("numbered") else ""
    print(
        f"epoch {epoch:4d} ({epoch + 1}/{args.epochs})  loss {record['train_loss']:.4f}  {accs}  "
        f"lr {record['lr']:.3g}  {record['seconds']:.1f}s ({per_step * 1e3:.0f} ms/step, "
        f"{args.batch_size / per_step:.0f} clips/s){saved}",
        flush=True,
    )


def _announce(run: Run) -> None:
    if not run.ctx.is_main:
        return
    params = sum(p.numel() for p in run.base.parameters() if p.requires_grad)
    resuming = f" (resuming at step {run.start_step})" if run.start_step else ""
    print(
        f"=> {run.args.skeleton_representation} MoCo ({params / 1e6:.2f}M trainable parameters) on "
        f"{run.ctx.device}, {run.mode}; {len(run.dataset)} clips, {run.steps_per_epoch} steps of "
        f"{run.args.batch_size} per epoch; epochs {run.start_epoch}..{run.args.epochs - 1}{resuming}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def _last_good(args: argparse.Namespace) -> str:
    last = Path(args.checkpoint_path) / LAST_CHECKPOINT
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"


def train_in(claim: ClaimedFolder, args: argparse.Namespace, ctx: DistContext, plan: Plan) -> int:
    """Build, fit and report in the claimed folder; the earlier run's files that --overwrite replaces go
    only once the new run has been built, so a run that cannot start deletes nothing."""
    started = time.time()
    say = rank0_printer(ctx)
    for line in claim.notes:
        say(line)
    run = build_run(args, ctx, plan)
    for line in claim.discard_previous_run():
        say(line)
    _announce(run)
    return report(run, fit(run), started)


def train(args: argparse.Namespace, ctx: DistContext, plan: Plan) -> int:
    """Claim the folder, then train in it; every way out becomes an exit status."""
    try:
        with run_folder(
            ctx, args.checkpoint_path, purpose=LOCK_PURPOSE, resume=args.resume, overwrite=args.overwrite
        ) as claim:
            return train_in(claim, args, ctx, plan)
    except (UsageError, DataFileError) as exc:  # DataFileError: a data file cut short while training read it
        return cli.error(PROG, exc)
    except NonFiniteLoss as exc:
        return cli.error(
            PROG, f"{exc}; stopped without saving ({_last_good(args)}). Try a lower --lr, or run without --amp.", code=1
        )
    except StopNow as exc:
        name = signal.Signals(exc.signum).name
        return cli.error(
            PROG, f"second {name}: stopped at once without saving ({_last_good(args)})", code=128 + exc.signum
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Pretrain; returns the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else cli.INPUT_ERROR
    try:
        plan = prepare(args)
    except UsageError as exc:
        return cli.error(PROG, exc)
    finished = finished_message(args, plan)
    if finished is not None:
        if env_is_main_process():
            print(finished, flush=True)
        return 0
    try:
        with process_context(args.device) as ctx:
            return train(args, ctx, plan)
    except UsageError as exc:  # the device (train reports its own errors)
        return cli.error(PROG, exc)


if __name__ == "__main__":
    sys.exit(main())
