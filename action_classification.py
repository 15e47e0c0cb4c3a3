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
Under torchrun each rank trains on its DistributedSampler shard and evaluates a disjoint strided shard of
the evaluation clips; correct counts are summed across ranks, so top-1/top-5 equal a single process's.
Only rank 0 prints and writes files.

    python action_classification.py --lr 0.1 --batch-size 64 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from common.args import (
    add_data_args,
    add_model_size_args,
    add_optim_args,
    add_runtime_args,
    check_window_size,
    encoder_kwargs,
    representation_arg,
)
from common.checkpoints import HEAD_PREFIX, load_pretrained_encoder, model_state, read_checkpoint
from common.distributed import (
    DistContext,
    all_reduce_,
    barrier,
    broadcast_int,
    broadcast_module_state,
    cleanup,
    concat_all_gather,
    env_is_main_process,
    setup,
)
from common.plots import action_names, confusion_matrix, plot_confusion_matrix
from common.training import (
    args_to_dict,
    atomic_torch_save,
    capture_rng_state,
    learning_rate_at,
    restore_rng_state,
    seed_everything,
    set_learning_rate,
    summary_writer,
    write_json_atomic,
)
from feeders import DownstreamDataset, num_classes, split_paths, stratified_subset

# ---------------------------------------------------------------------------------------------------
# Shared with action_retrieval.py
# ---------------------------------------------------------------------------------------------------


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Flags both evaluation scripts share: the reference's optimisation flags (its scripts pass them to
    retrieval too), the checkpoint and representations, data, encoder sizes, runtime and outputs."""
    add_optim_args(parser, epochs=80, batch_size=256, lr=30.0, schedule=[50, 70], weight_decay=0.0,
                   lr_help="initial learning rate (the paper's recipes pass 0.1)")
    optim = parser.add_argument_group("checkpoint")
    optim.add_argument("--resume", default="", metavar="PATH",
                       help="continue from a classifier checkpoint written by this script")

    model = parser.add_argument_group("encoder")
    model.add_argument("--pretrained", default="", metavar="PATH",
                       help="MoCo pretraining checkpoint (ours or the reference's released files); "
                            "empty: randomly initialised encoder")
    representation_arg(parser, "--pretrain-skeleton-representation", "seq-based",
                       help="representation(s) the checkpoint was pretrained with (default seq-based)")
    representation_arg(parser, "--finetune-skeleton-representation", "seq-based", pairs=False,
                       help="representation evaluated here; for a pair A_and_B, A is the pair's encoder_q "
                            "and B its encoder_r (default seq-based)")
    add_data_args(parser, "--finetune-dataset")
    add_model_size_args(parser)
    add_runtime_args(parser)

    out = parser.add_argument_group("outputs")
    out.add_argument("--metrics-json", default=None, metavar="PATH",
                     help="write the final figures and the arguments to this JSON file")
    out.add_argument("--plot-dir", default=None, metavar="DIR", help="write PNG figures into this folder")


def unwrap(model: nn.Module) -> nn.Module:
    """The encoder inside a DataParallel or DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def data_parallel(model: nn.Module, ctx: DistContext, trainable: bool = False) -> nn.Module:
    """Move to ``ctx.device`` and wrap: under torchrun, DDP when ``trainable`` (inference needs no
    wrapper) after making every rank's weights rank 0's; in one process, DataParallel over every visible
    GPU as the reference does when asked for plain ``cuda`` (a specific ``cuda:N`` keeps to that one)."""
    device = ctx.device
    model = model.to(device)
    if ctx.distributed:
        # Without --seed each rank initialised its own random weights.
        broadcast_module_state(model)
        if trainable:
            ids = [device.index] if device.type == "cuda" else None
            # DDP registers only parameters with requires_grad (the linear protocol's fc), so a frozen
            # encoder needs no find_unused_parameters.
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        model = nn.DataParallel(model)
    return model


def shard(n: int, ctx: DistContext) -> range:
    """This rank's share of ``range(n)`` for evaluation: every ``world_size``-th index from ``rank`` --
    disjoint, no padding, so counts summed over ranks are those of one process."""
    return range(ctx.rank, n, ctx.world_size)


