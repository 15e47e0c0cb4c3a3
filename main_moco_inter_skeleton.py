#!/usr/bin/env python
"""Self-supervised pretraining with MoCo: inter-skeleton contrast (two representations, the paper's method)
or intra-skeleton contrast (one, its baseline). The recipes are script_pretrain.sh; docs/training.md tells
the rest.

In phases: parser, set-up (every check that needs no model), data, model, restore, fit, report; the method
is ``moco`` (``build_moco``, ``contrastive_step``). A checkpoint ends every epoch: a run stopped in any way
continues from its last completed epoch with ``--resume``, exactly as if it had never stopped.
Exit status: 0 trained (or nothing left to train), 1 non-finite loss, 2 bad input, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from common import cli
from common.constants import WINDOW_SIZE
from common.distributed import all_reduce_, broadcast_int
from common.io import UsageError, atomic_copy, check_output_file, write_json_atomic
from common.split_folder import SplitPaths, check_split
from engine import args as flags
from engine import checkpoints, training
from engine.checkpoints import LAST_CHECKPOINT, PRETRAIN_FORMAT, model_state, read_resume_checkpoint, write_checkpoint
from engine.launch import DistContext, batch_world_size, parallel_mode, process_context, rank0_printer, wrap_model
from engine.provenance import provenance
from engine.run_folder import run_folder
from feeders.augmentations import PRETRAIN_CROP_RATIO, SPATIAL_AUGMENTS
from feeders.datasets import CheckedLoader, PretrainDataset, split_paths
from moco.builder import build_moco, checkpoint_state_dict
from moco.functional import info_nce_labels
from moco.step import contrastive_step
from models import ENCODERS, REPRESENTATIONS, parse_representation

PROG = "main_moco_inter_skeleton.py"
# What shapes the model or the views: a run continues only with the values its checkpoint records.
MUST_MATCH = ["skeleton_representation", *flags.SIZE_FLAGS, "window_size", "moco_dim", "moco_k", "mlp"]


# -- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Inter- or intra-skeleton MoCo pretraining.")
    run = parser.add_argument_group("run")
    pairs = "a pair (inter-skeleton: encoder_q's, then encoder_r's) or one representation (intra-skeleton)"
    run.add_argument("--skeleton-representation", required=True, choices=REPRESENTATIONS, help=pairs)
    default = "./checkpoints/DATASET_PROTOCOL/REPRESENTATION"
    run.add_argument("--checkpoint-path", metavar="DIR", help=f"checkpoints and TensorBoard logs (default {default})")
    run.add_argument("--resume", default="", metavar="PATH", help="continue from a checkpoint of this script")
    run.add_argument("--overwrite", action="store_true", help="start afresh in a folder holding another run's files")
    keep = "also keep checkpoint_{epoch:04d} when epoch %% N == 0 and at the last epoch (default 10)"
    run.add_argument("--save-freq", type=flags.positive_int, default=10, metavar="N", help=keep)
    run.add_argument("--metrics-json", metavar="PATH", help="write status, losses, history and provenance here")
    flags.add_optim_args(parser, epochs=200, batch_size=256, lr=0.001, schedule=[100, 160], weight_decay=1e-4, cos=True)
    moco = parser.add_argument_group("MoCo")
    moco.add_argument("--moco-dim", type=flags.positive_int, default=128, help="feature dimension (default 128)")
    moco.add_argument("--moco-k", type=flags.positive_int, default=16384, help="queue length (default 16384)")
    moco.add_argument("--moco-m", type=flags.momentum_value, default=0.999, help="key encoder momentum (default 0.999)")
    moco.add_argument("--moco-t", type=flags.positive_float, default=0.07, help="softmax temperature (default 0.07)")
    moco.add_argument("--mlp", action="store_true", help="2-layer MLP projection head on every encoder")
    moco.add_argument("--shuffle-bn", action="store_true", help="shuffle the key batch across GPUs (shuffling BN)")
    moco.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on the CPU)")
    augment = "after each view's crop-resize: shear or joint corruption (p = 0.5 each, the paper's), one of them, none"
    moco.add_argument("--spatial-augment", default="shear_or_corruption", choices=SPATIAL_AUGMENTS, help=augment)
    workers = "data loading workers, capped at the CPUs of each process"
    flags.add_data_model_runtime_args(parser, "--pre-dataset", workers=32, workers_help=workers)
    parser.set_defaults(protocol="cross_subject")  # the reference's pretraining default
    return parser


# -- set-up: every check that needs no model, before any file is written -------------------------------


class Plan(NamedTuple):
    representations: tuple[str, ...]
    paths: SplitPaths  # the split's files
    folder: Path
    steps_per_epoch: int
    checkpoint: dict[str, Any] | None  # the --resume checkpoint
    origin: dict[str, Any]  # provenance (rank 0)


def read_resume(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``--resume`` checkpoint, refused when it cannot continue this run."""
    checkpoint = read_resume_checkpoint(path, PRETRAIN_FORMAT)
    saved = checkpoints.recorded(checkpoint)  # the reference's record nothing: they are checked by their weights
    saved = {"window_size": WINDOW_SIZE, **saved} if saved else {}  # ours from before the flag: 64 frames
    differ = flags.differences(saved, {name: getattr(args, name) for name in MUST_MATCH})
    if differ:
        raise UsageError(f"--resume {path} was pretrained with {differ}: pass the run's own options")
    if checkpoint.get("step"):  # written mid-epoch by an earlier version: its epoch cannot be continued exactly
        raise UsageError(
            f"--resume {path} was written in the middle of epoch {checkpoint['epoch']}: resume from a checkpoint "
            "written at the end of an epoch"
        )
    if checkpoint["epoch"] > args.epochs:
        raise UsageError(
            f"--resume {path} has already trained {checkpoint['epoch']} epochs, more than --epochs {args.epochs}"
        )
    return checkpoint


