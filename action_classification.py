#!/usr/bin/env python
"""Action classification on top of a pretrained (or randomly initialised) skeleton encoder.

Linear evaluation (``--pretrained``: the pretrained encoder frozen in eval mode under a new ``fc``, the
reference's protocol and the paper's main table), the supervised baseline (no ``--pretrained``), and two
protocols the reference has no code for: fine-tuning (``--finetune``) and semi-supervised
(``--label-fraction F``: a seeded subset of the training clips, int(N x F) of all N as the lineage's feeder
draws it). Top-1/top-5 on the evaluation split every epoch; the best epoch is reported, as the reference
does. Under ``torchrun`` each rank trains on its shard and evaluates its piece of every batch; only rank 0
prints and writes. One run owns ``--checkpoint-path`` at a time (by default a folder per configuration);
``--overwrite`` deletes only classifier checkpoints and their events, never a file another flag reads.
See docs/evaluation.md.

    python action_classification.py --lr 0.1 --batch-size 64 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from common import cli
from common.distributed import barrier
from common.io import UsageError, atomic_copy, check_output_file, check_output_folder, write_json_atomic
from common.manifest import sha256_of
from engine import checkpoints, evaluation, launch, training
from engine.args import SIZE_FLAGS, check_window_size, differing_flags, encoder_kwargs, flag, fraction
from engine.evaluation import BatchPlan, Clips, PlannedLoader
from engine.launch import DistContext, parallel_mode, process_context, rank0_printer, unwrap, wrap_model
from engine.plots import action_names, confusion_matrix, plot_confusion_matrix
from engine.provenance import provenance
from engine.run_folder import CLASSIFIER_FILES, ClaimedFolder, run_folder
from feeders.datasets import DownstreamDataset, num_classes

PROG = "action_classification.py"
# What a --resume must match besides the pretrained file (by its sha256) and --seed (when given).
CONFIG_FLAGS = ("finetune_dataset", "protocol", "pretrain_skeleton_representation", "finetune_skeleton_representation")
CONFIG_FLAGS += ("finetune", "label_fraction", "label_sampling", "eval_mode_training", "window_size")
CONFIG_FLAGS += SIZE_FLAGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluation.add_evaluation_args(parser)
    add = parser.add_argument_group("protocol").add_argument
    add("--finetune", action="store_true", help="train the whole network from the pretrained weights")
    add("--label-fraction", type=fraction, default=None, metavar="F", help="train on a seeded share F of the clips")
    draws = "--label-fraction's draw: int(N x F) of all N clips, or round(F x n) of each class (at least one)"
    add("--label-sampling", choices=evaluation.LABEL_SAMPLINGS, default="global", help=draws)
    add("--eval-mode-training", action="store_true", help="keep the whole network in eval mode, as the reference")
    folder = "runs/action_classification/DATASET_PROTOCOL/PRETRAINING/REPRESENTATION/PROTOCOL-NAME"
    add("--checkpoint-path", default=None, metavar="DIR", help=f"the classifier checkpoints' folder; None: {folder}")
    add("--overwrite", action="store_true", help="delete an earlier run's classifier checkpoints and events first")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the protocol; 0 on success, 2 (and one line on stderr) on bad input."""
    return cli.run_main(PROG, build_parser(), run, argv)


class Run(NamedTuple):
    folder: Path  # --checkpoint-path, or the configuration's default
    seed: int  # crops, shuffling and the label subset
    config: dict[str, Any]  # the flags a --resume must match (configuration())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the protocol; returns the metrics that ``--metrics-json`` receives (on every rank)."""
    check_flags(args)
    config = configuration(args)
    folder = Path(args.checkpoint_path or default_folder(args))
    rules = dict(resume=args.resume, overwrite=args.overwrite, own=CLASSIFIER_FILES, config=config)
    with process_context(args.device) as ctx:
        resumed = read_resume(args.resume, config)
        recorded = resumed.get("config", {}) if resumed is not None else {}
        seed = int(recorded["--seed"]) if "--seed" in recorded else evaluation.shared_seed(args.seed, ctx)
        keep = (args.pretrained, args.resume)
        with run_folder(ctx, folder, purpose="classification", keep=keep, **rules) as claim:
            return train(args, ctx, Run(folder, seed, config), claim, resumed)