def gather_shards(local: torch.Tensor, n: int, ctx: DistContext) -> torch.Tensor:
    """Reassemble (len(shard(n)), ...) per-rank results into (n, ...) in dataset order on every rank.

    Shards differ in length by at most one: each is padded to ceil(n / world), gathered in rank order
    (world, m, ...), and interleaved back (item ``i`` lives at rank ``i % world``, row ``i // world``)."""
    if not ctx.distributed or ctx.world_size == 1:
        return local
    world = ctx.world_size
    m = -(-n // world)
    padded = local.new_zeros((m, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = concat_all_gather(padded.to(ctx.device)).reshape(world, m, *local.shape[1:])
    return gathered.transpose(0, 1).reshape(world * m, *local.shape[1:])[:n].to(local.device)


def make_dataset(args: argparse.Namespace, part: str, train: bool,
                 indices: np.ndarray | None = None) -> DownstreamDataset:
    """The ``part`` ('train'/'val') split in the evaluated representation; random crops when ``train``."""
    paths = split_paths(args.data_root, args.finetune_dataset, args.protocol, part)
    return DownstreamDataset(paths, args.finetune_skeleton_representation, train=train,
                             input_size=args.window_size, seed=args.data_seed, indices=indices)


def make_loader(dataset: DownstreamDataset, args: argparse.Namespace, ctx: DistContext,
                shuffle: bool) -> DataLoader:
    """Training (``shuffle``): under torchrun a seeded DistributedSampler shard, else a shuffle keyed by
    the loader's generator. Evaluation: this rank's :func:`shard`, in order. Batches of
    ``--batch-size / world_size`` per process."""
    generator = torch.Generator()
    generator.manual_seed(args.data_seed)
    if shuffle and ctx.distributed:
        sampler: Any = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=args.data_seed, drop_last=False)
    elif shuffle:
        sampler = None
    else:
        sampler = shard(len(dataset), ctx)
    return DataLoader(dataset, batch_size=args.batch_size // ctx.world_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=args.workers, pin_memory=ctx.device.type == "cuda",
                      drop_last=False, generator=generator, persistent_workers=args.workers > 0)


def build_encoder_for(args: argparse.Namespace, num_class: int) -> tuple[nn.Module, dict[str, torch.Tensor] | None]:
    """The encoder for ``--finetune-skeleton-representation`` with a ``num_class``-way ``fc``, and, when
    ``--pretrained`` is given, the pretrained weights loaded into it (returned for later comparison)."""
    from models import build_encoder

    model = build_encoder(args.finetune_skeleton_representation, num_class, **encoder_kwargs(args))
    if not args.pretrained:
        return model, None
    weights = load_pretrained_encoder(model, args.pretrained, args.pretrain_skeleton_representation,
                                      args.finetune_skeleton_representation, window_size=args.window_size)
    return model, weights


def finish_args(args: argparse.Namespace, ctx: DistContext) -> argparse.Namespace:
    """Checks and derived values shared by both scripts."""
    if args.seed is not None:
        seed_everything(args.seed)
    # One seed drives crops and shuffling; without --seed a fresh one is drawn (by rank 0) and recorded.
    args.data_seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    args.data_seed = broadcast_int(args.data_seed, ctx.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {args.batch_size} (the total over all processes) must be divisible by "
                         f"the {ctx.world_size} processes")
    if args.workers < 0:
        raise ValueError(f"-j/--workers must be >= 0, got {args.workers}")
    check_window_size(args.window_size, (args.finetune_skeleton_representation,))
    if args.pretrained and not Path(args.pretrained).is_file():
        raise FileNotFoundError(f"--pretrained {args.pretrained}: no such checkpoint file")
    return args


# ---------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_evaluation_args(parser)
    mode = parser.add_argument_group("protocol")
    mode.add_argument("--finetune", action="store_true",
                      help="train the whole network from the pretrained weights instead of a linear classifier")
    mode.add_argument("--label-fraction", type=float, default=None, metavar="F",
                      help="train on a seeded class-stratified fraction F of the training clips, at least one "
                           "per class (semi-supervised protocol, e.g. 0.01 or 0.1)")
    mode.add_argument("--eval-mode-training", action="store_true",
                      help="keep the network in eval mode while training also for --finetune and the supervised "
                           "baseline, as the reference does (its BatchNorm then never updates its statistics)")
    parser.add_argument("--checkpoint-path", default="./runs/action_classification", metavar="DIR",
                        help="folder for the best classifier (<representation>_checkpoint.pth.tar), the last "
                             "epoch's (last_checkpoint.pth.tar) and the TensorBoard events")
    return parser


def init_head(model: nn.Module) -> None:
    """The linear protocol's classifier initialisation: weights N(0, 0.01), bias 0."""
    with torch.no_grad():
        model.fc.weight.normal_(mean=0.0, std=0.01)
        model.fc.bias.zero_()


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_encoder(model: nn.Module) -> None:
    """Linear protocol: only ``fc`` gets gradients, and the model stays in eval mode even when something
    calls ``train()`` -- BatchNorm running statistics are pretrained weights too."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(HEAD_PREFIX)
    model.eval()
    model.train = types.MethodType(_stay_in_eval, model)


def check_encoder_unchanged(model: nn.Module, reference: Mapping[str, torch.Tensor], epoch: int) -> None:
    """Raise RuntimeError naming the encoder tensors (parameters or buffers) that differ from ``reference``."""
    current = unwrap(model).state_dict()
    changed = []
    for key, expected in reference.items():
        value = current[key].detach().cpu()
        if value.shape != expected.shape or not torch.equal(value, expected):
            delta = (value.double() - expected.double()).abs().max().item() if value.shape == expected.shape else None
            changed.append(f"{key} (max change {delta:.3g})" if delta is not None else f"{key} (shape changed)")
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise RuntimeError(
            f"linear evaluation changed frozen encoder weights during epoch {epoch}: {listed}. Only fc may "
            "change: encoder parameters need requires_grad=False and the encoder must stay in eval mode "
            "(BatchNorm statistics)."
        )


def _correct_counts(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int]) -> torch.Tensor:
    """(len(topk),) number of rows whose target is among the ``k`` highest scores of (B, C) ``output``."""
    k_max = min(max(topk), output.shape[1])
    hits = output.topk(k_max, dim=1).indices == target[:, None]  # (B, k_max)
    return torch.stack([hits[:, : min(k, k_max)].any(dim=1).sum() for k in topk])


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    ctx: DistContext, epoch: int, args: argparse.Namespace, train_mode: bool) -> dict[str, float]:
    """One epoch; loss and top-1 (percent) over the clips every rank trained on."""
    device = ctx.device
    model.train(train_mode)
    # loss sum, correct top-1, clips: kept on the device so the host waits only at the postfix
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    bar = tqdm(loader, desc=f"train {epoch + 1}/{args.epochs}", leave=False, dynamic_ncols=True, file=sys.stderr,
               disable=not ctx.is_main)
    for i, (inputs, target) in enumerate(bar):
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        output = model(inputs)  # (B, num_class)
        loss = criterion(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = inputs.shape[0]
        totals += torch.stack([loss.detach().double() * n, _correct_counts(output.detach(), target, (1,))[0].double(),
                               torch.tensor(float(n), dtype=torch.float64, device=device)])
        if ctx.is_main and args.print_freq > 0 and i % args.print_freq == 0:
            loss_sum, correct, count = totals.tolist()
            bar.set_postfix(loss=f"{loss_sum / count:.4f}", top1=f"{100.0 * correct / count:.2f}")
    loss_sum, correct, count = all_reduce_(totals).tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": 100.0 * correct / count}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, ctx: DistContext,
             desc: str = "eval") -> tuple[dict[str, float], np.ndarray]:
    """Loss, top-1 and top-5 (percent) over the whole evaluation set, and the top-1 predictions in dataset
    order. Under torchrun ``loader`` holds this rank's :func:`shard`; every rank must call this, and every
    rank gets the totals (correct counts summed over ranks: exactly one process's figures)."""
    device = ctx.device
    network = unwrap(model)  # no DDP collectives in the forward: shards may differ by one batch
    if ctx.distributed:
        # Trained BatchNorm statistics drift apart across ranks; rank 0's are those saved.
        broadcast_module_state(network)
    network.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1, top-5 correct, clips
    predictions = []
    for inputs, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                               disable=not ctx.is_main):
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        output = network(inputs)  # (B, num_class)
        n = inputs.shape[0]
        loss = criterion(output, target).double() * n  # the batch mean back to a sum
        totals += torch.cat([loss.double().reshape(1), _correct_counts(output, target, (1, 5)).double(),
                             torch.tensor([float(n)], dtype=torch.float64, device=device)])
        predictions.append(output.argmax(dim=1))
    local = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64, device=device)
    preds = gather_shards(local, len(loader.dataset), ctx).cpu().numpy()
    loss_sum, top1, top5, count = all_reduce_(totals).tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count}, preds