def prepare(args: argparse.Namespace) -> Plan:
    """The start-up checks, cheapest first; a UsageError names the first problem."""
    representations = parse_representation(args.skeleton_representation)
    world_size = batch_world_size(args.batch_size)
    if args.moco_k % args.batch_size:
        raise UsageError(
            f"--moco-k {args.moco_k} must be divisible by --batch-size {args.batch_size} "
            "(each step replaces one whole block of the queue)"
        )
    if not args.resume and args.start_epoch >= args.epochs:
        raise UsageError(f"--start-epoch {args.start_epoch} leaves nothing to train with --epochs {args.epochs}")
    flags.check_window_size(args.window_size, representations)
    if args.metrics_json:
        check_output_file(args.metrics_json, "--metrics-json")
    paths = split_paths(args.data_root, args.pre_dataset, args.protocol, "train")
    num_clips = check_split(paths, need_labels=False)
    if num_clips < args.batch_size:
        raise UsageError(f"{paths.data} holds {num_clips} clips, fewer than one batch of {args.batch_size}")
    # DistributedSampler pads each rank's share to ceil(N / world); the loader drops a last partial batch.
    steps = math.ceil(num_clips / world_size) // (args.batch_size // world_size)
    default = f"./checkpoints/{args.pre_dataset}_{args.protocol}/{args.skeleton_representation}"
    checkpoint = read_resume(args.resume, args) if args.resume else None
    origin = {}
    if cli.is_rank0():  # the --resume file is hashed now, before training rewrites it
        device, folders, resumed = training.select_device(args.device), [paths.data.parent], {"--resume": args.resume}
        origin = provenance(device=device, world_size=world_size, data_folders=folders, checkpoints=resumed)
    return Plan(representations, paths, Path(args.checkpoint_path or default), steps, checkpoint, origin)


# -- data -----------------------------------------------------------------------------------------------