def check_flags(args: argparse.Namespace) -> None:
    """What argparse cannot check, outputs included (before anything is read or written)."""
    if args.finetune and not args.pretrained:
        raise UsageError("--finetune needs --pretrained (without it the network is trained from scratch anyway)")
    check_window_size(args.window_size, (args.finetune_skeleton_representation,))
    if args.pretrained and not Path(args.pretrained).is_file():
        checkpoints.read_checkpoint(args.pretrained, flag="--pretrained")  # its one line: not found, or a folder
    launch.batch_world_size(args.batch_size)
    if args.metrics_json:
        check_output_file(args.metrics_json, "--metrics-json")
    if args.plot_dir:
        check_output_folder(args.plot_dir, "--plot-dir")


def protocol_name(args: argparse.Namespace) -> str:
    """'linear', 'finetune' or 'supervised', with the semi-supervised share, e.g. 'finetune_semi0.1'."""
    name = "finetune" if args.finetune else "linear" if args.pretrained else "supervised"
    if args.label_fraction is not None:
        name += f"_semi{args.label_fraction:g}" + ("_per-class" if args.label_sampling == "per-class" else "")
    return name


def default_folder(args: argparse.Namespace) -> Path:
    """One folder per configuration, so that evaluating one encoder after another needs no flag."""
    pretraining = args.pretrain_skeleton_representation if args.pretrained else "scratch"
    setting = Path("runs", "action_classification", f"{args.finetune_dataset}_{args.protocol}", pretraining)
    return setting / args.finetune_skeleton_representation / protocol_name(args)