def _protocol_name(args: argparse.Namespace) -> str:
    if not args.pretrained:
        name = "supervised"
    elif args.finetune:
        name = "fine-tuned"
    else:
        name = "linear"
    if args.label_fraction is not None:
        name += f" ({args.label_fraction:g} of the labels)"
    return name


def _checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, best: dict[str, Any],
                      history: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "state_dict": unwrap(model).state_dict(),
        "best_acc1": best["top1"],
        "best_acc5": best["top5"],
        "best_epoch": best["epoch"],
        "optimizer": optimizer.state_dict(),
        "history": history,
        "args": args_to_dict(args),
        "rng": capture_rng_state(),
    }


def resume(path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any], list]:
    """Restore model, optimizer and progress from a classifier checkpoint (ours, or the reference's whose
    keys carry DataParallel's ``module.``)."""
    checkpoint = read_checkpoint(path)
    for key in ("epoch", "state_dict", "optimizer"):
        if key not in checkpoint:
            raise ValueError(f"--resume {path}: not a classifier checkpoint (no {key!r} entry)")
    try:
        unwrap(model).load_state_dict(model_state(checkpoint, path))
    except RuntimeError as exc:
        raise ValueError(f"--resume {path} does not fit this model: {exc}") from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    best = {"top1": float(checkpoint.get("best_acc1", -1.0)), "top5": float(checkpoint.get("best_acc5", 0.0)),
            "epoch": int(checkpoint.get("best_epoch", checkpoint["epoch"])), "predictions": None}
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"])
    return int(checkpoint["epoch"]), best, list(checkpoint.get("history", []))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the protocol; returns the metrics that ``--metrics-json`` receives (on every rank)."""
    args = build_parser().parse_args(argv)
    if args.finetune and not args.pretrained:
        raise ValueError("--finetune needs --pretrained (without it the network is trained from scratch anyway)")
    if args.label_fraction is not None and not 0.0 < args.label_fraction <= 1.0:
        raise ValueError(f"--label-fraction must lie in (0, 1], got {args.label_fraction}")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    ctx = setup(args.device)
    try:
        metrics = _run(args, ctx)
        barrier()
        return metrics
    finally:
        cleanup()


def _run(args: argparse.Namespace, ctx: DistContext) -> dict[str, Any]:
    finish_args(args, ctx)
    device = ctx.device
    linear = bool(args.pretrained) and not args.finetune
    say = print if ctx.is_main else (lambda *a, **k: None)

    # Data first: a missing file is the commonest mistake and the cheapest to report.
    num_class = num_classes(args.finetune_dataset)
    train_set = make_dataset(args, "train", train=True)
    if args.label_fraction is not None:
        subset = stratified_subset(train_set.labels, args.label_fraction, seed=args.data_seed)
        train_set = make_dataset(args, "train", train=True, indices=subset)
    val_set = make_dataset(args, "val", train=False)
    for part, dataset in (("train", train_set), ("val", val_set)):
        if len(dataset) == 0:
            raise ValueError(f"the {part} split of {args.finetune_dataset}/{args.protocol} under {args.data_root} is empty")
        if dataset.labels.max() >= num_class:
            raise ValueError(f"{dataset.paths.label}: label {dataset.labels.max()} out of range for "
                             f"{args.finetune_dataset} ({num_class} classes)")

    model, pretrained_weights = build_encoder_for(args, num_class)
    if args.pretrained:
        init_head(model)
    if linear:
        freeze_encoder(model)
    model = data_parallel(model, ctx, trainable=True)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    criterion = nn.CrossEntropyLoss()

    best: dict[str, Any] = {"top1": -1.0, "top5": 0.0, "epoch": 0, "predictions": None}
    history: list[dict[str, float]] = []
    if args.resume:
        args.start_epoch, best, history = resume(args.resume, model, optimizer)

    train_loader = make_loader(train_set, args, ctx, shuffle=True)
    val_loader = make_loader(val_set, args, ctx, shuffle=False)
    out_dir = Path(args.checkpoint_path)
    best_path = out_dir / f"{args.finetune_skeleton_representation}_checkpoint.pth.tar"
    writer = summary_writer(out_dir if ctx.is_main else None)
    train_mode = not linear and not args.eval_mode_training
    protocol = _protocol_name(args)
    mode = (f"DistributedDataParallel over {ctx.world_size} processes" if ctx.distributed
            else f"DataParallel over {torch.cuda.device_count()} GPUs" if isinstance(model, nn.DataParallel)
            else "single device")
    say(f"{protocol} {args.finetune_skeleton_representation} classification on {args.finetune_dataset} "
          f"{args.protocol}: {len(train_set)} training / {len(val_set)} evaluation clips, {num_class} classes, "
          f"{sum(p.numel() for p in parameters)} trained parameters, device {device}, {mode}", flush=True)
    try:
        for epoch in range(args.start_epoch, args.epochs):
            lr = learning_rate_at(epoch, args.lr, args.epochs, args.schedule, cos=False)
            set_learning_rate(optimizer, lr)
            train_set.set_epoch(epoch)
            # Shuffle order keyed by (seed, epoch): a resumed run sees the batches an uninterrupted one would.
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            else:
                train_loader.generator.manual_seed(args.data_seed * 100_003 + epoch)
            train_stats = train_one_epoch(model, train_loader, criterion, optimizer, ctx, epoch, args, train_mode)
            val_stats, predictions = evaluate(model, val_loader, criterion, ctx, desc=f"eval {epoch + 1}")
            if linear and epoch == args.start_epoch:
                check_encoder_unchanged(model, pretrained_weights, epoch + 1)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_stats["loss"],
                      "train_top1": train_stats["top1"], "val_loss": val_stats["loss"],
                      "val_top1": val_stats["top1"], "val_top5": val_stats["top5"]}
            history.append(record)
            is_best = val_stats["top1"] > best["top1"]
            if is_best:
                best = {"top1": val_stats["top1"], "top5": val_stats["top5"], "epoch": epoch + 1,
                        "predictions": predictions}
            if ctx.is_main:
                state = _checkpoint_state(model, optimizer, epoch, best, history, args)
                if is_best:
                    atomic_torch_save(state, best_path)
                atomic_torch_save(state, out_dir / "last_checkpoint.pth.tar")
            if writer is not None:
                for key, value in record.items():
                    if key != "epoch":
                        writer.add_scalar(key.replace("_", "/", 1), value, global_step=epoch + 1)
            say(f"epoch {epoch + 1}/{args.epochs} lr {lr:.4g} | train loss {train_stats['loss']:.4f} "
                  f"top-1 {train_stats['top1']:.2f} | eval loss {val_stats['loss']:.4f} top-1 {val_stats['top1']:.2f} "
                  f"top-5 {val_stats['top5']:.2f}{' (best)' if is_best else ''}", flush=True)
    finally:
        if writer is not None:
            writer.close()

    final = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "task": "action_classification",
        "protocol": protocol,
        "top1": best["top1"],
        "top5": best["top5"],
        "best_epoch": best["epoch"],
        "final_top1": final.get("val_top1"),
        "final_top5": final.get("val_top5"),
        "num_train": len(train_set),
        "num_val": len(val_set),
        "num_class": num_class,
        "checkpoint": str(best_path),
        "history": history,
        "args": args_to_dict(args),
    }
    # Rank 0's answer: a file only rank 0 wrote may be invisible on other machines.
    if args.plot_dir and best["predictions"] is None and broadcast_int(best_path.is_file(), ctx.device):
        # Resumed past the best epoch: recompute its predictions from the saved best classifier (rank 0's
        # file; evaluate() hands its weights to the other ranks).
        if ctx.is_main:
            unwrap(model).load_state_dict(model_state(read_checkpoint(best_path), best_path))
        _, best["predictions"] = evaluate(model, val_loader, criterion, ctx, desc="eval best")
    if ctx.is_main and args.plot_dir and best["predictions"] is not None:
        names = action_names(args.finetune_dataset, num_class)
        counts = confusion_matrix(val_set.labels, best["predictions"], num_class)
        plot_path = Path(args.plot_dir) / "confusion_matrix.png"
        plot_confusion_matrix(counts, names, plot_path,
                              title=f"{protocol} {args.finetune_skeleton_representation}, {args.finetune_dataset} "
                                    f"{args.protocol}: top-1 {best['top1']:.2f}% (epoch {best['epoch']})")
        metrics["plots"] = [str(plot_path)]
    if ctx.is_main and args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    say(f"{protocol} {args.finetune_skeleton_representation} on {args.finetune_dataset} {args.protocol}: "
          f"best top-1 {best['top1']:.2f}% top-5 {best['top5']:.2f}% at epoch {best['epoch']}/{args.epochs}",
          flush=True)
    return metrics


def run_script(entry: Any) -> None:
    """Command-line entry point shared by both scripts: input errors become one line, from rank 0 only
    under torchrun (the other ranks exit with status 2 silently)."""
    try:
        entry()
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}" if env_is_main_process() else 2) from None


if __name__ == "__main__":
    run_script(main)