def build_loader(args: argparse.Namespace, ctx: DistContext, plan: Plan, data_seed: int) -> CheckedLoader:
    """Clip order and augmentations are functions of (data_seed, epoch, index): a resumed run draws what
    an uninterrupted one does, whatever the number of workers."""
    dataset = PretrainDataset(
        plan.paths,
        [ENCODERS[r].view for r in plan.representations],
        PRETRAIN_CROP_RATIO,
        args.window_size,
        data_seed,
        args.spatial_augment,
    )
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=data_seed)
    # Processes on one machine share its CPUs (torchrun says how many processes run here).
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(args.workers, max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    # The workers' base seed from a generator of their own: the global one serves only the model
    # (dropout), whose state the checkpoints carry.
    generator = torch.Generator().manual_seed(data_seed)
    batch = args.batch_size // ctx.world_size
    options = training.loader_options(workers, ctx.device)
    return CheckedLoader(dataset, batch, sampler=sampler, drop_last=True, generator=generator, **options)


# -- model ---------------------------------------------------------------------------------------------


def step_options(args: argparse.Namespace, ctx: DistContext) -> dict[str, Any]:
    """Seeds and cuDNN's determinism; what every contrastive step is told (its place in the process
    group, shuffling BN, bf16 autocast with --amp on CUDA)."""
    if args.seed is not None:
        training.seed_everything(args.seed)
        torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = args.seed is None
    if args.amp and ctx.device.type != "cuda":
        warnings.warn("--amp applies to CUDA only; training in float32 on the CPU", stacklevel=2)
    autocast = torch.bfloat16 if args.amp and ctx.device.type == "cuda" else None
    return dict(rank=ctx.rank, world_size=ctx.world_size, shuffle_bn=args.shuffle_bn, autocast_dtype=autocast)


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    moco = dict(dim=args.moco_dim, K=args.moco_k, m=args.moco_m, T=args.moco_t, mlp=args.mlp)
    base = build_moco(args.skeleton_representation, **moco, **flags.encoder_kwargs(args)).to(device)
    # Every parameter, in the reference's order, so optimizer states match its checkpoints; the key
    # encoders never get gradients, so SGD leaves them to the momentum update.
    optimizer = torch.optim.SGD(base.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return base, optimizer


# -- restore -------------------------------------------------------------------------------------------


def restore(base: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], path: str) -> None:
    """Model, queues, optimizer and generator states as the checkpoint left them. A checkpoint that
    records no options (the reference's) is refused here, naming the first key that differs."""
    theirs, ours = model_state(checkpoint, f"--resume {path}"), base.state_dict()
    problems = [f"it has no {k}" for k in ours if k not in theirs]
    shapes = {k: tuple(v.shape) for k, v in theirs.items()}
    problems += [
        f"{k} is {shapes[k]} there, {tuple(v.shape)} here" for k, v in ours.items() if shapes.get(k, v.shape) != v.shape
    ]
    problems += [f"{k} is not part of this model" for k in theirs if k not in ours]
    if problems:
        raise UsageError(
            f"--resume {path} does not fit the model these options build ({problems[0]}): pass the "
            "representation, encoder sizes, --mlp, --moco-dim and --moco-k of the run you continue"
        )
    base.load_state_dict(theirs, strict=True)  # keys and shapes checked above
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as exc:
        raise UsageError(f"--resume {path}: its optimizer state does not fit the model: {exc}") from None
    if "rng" in checkpoint:
        training.restore_rng_state(checkpoint["rng"])


@dataclass
class Run:
    """Everything one training run works with (built by :func:`build_run`)."""

    args: argparse.Namespace
    ctx: DistContext
    plan: Plan
    base: nn.Module  # the MoCo model itself: checkpoints, queues
    model: nn.Module  # what the step calls: ``base`` or its DataParallel / DDP wrapper
    optimizer: torch.optim.Optimizer
    loader: CheckedLoader
    data_seed: int
    step_options: dict[str, Any]  # contrastive_step's: place in the process group, shuffling BN, autocast
    epochs_done: int
    history: list[dict[str, Any]]  # every completed epoch, those before a resume included
    writer: Any = None  # TensorBoard (rank 0), opened at the first epoch's end
    started: float = field(default_factory=time.time)


def build_run(args: argparse.Namespace, ctx: DistContext, plan: Plan) -> Run:
    """Model, optimizer, the restored state and the data: everything training needs."""
    options = step_options(args, ctx)
    saved = plan.checkpoint if plan.checkpoint is not None else {}
    fresh = args.seed if args.seed is not None else secrets.randbits(62)
    data_seed = broadcast_int(int(saved.get("data_seed", fresh)), ctx.device)  # every rank takes rank 0's
    base, optimizer = build_model(args, ctx.device)
    if plan.checkpoint is not None:
        restore(base, optimizer, plan.checkpoint, args.resume)
    epochs_done, history = int(saved.get("epoch", args.start_epoch)), list(saved.get("history", []))
    saved.clear()  # its tensors now live in the model and the optimizer
    # Queues stay equal by gathering keys; only rank 0's BatchNorm statistics are saved.
    model = wrap_model(base, ctx, trainable=True, requested_device=args.device, broadcast_buffers=False)
    loader = build_loader(args, ctx, plan, data_seed)
    return Run(args, ctx, plan, base, model, optimizer, loader, data_seed, options, epochs_done, history)


# -- fit -----------------------------------------------------------------------------------------------


def step_seed(data_seed: int, epoch: int, step: int) -> int:
    """The seed of one step's shuffling BN, the same whether or not the run was resumed."""
    return int(np.random.SeedSequence((data_seed, epoch, step)).generate_state(1, np.uint64)[0] >> 1)


def last_good(run: Run) -> Path | None:  # the checkpoint a stopped run continues from
    last = run.plan.folder / LAST_CHECKPOINT
    return last if last.is_file() else Path(run.args.resume) if run.args.resume else None


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One epoch of contrastive steps: the loss and each stream's accuracy averaged over every clip of
    every rank. The host waits for the device only every --print-freq steps, where it checks the loss."""
    args, ctx, steps = run.args, run.ctx, run.plan.steps_per_epoch
    names = ["train_loss"] + [f"acc_s{i + 1}" for i in range(run.base.num_streams)]
    sums = torch.zeros(len(names), device=ctx.device)  # float32 sums over clips, on the device
    nonfinite, clips = torch.zeros((), dtype=torch.bool, device=ctx.device), 0
    run.model.train()
    interval = 0.5 if sys.stderr.isatty() else 60.0  # a log file gets few redraws
    with tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not ctx.is_main, mininterval=interval) as bar:
        for step, views in enumerate(run.loader):
            views = [v.to(ctx.device, non_blocking=True) for v in views]
            seed = step_seed(run.data_seed, epoch, step)
            out = contrastive_step(run.model, run.base, views, run.optimizer, shuffle_seed=seed, **run.step_options)
            n = out.logits[0].shape[0]
            hits = [training.correct_counts(lg, info_nce_labels(lg), (1,))[0] for lg in out.logits]
            sums += torch.stack([out.loss.float() * n, *(100.0 * h for h in hits)])
            nonfinite |= ~torch.isfinite(out.loss)
            clips += n
            bar.update()
            if step % args.print_freq and step + 1 < steps:
                continue
            if all_reduce_(nonfinite.float(), "max").item():  # every rank stops at the same step
                last = last_good(run)
                raise cli.RunFailed(
                    f"non-finite loss (nan or inf) at epoch {epoch}, step {step + 1}; stopped without saving "
                    f"({f'the last good checkpoint is {last}' if last else 'no checkpoint was written'}). "
                    "Try a lower --lr, or run without --amp."
                )
            bar.set_postfix({k: f"{v:.4g}" for k, v in zip(names, (sums / clips).tolist())}, refresh=False)
    totals = all_reduce_(torch.cat([sums, sums.new_tensor([clips])]), "sum").tolist()
    return {name: total / totals[-1] for name, total in zip(names, totals)}


def end_epoch(run: Run, record: dict[str, Any]) -> None:
    """Rank 0: TensorBoard, then the checkpoints, then a line."""
    args, epoch, folder = run.args, record["epoch"], run.plan.folder
    # purge_step: TensorBoard hides what an earlier writer logged from this epoch on (a run killed
    # after logging an epoch and before its checkpoint), so no curve doubles.
    writer = run.writer = run.writer or training.summary_writer(folder, purge_step=epoch)
    for name in [k for k in record if k not in ("epoch", "seconds")]:
        writer.add_scalar(name, record[name], global_step=epoch)
    if run.base.num_streams == 1:
        writer.add_scalar("acc", record["acc_s1"], global_step=epoch)  # the reference's intra name
    writer.flush()
    state = {
        "format": PRETRAIN_FORMAT,
        "epoch": epoch + 1,  # the next epoch to run, as the reference counts
        "arch": args.skeleton_representation,
        "state_dict": checkpoint_state_dict(run.base),
        "optimizer": run.optimizer.state_dict(),
        "args": args_record(args, run.plan),
        "data_seed": run.data_seed,
        "world_size": run.ctx.world_size,
        "rng": training.capture_rng_state(),
        "history": [*run.history, record],
    }
    numbered = f"checkpoint_{epoch:04d}.pth.tar" if epoch % args.save_freq == 0 or epoch == args.epochs - 1 else ""
    written = write_checkpoint(state, folder / (numbered or LAST_CHECKPOINT))
    if numbered:  # written once, then linked
        atomic_copy(written, folder / LAST_CHECKPOINT)
    accs = "  ".join(f"{k} {record[k]:6.2f}" for k in record if k.startswith("acc_s"))
    per_step = record["seconds"] / run.plan.steps_per_epoch
    print(
        f"epoch {epoch:4d} ({epoch + 1}/{args.epochs})  loss {record['train_loss']:.4f}  {accs}  lr {record['lr']:.3g}"
        f"  {record['seconds']:.1f}s ({per_step * 1e3:.0f} ms/step, {args.batch_size / per_step:.0f} clips/s)"
        + (f"  -> {numbered}" if numbered else ""),
        flush=True,
    )


def fit(run: Run) -> None:
    """Train from the first epoch not yet done to --epochs, with a checkpoint at the end of each."""
    args = run.args
    try:
        for epoch in range(run.epochs_done, args.epochs):
            lr = training.learning_rate_at(epoch, args.lr, args.epochs, args.schedule, args.cos)
            training.set_learning_rate(run.optimizer, lr)
            training.set_loader_epoch(run.loader, run.data_seed, epoch)
            started = time.time()
            record = {"epoch": epoch, "lr": lr, **train_one_epoch(run, epoch)}
            record["seconds"] = time.time() - started
            if run.ctx.is_main:
                end_epoch(run, record)
            run.history.append(record)
            run.epochs_done = epoch + 1
    finally:
        if run.writer is not None:
            run.writer.close()
        run.loader.close()  # persistent workers end now, not at the interpreter's exit


# -- report --------------------------------------------------------------------------------------------


def args_record(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """The arguments a checkpoint and the metrics record, with the folder the run wrote."""
    return {**training.args_to_dict(args), "checkpoint_path": str(plan.folder)}


def write_metrics(args: argparse.Namespace, plan: Plan, status: str, history: list, epochs: int, **more: Any) -> None:
    """Rank 0 writes --metrics-json: how the run ended, the last epoch, the history, the provenance;
    ``more``: data_seed, mode and wall_seconds."""
    if not (args.metrics_json and cli.is_rank0()):
        return
    final = {k: v for k, v in (history[-1] if history else {}).items() if k == "train_loss" or k.startswith("acc_s")}
    metrics = {"status": status, "skeleton_representation": args.skeleton_representation, "final": final}
    metrics.update(epochs_completed=epochs, history=history, steps_per_epoch=plan.steps_per_epoch, **more)
    write_json_atomic(args.metrics_json, {**metrics, "args": args_record(args, plan), "provenance": plan.origin})


def report(run: Run, status: str) -> None:
    more = dict(data_seed=run.data_seed, mode=parallel_mode(run.model, run.ctx), wall_seconds=time.time() - run.started)
    write_metrics(run.args, run.plan, status, run.history, run.epochs_done, **more)


def train(run: Run) -> int:
    """Fit, then report how it ended: completed (0), interrupted (130, 143) or failed (1)."""
    try:
        fit(run)
    except (KeyboardInterrupt, cli.Terminated) as exc:
        sig = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        report(run, "interrupted")
        last = last_good(run)
        todo = f"continue with --resume {last}" if last else "no epoch was completed: start again"
        return cli.error(PROG, f"{sig.name}: stopped in epoch {run.epochs_done}; {todo}", 128 + sig)
    except cli.RunFailed:
        report(run, "failed")
        raise
    report(run, "completed")
    return 0


def folder_rules(args: argparse.Namespace) -> dict[str, Any]:
    """How the run may use its checkpoint folder; a run of other MUST_MATCH values there is not offered --resume."""
    config = {flags.flag(name): getattr(args, name) for name in MUST_MATCH}
    return dict(resume=args.resume, overwrite=args.overwrite, config=config)


def pretrain(args: argparse.Namespace) -> int:
    """Set up, then build and train in the claimed folder; returns the exit status."""
    plan = prepare(args)
    saved = plan.checkpoint
    if saved is not None and saved["epoch"] == args.epochs:  # a finished run: say so and report it
        done = f"=> nothing to train: {args.resume} already completed --epochs {args.epochs}"
        if cli.is_rank0():
            print(f"{done} (pass a larger --epochs to train further)", flush=True)
        history, seed = list(saved.get("history", [])), saved.get("data_seed")
        write_metrics(args, plan, "completed", history, saved["epoch"], data_seed=seed, mode=None, wall_seconds=0.0)
        return 0
    with (
        process_context(args.device) as ctx,
        run_folder(ctx, plan.folder, purpose="pretraining", **folder_rules(args)) as claim,
    ):
        say = rank0_printer(ctx)
        for line in claim.notes:
            say(line)
        run = build_run(args, ctx, plan)
        for line in claim.discard_previous_run():  # only now: a run that cannot start deletes nothing
            say(line)
        params = sum(p.numel() for p in run.base.parameters() if p.requires_grad)
        say(
            f"=> {args.skeleton_representation} MoCo ({params / 1e6:.2f}M trainable parameters) on {ctx.device}, "
            f"{parallel_mode(run.model, ctx)}; {len(run.loader.dataset)} clips, {plan.steps_per_epoch} steps of "
            f"{args.batch_size} per epoch; epochs {run.epochs_done}..{args.epochs - 1} in {plan.folder}"
        )
        return train(run)


def main(argv: Sequence[str] | None = None) -> int:
    """Pretrain; returns the exit status (see the module docstring)."""
    return cli.run_main(PROG, build_parser(), pretrain, argv)


if __name__ == "__main__":
    sys.exit(main())