def configuration(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a ``--resume`` must match, as every checkpoint records them (the pretrained file by its
    sha256, so a file rewritten since counts as another); ``--seed`` only when given."""
    config = {flag(name): getattr(args, name) for name in CONFIG_FLAGS}
    config["--pretrained"] = sha256_of(Path(args.pretrained)) if args.pretrained else None
    return config if args.seed is None else {**config, "--seed": args.seed}


def read_resume(path: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``--resume`` checkpoint (None without one), refused when it continues a run of other flags."""
    if not path:
        return None
    checkpoint = checkpoints.read_resume_checkpoint(path, checkpoints.CLASSIFIER_FORMAT)
    differing = differing_flags(checkpoints.recorded(checkpoint, "config"), config)
    if differing:
        raise UsageError(
            f"--resume {path} continues a run of other {', '.join(differing)}: resume it with that run's "
            "flags, or start afresh without --resume"
        )
    return checkpoint


def train(
    args: argparse.Namespace, ctx: DistContext, run: Run, claim: ClaimedFolder, resumed: dict[str, Any] | None
) -> dict[str, Any]:
    """Build, restore, train and report in the claimed folder; the earlier run's files that
    ``--overwrite`` replaces go only once everything before training has worked."""
    say = rank0_printer(ctx)
    for line in claim.notes:
        say(line)
    data = load_data(args, ctx, run.seed)
    # Now, before training rewrites a --resume file inside --checkpoint-path: the files the run started from.
    origin = provenance(
        device=ctx.device,
        world_size=ctx.world_size,
        data_folders=[data.train.paths.data.parent, data.val.paths.data.parent],
        checkpoints={"--pretrained": args.pretrained, "--resume": args.resume},
        digests={"--pretrained": run.config["--pretrained"]},  # hashed for the resume check
    )
    classifier = build_classifier(args, ctx, data.num_class)
    progress = restore(args, resumed, classifier)
    for line in claim.discard_previous_run():
        say(line)
    progress = fit(args, ctx, run, data, classifier, progress)
    metrics = report(args, ctx, run, data, progress, origin)
    barrier()
    return metrics


class Data(NamedTuple):
    train: DownstreamDataset
    val: DownstreamDataset
    val_loader: PlannedLoader  # the evaluation clips in order, this process's piece of every batch
    num_class: int


def load_data(args: argparse.Namespace, ctx: DistContext, seed: int) -> Data:
    """Both splits, checked before any model is built (a missing file is the commonest mistake)."""
    num_class = num_classes(args.finetune_dataset)
    representation = args.finetune_skeleton_representation
    clips = Clips(
        args.data_root, args.finetune_dataset, args.protocol, num_class, representation, args.window_size, seed
    )
    train_set, val_set = clips.open("train", train=True), clips.open("val", train=False)
    if args.label_fraction is not None:
        subset = evaluation.label_subset(train_set.labels, args.label_fraction, seed, args.label_sampling)
        if not len(subset):
            raise UsageError(
                f"--label-fraction {args.label_fraction:g} of the {len(train_set)} training clips selects none"
            )
        train_set = clips.open("train", train=True, indices=subset)
    val_loader = evaluation.plan_loader(val_set, BatchPlan(np.arange(len(val_set)), args.batch_size), args.workers, ctx)
    return Data(train_set, val_set, val_loader, num_class)


class Classifier(NamedTuple):
    model: nn.Module  # wrapped for the launch mode
    optimizer: torch.optim.Optimizer
    frozen_weights: dict[str, torch.Tensor] | None  # the linear protocol's encoder, as loaded
    train_mode: bool  # train() during training epochs


def build_classifier(args: argparse.Namespace, ctx: DistContext, num_class: int) -> Classifier:
    """The encoder with a ``num_class``-way head, frozen for the linear protocol, wrapped, and its SGD."""
    linear = bool(args.pretrained) and not args.finetune
    representation, pretraining = args.finetune_skeleton_representation, args.pretrain_skeleton_representation
    model, weights = evaluation.load_encoder(
        representation, num_class, encoder_kwargs(args), args.pretrained, pretraining
    )
    if args.pretrained:
        nn.init.normal_(model.fc.weight, std=0.01)  # the linear protocol's head: N(0, 0.01), bias 0
        nn.init.zeros_(model.fc.bias)
    if linear:
        evaluation.freeze_encoder(model)
    model = wrap_model(model, ctx, trainable=True, requested_device=args.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return Classifier(model, optimizer, weights if linear else None, not linear and not args.eval_mode_training)


@dataclass
class Progress:
    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": 0.0, "epoch": 0, "predictions": None})
    history: list[dict[str, float]] = field(default_factory=list)


def restore(args: argparse.Namespace, resumed: dict[str, Any] | None, classifier: Classifier) -> Progress:
    """Model, optimizer, progress and RNG state from the ``--resume`` checkpoint (ours, or the reference's
    whose keys carry DataParallel's ``module.``); a fresh start without one."""
    if resumed is None:
        return Progress(start_epoch=args.start_epoch)
    try:
        unwrap(classifier.model).load_state_dict(checkpoints.model_state(resumed, args.resume))
        classifier.optimizer.load_state_dict(resumed["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # torch's message spans several lines
        raise UsageError(f"--resume {args.resume} does not fit this model and protocol: {reason}") from None
    predictions = resumed.get("best_predictions")
    best = {
        "top1": float(resumed.get("best_acc1", -1.0)),
        "top5": float(resumed.get("best_acc5", 0.0)),
        "epoch": int(resumed.get("best_epoch", resumed["epoch"])),
        "predictions": None if predictions is None else predictions.numpy(),
    }
    if "rng" in resumed:
        training.restore_rng_state(resumed["rng"])
    return Progress(int(resumed["epoch"]), best, list(resumed.get("history", [])))


def fit(
    args: argparse.Namespace, ctx: DistContext, run: Run, data: Data, classifier: Classifier, progress: Progress
) -> Progress:
    """Train from ``progress.start_epoch`` to ``--epochs``, evaluating and checkpointing every epoch."""
    say = rank0_printer(ctx)
    loader = evaluation.train_loader(data.train, args.batch_size, args.workers, run.seed, ctx)
    trained = sum(p.numel() for p in classifier.model.parameters() if p.requires_grad)
    say(
        f"{protocol_name(args)} {args.finetune_skeleton_representation} classification on {args.finetune_dataset} "
        f"{args.protocol}: {len(data.train)} training / {len(data.val)} evaluation clips, {data.num_class} classes, "
        f"{trained} trained parameters, device {ctx.device}, {parallel_mode(classifier.model, ctx)}"
    )
    writer = training.summary_writer(run.folder if ctx.is_main else None)
    try:
        for epoch in range(progress.start_epoch, args.epochs):
            record, predictions = one_epoch(args, ctx, run.seed, data, classifier, loader, epoch)
            if classifier.frozen_weights is not None and epoch == progress.start_epoch:
                evaluation.check_encoder_unchanged(classifier.model, classifier.frozen_weights, epoch + 1)
            progress.history.append(record)
            is_best = record["val_top1"] > progress.best["top1"]
            if is_best:
                progress.best = dict(top1=record["val_top1"], top5=record["val_top5"], epoch=epoch + 1)
                progress.best["predictions"] = predictions
            if ctx.is_main:
                save_checkpoints(args, run, classifier, progress, is_best)
                for key in record.keys() - {"epoch"}:
                    writer.add_scalar(key.replace("_", "/", 1), record[key], global_step=epoch + 1)
            say(
                f"epoch {epoch + 1}/{args.epochs} lr {record['lr']:.4g} | train loss {record['train_loss']:.4f} "
                f"top-1 {record['train_top1']:.2f} | eval loss {record['val_loss']:.4f} top-1 "
                f"{record['val_top1']:.2f} top-5 {record['val_top5']:.2f}{' (best)' if is_best else ''}"
            )
    finally:
        if writer is not None:
            writer.close()
    return progress


def one_epoch(
    args: argparse.Namespace, ctx: DistContext, seed: int, data: Data, classifier: Classifier, loader: Any, epoch: int
) -> tuple[dict[str, float], np.ndarray]:
    """One training epoch and one evaluation: the history record and the evaluation predictions."""
    lr = training.learning_rate_at(epoch, args.lr, args.epochs, args.schedule, cos=False)
    training.set_learning_rate(classifier.optimizer, lr)
    training.set_loader_epoch(loader, seed, epoch)
    desc, model = f"train {epoch + 1}/{args.epochs}", classifier.model
    trained = evaluation.train_one_epoch(
        model, loader, classifier.optimizer, ctx, desc, classifier.train_mode, args.print_freq
    )
    evaluated, predictions = evaluation.evaluate(model, data.val_loader, ctx, desc=f"eval {epoch + 1}")
    record = {"epoch": epoch + 1, "lr": lr, "train_loss": trained["loss"], "train_top1": trained["top1"]}
    record.update(val_loss=evaluated["loss"], val_top1=evaluated["top1"], val_top5=evaluated["top5"])
    return record, predictions


def best_path(args: argparse.Namespace, run: Run) -> Path:
    return run.folder / f"{args.finetune_skeleton_representation}_checkpoint.pth.tar"


def save_checkpoints(
    args: argparse.Namespace, run: Run, classifier: Classifier, progress: Progress, is_best: bool
) -> None:
    """The last epoch's state, and the best classifier when this epoch is the best (one file, linked)."""
    best = progress.best
    state = {
        "format": checkpoints.CLASSIFIER_FORMAT,
        "epoch": progress.history[-1]["epoch"],
        "state_dict": unwrap(classifier.model).state_dict(),
        "optimizer": classifier.optimizer.state_dict(),
        "best_acc1": best["top1"],
        "best_acc5": best["top5"],
        "best_epoch": best["epoch"],
        "best_predictions": None if best["predictions"] is None else torch.from_numpy(best["predictions"]),
        "history": progress.history,
        "config": {**run.config, "--seed": run.seed},
        "args": training.args_to_dict(args),
        "rng": training.capture_rng_state(),
    }
    last = run.folder / checkpoints.CLASSIFIER_LAST_CHECKPOINT
    if is_best:  # written once; the last checkpoint is a hard link (or copy) of it, as in pretraining
        atomic_copy(checkpoints.write_checkpoint(state, best_path(args, run)), last)
    else:
        checkpoints.write_checkpoint(state, last)


def report(
    args: argparse.Namespace, ctx: DistContext, run: Run, data: Data, progress: Progress, origin: dict[str, Any]
) -> dict[str, Any]:
    """The metrics (the confusion matrix and JSON from rank 0, with the provenance ``origin``) and the closing
    line."""
    best, protocol = progress.best, protocol_name(args)
    final = progress.history[-1] if progress.history else {}
    metrics: dict[str, Any] = {
        "task": "action_classification",
        "protocol": protocol,
        "top1": best["top1"],  # the best epoch's, as the reference reports it
        "top5": best["top5"],
        "best_epoch": best["epoch"],
        "final_top1": final.get("val_top1"),
        "final_top5": final.get("val_top5"),
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_class": data.num_class,
        "seed": run.seed,
        "checkpoint": str(best_path(args, run)),
        "history": progress.history,
    }
    if ctx.is_main and args.plot_dir and best["predictions"] is not None:
        metrics["plots"] = [str(plot_best(args, data, best))]
    metrics.update(provenance=origin, args=training.args_to_dict(args))
    if ctx.is_main and args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    rank0_printer(ctx)(
        f"{protocol} {args.finetune_skeleton_representation} on {args.finetune_dataset} {args.protocol}: best top-1 "
        f"{best['top1']:.2f}% top-5 {best['top5']:.2f}% at epoch {best['epoch']}/{args.epochs}"
    )
    return metrics


def plot_best(args: argparse.Namespace, data: Data, best: dict[str, Any]) -> Path:
    """The best epoch's confusion matrix."""
    return plot_confusion_matrix(
        confusion_matrix(data.val.labels, best["predictions"], data.num_class),
        action_names(args.finetune_dataset, data.num_class),
        Path(args.plot_dir) / "confusion_matrix.png",
        title=f"{protocol_name(args)} {args.finetune_skeleton_representation}, {args.finetune_dataset} "
        f"{args.protocol}: top-1 {best['top1']:.2f}% (epoch {best['epoch']})",
    )


if __name__ == "__main__":
    raise SystemExit(main())
