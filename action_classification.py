#!/usr/bin/env python
"""Action classification on top of a pretrained (or randomly initialised) skeleton encoder.

Protocols (the paper's):
- linear evaluation (``--pretrained`` given): the pretrained query encoder is frozen -- no gradients and
  kept in eval mode, so BatchNorm statistics stay those of pretraining -- and only a new ``fc`` layer,
  initialised N(0, 0.01) with zero bias, is trained; after the first epoch the encoder weights are
  compared with the checkpoint's and any change is an error;
- supervised baseline (no ``--pretrained``): the whole network trained from scratch;
- fine-tuning (``--pretrained --finetune``): the whole network trained from the pretrained weights;
- semi-supervised (``--label-fraction F``): any of the above on a seeded, class-stratified fraction of the
  training clips (at least one per class).
Training clips are random crops of [0.5, 1] of the valid frames, evaluation clips a centre crop of 0.95,
both resized to 64 frames. Top-1/top-5 on the evaluation split every epoch; the best epoch is kept.

Devices: CPU, one GPU, DataParallel over the visible GPUs, or ``torchrun`` (DistributedDataParallel, one
process per GPU, one or several machines; gloo on CPUs). ``--batch-size`` is the total over all processes.
Under torchrun each rank trains on its DistributedSampler shard and evaluates its own chunk of every
evaluation batch; correct counts are summed across ranks, so top-1/top-5 equal a single process's.
Only rank 0 prints and writes files.

One run owns --checkpoint-path at a time (a lock file; a second run is refused naming the first one's
PID), a run refuses a folder that holds another run's checkpoints unless told ``--resume`` or
``--overwrite``, and temporary files a killed run left there are removed at the start.

    python action_classification.py --lr 0.1 --batch-size 64 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from common import cli
from common.distributed import barrier, broadcast_int
from common.io import UsageError, atomic_copy, write_json_atomic
from engine import evaluation
from engine.args import fraction
from engine.checkpoints import (
    CLASSIFIER_FORMAT,
    model_state,
    read_checkpoint,
    read_resume_checkpoint,
    resumes_in,
    write_checkpoint,
)
from engine.evaluation import PlannedLoader
from engine.launch import DistContext, parallel_mode, process_context, progress_bars, rank0_printer, unwrap, wrap_model
from engine.plots import action_names, confusion_matrix, plot_confusion_matrix
from engine.run_folder import ClaimedFolder, run_folder
from engine.training import (
    args_to_dict,
    capture_rng_state,
    learning_rate_at,
    restore_rng_state,
    set_learning_rate,
    summary_writer,
)
from feeders import DownstreamDataset, num_classes, stratified_subset

PROG = "action_classification.py"
LAST_CHECKPOINT = "last_checkpoint.pth.tar"
LOCK_PURPOSE = "classification"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluation.add_evaluation_args(parser)
    mode = parser.add_argument_group("protocol")
    mode.add_argument(
        "--finetune",
        action="store_true",
        help="train the whole network from the pretrained weights instead of a linear classifier",
    )
    mode.add_argument(
        "--label-fraction",
        type=fraction,
        default=None,
        metavar="F",
        help="train on a seeded class-stratified fraction F of the training clips, at least one "
        "per class (semi-supervised protocol, e.g. 0.01 or 0.1)",
    )
    mode.add_argument(
        "--eval-mode-training",
        action="store_true",
        help="keep the network in eval mode while training also for --finetune and the supervised "
        "baseline, as the reference does (its BatchNorm then never updates its statistics)",
    )
    parser.add_argument(
        "--checkpoint-path",
        default="./runs/action_classification",
        metavar="DIR",
        help="folder for the best classifier (<representation>_checkpoint.pth.tar), the last "
        "epoch's (last_checkpoint.pth.tar) and the TensorBoard events",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the checkpoints and TensorBoard events of an earlier run in --checkpoint-path "
        "and start again (without it such a folder is refused unless --resume continues it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the protocol; 0 on success, 2 (and one line on stderr) on bad input."""
    return cli.run_main(PROG, build_parser(), run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the protocol; returns the metrics that ``--metrics-json`` receives (on every rank)."""
    check_flags(args)
    with (
        process_context(args.device) as ctx,
        run_folder(
            ctx,
            args.checkpoint_path,
            purpose=LOCK_PURPOSE,
            resume=args.resume,
            overwrite=args.overwrite,
            last_name=LAST_CHECKPOINT,
        ) as claim,
    ):
        return train(args, ctx, claim)


def check_flags(args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot check (before anything is read or written)."""
    if args.finetune and not args.pretrained:
        raise UsageError("--finetune needs --pretrained (without it the network is trained from scratch anyway)")
    evaluation.check_evaluation_flags(args)
    folder = Path(args.checkpoint_path)
    if args.overwrite and resumes_in(folder, args.resume):
        raise UsageError(
            f"--overwrite would delete {args.resume}, the checkpoint --resume continues from; drop "
            f"--overwrite to continue that run in {folder}"
        )


def train(args: argparse.Namespace, ctx: DistContext, claim: ClaimedFolder) -> dict[str, Any]:
    """Build, restore, train and report in the claimed checkpoint folder; the earlier run's files that
    ``--overwrite`` replaces go only once everything before training has worked."""
    say = rank0_printer(ctx)
    for line in claim.notes:
        say(line)
    evaluation.prepare_args(args, ctx)
    data = load_data(args, ctx)
    classifier = build_classifier(args, ctx, data.num_class)
    progress = restore(args, classifier)
    for line in claim.discard_previous_run():
        say(line)
    progress = fit(args, ctx, data, classifier, progress)
    metrics = report(args, ctx, data, classifier, progress)
    barrier()
    return metrics


# ---------------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------------


class Data(NamedTuple):
    train: DownstreamDataset
    val: DownstreamDataset
    val_loader: PlannedLoader  # the evaluation clips in order, this process's share of every batch
    num_class: int


def load_data(args: argparse.Namespace, ctx: DistContext) -> Data:
    """Both splits, checked before any model is built: a missing file is the commonest mistake and the
    cheapest to report."""
    num_class = num_classes(args.finetune_dataset)
    train_set = evaluation.make_dataset(args, "train", train=True)
    val_set = evaluation.make_dataset(args, "val", train=False)
    for part, dataset in (("train", train_set), ("val", val_set)):
        evaluation.check_split_contents(dataset, part, num_class, args)
    if args.label_fraction is not None:
        subset = stratified_subset(train_set.labels, args.label_fraction, seed=args.data_seed)
        train_set = evaluation.make_dataset(args, "train", train=True, indices=subset)
    val_loader = evaluation.plan_loader(val_set, evaluation.evaluation_plan(len(val_set), args.batch_size), args, ctx)
    return Data(train_set, val_set, val_loader, num_class)


class Classifier(NamedTuple):
    model: nn.Module  # wrapped for the launch mode
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    pretrained_weights: dict[str, torch.Tensor] | None  # the frozen encoder's weights (linear protocol)
    linear: bool
    train_mode: bool  # train() during training epochs


def build_classifier(args: argparse.Namespace, ctx: DistContext, num_class: int) -> Classifier:
    """The encoder with a ``num_class``-way head, frozen for the linear protocol, wrapped, and its SGD."""
    linear = bool(args.pretrained) and not args.finetune
    model, pretrained_weights = evaluation.build_encoder_for(args, num_class)
    if args.pretrained:
        evaluation.init_head(model)
    if linear:
        evaluation.freeze_encoder(model)
    model = wrap_model(model, ctx, trainable=True, requested_device=args.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return Classifier(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        pretrained_weights,
        linear,
        train_mode=not linear and not args.eval_mode_training,
    )


@dataclass
class Progress:
    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": 0.0, "epoch": 0, "predictions": None})
    history: list[dict[str, float]] = field(default_factory=list)


def restore(args: argparse.Namespace, classifier: Classifier) -> Progress:
    """Model, optimizer, progress and RNG state from ``--resume`` (ours, or the reference's whose keys carry
    DataParallel's ``module.``); a fresh start without it."""
    if not args.resume:
        return Progress(start_epoch=args.start_epoch)
    path = args.resume
    checkpoint = read_resume_checkpoint(path, CLASSIFIER_FORMAT)
    try:
        unwrap(classifier.model).load_state_dict(model_state(checkpoint, path))
        classifier.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # torch's message spans several lines
        raise UsageError(f"--resume {path} does not fit this model and protocol: {reason}") from None
    best = {
        "top1": float(checkpoint.get("best_acc1", -1.0)),
        "top5": float(checkpoint.get("best_acc5", 0.0)),
        "epoch": int(checkpoint.get("best_epoch", checkpoint["epoch"])),
        "predictions": None,
    }
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"])
    args.start_epoch = int(checkpoint["epoch"])  # recorded with the run's arguments
    return Progress(args.start_epoch, best, list(checkpoint.get("history", [])))


def fit(args: argparse.Namespace, ctx: DistContext, data: Data, classifier: Classifier, progress: Progress) -> Progress:
    """Train from ``progress.start_epoch`` to ``--epochs``, evaluating and checkpointing every epoch."""
    say = rank0_printer(ctx)
    out_dir = Path(args.checkpoint_path)
    loader = evaluation.train_loader(data.train, args, ctx)
    trained = sum(p.numel() for p in classifier.model.parameters() if p.requires_grad)
    say(
        f"{evaluation.protocol_name(args)} {args.finetune_skeleton_representation} classification on "
        f"{args.finetune_dataset} {args.protocol}: {len(data.train)} training / {len(data.val)} evaluation clips, "
        f"{data.num_class} classes, {trained} trained parameters, device {ctx.device}, "
        f"{parallel_mode(classifier.model, ctx)}"
    )
    writer = summary_writer(out_dir if ctx.is_main else None)
    try:
        for epoch in range(progress.start_epoch, args.epochs):
            record, predictions = _epoch(
                args, ctx, data, classifier, loader, epoch, check_frozen=epoch == progress.start_epoch
            )
            progress.history.append(record)
            is_best = record["val_top1"] > progress.best["top1"]
            if is_best:
                progress.best = {
                    "top1": record["val_top1"],
                    "top5": record["val_top5"],
                    "epoch": epoch + 1,
                    "predictions": predictions,
                }
            if ctx.is_main:
                _save_checkpoints(args, classifier, epoch, progress, is_best)
            if writer is not None:
                for key, value in record.items():
                    if key != "epoch":
                        writer.add_scalar(key.replace("_", "/", 1), value, global_step=epoch + 1)
            say(
                f"epoch {epoch + 1}/{args.epochs} lr {record['lr']:.4g} | train loss {record['train_loss']:.4f} "
                f"top-1 {record['train_top1']:.2f} | eval loss {record['val_loss']:.4f} top-1 "
                f"{record['val_top1']:.2f} top-5 {record['val_top5']:.2f}{' (best)' if is_best else ''}"
            )
    finally:
        if writer is not None:
            writer.close()
    return progress


def _epoch(
    args: argparse.Namespace,
    ctx: DistContext,
    data: Data,
    classifier: Classifier,
    loader: Any,
    epoch: int,
    check_frozen: bool,
) -> tuple[dict[str, float], np.ndarray]:
    """One training epoch and one evaluation: the history record and the evaluation predictions.
    ``check_frozen``: compare the linear protocol's encoder with the pretrained weights afterwards (the
    first epoch a run trains, resumed or not)."""
    lr = learning_rate_at(epoch, args.lr, args.epochs, args.schedule, cos=False)
    set_learning_rate(classifier.optimizer, lr)
    evaluation.set_loader_epoch(loader, args.data_seed, epoch)
    bars = progress_bars(ctx)
    train_stats = evaluation.train_one_epoch(
        classifier.model,
        loader,
        classifier.criterion,
        classifier.optimizer,
        ctx,
        desc=f"train {epoch + 1}/{args.epochs}",
        train_mode=classifier.train_mode,
        print_freq=args.print_freq,
        progress=bars,
    )
    val_stats, predictions = evaluation.evaluate(
        classifier.model, data.val_loader, classifier.criterion, ctx, desc=f"eval {epoch + 1}", progress=bars
    )
    if classifier.linear and check_frozen:
        evaluation.check_encoder_unchanged(classifier.model, classifier.pretrained_weights, epoch + 1)
    record = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": train_stats["loss"],
        "train_top1": train_stats["top1"],
        "val_loss": val_stats["loss"],
        "val_top1": val_stats["top1"],
        "val_top5": val_stats["top5"],
    }
    return record, predictions


def _best_path(args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_path) / f"{args.finetune_skeleton_representation}_checkpoint.pth.tar"


def _save_checkpoints(
    args: argparse.Namespace, classifier: Classifier, epoch: int, progress: Progress, is_best: bool
) -> None:
    state = {
        "format": CLASSIFIER_FORMAT,
        "epoch": epoch + 1,
        "state_dict": unwrap(classifier.model).state_dict(),
        "best_acc1": progress.best["top1"],
        "best_acc5": progress.best["top5"],
        "best_epoch": progress.best["epoch"],
        "optimizer": classifier.optimizer.state_dict(),
        "history": progress.history,
        "args": args_to_dict(args),
        "rng": capture_rng_state(),
    }
    last = Path(args.checkpoint_path) / LAST_CHECKPOINT
    if is_best:  # written once; the last checkpoint is a hard link (or copy) of it, as in pretraining
        atomic_copy(write_checkpoint(state, _best_path(args)), last)
    else:
        write_checkpoint(state, last)


def report(
    args: argparse.Namespace, ctx: DistContext, data: Data, classifier: Classifier, progress: Progress
) -> dict[str, Any]:
    """The metrics (the confusion matrix and JSON from rank 0) and the closing line."""
    best, protocol = progress.best, evaluation.protocol_name(args)
    final = progress.history[-1] if progress.history else {}
    metrics: dict[str, Any] = {
        "task": "action_classification",
        "protocol": protocol,
        "top1": best["top1"],
        "top5": best["top5"],
        "best_epoch": best["epoch"],
        "final_top1": final.get("val_top1"),
        "final_top5": final.get("val_top5"),
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_class": data.num_class,
        "checkpoint": str(_best_path(args)),
        "history": progress.history,
        "args": args_to_dict(args),
    }
    if args.plot_dir:
        plot = _plot_best(args, ctx, data, classifier, progress)
        if plot is not None:
            metrics["plots"] = [str(plot)]
    if ctx.is_main and args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    rank0_printer(ctx)(
        f"{protocol} {args.finetune_skeleton_representation} on {args.finetune_dataset} {args.protocol}: best top-1 "
        f"{best['top1']:.2f}% top-5 {best['top5']:.2f}% at epoch {best['epoch']}/{args.epochs}"
    )
    return metrics


def _plot_best(
    args: argparse.Namespace, ctx: DistContext, data: Data, classifier: Classifier, progress: Progress
) -> Path | None:
    """The best epoch's confusion matrix (rank 0 writes it); None when there is no best epoch to show."""
    best, best_path = progress.best, _best_path(args)
    # Rank 0's answer: a file only rank 0 wrote may be invisible on other machines.
    if best["predictions"] is None and broadcast_int(best_path.is_file(), ctx.device):
        # Resumed past the best epoch: recompute its predictions from the saved best classifier (rank 0's
        # file; evaluate() hands its weights to the other ranks).
        if ctx.is_main:
            unwrap(classifier.model).load_state_dict(model_state(read_checkpoint(best_path), best_path))
        _, best["predictions"] = evaluation.evaluate(
            classifier.model,
            data.val_loader,
            classifier.criterion,
            ctx,
            desc="eval best",
            progress=progress_bars(ctx),
        )
    if not ctx.is_main or best["predictions"] is None:
        return None
    counts = confusion_matrix(data.val.labels, best["predictions"], data.num_class)
    return plot_confusion_matrix(
        counts,
        action_names(args.finetune_dataset, data.num_class),
        Path(args.plot_dir) / "confusion_matrix.png",
        title=f"{evaluation.protocol_name(args)} {args.finetune_skeleton_representation}, {args.finetune_dataset} "
        f"{args.protocol}: top-1 {best['top1']:.2f}% (epoch {best['epoch']})",
    )


if __name__ == "__main__":
    raise SystemExit(main())
