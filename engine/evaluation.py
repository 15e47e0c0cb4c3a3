"""What both evaluation scripts share: their flags, the downstream datasets and loaders, the batch plan
that shards evaluation over processes and gathers the results back, the encoder built for a protocol,
freezing and head initialisation, the training and evaluation epoch loops, feature extraction (with
the encoder in eval mode, or in train mode as the reference extracts retrieval features), and protocol
names.

Nothing here prints: the loops show progress through the ``progress`` display their caller passes
(the scripts pass :func:`engine.launch.progress_bars`), and show nothing without one.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from common.distributed import all_reduce_, broadcast_int, broadcast_module_state, concat_all_gather
from common.io import UsageError
from engine.args import (
    add_data_model_runtime_args,
    add_optim_args,
    check_window_size,
    encoder_kwargs,
    representation_arg,
)
from engine.launch import DistContext, unwrap
from engine.pretrained import HEAD_PREFIX, load_pretrained_encoder
from engine.training import seed_everything
from feeders import CheckedLoader, DownstreamDataset, split_paths

FEATURE_MODES = ("eval", "train")

# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Flags both evaluation scripts share: the reference's optimisation flags (its scripts pass them to
    retrieval too), the checkpoint and representations, data, encoder sizes, runtime and outputs."""
    add_optim_args(
        parser,
        epochs=80,
        batch_size=256,
        lr=30.0,
        schedule=[50, 70],
        weight_decay=0.0,
        lr_help="initial learning rate (the paper's recipes pass 0.1)",
    )
    optim = parser.add_argument_group("checkpoint")
    optim.add_argument(
        "--resume", default="", metavar="PATH", help="continue from a classifier checkpoint written by this script"
    )

    model = parser.add_argument_group("encoder")
    model.add_argument(
        "--pretrained",
        default="",
        metavar="PATH",
        help="MoCo pretraining checkpoint (ours or the reference's released files); "
        "empty: randomly initialised encoder",
    )
    representation_arg(
        parser,
        "--pretrain-skeleton-representation",
        "seq-based",
        help="representation(s) the checkpoint was pretrained with (default seq-based)",
    )
    representation_arg(
        parser,
        "--finetune-skeleton-representation",
        "seq-based",
        pairs=False,
        help="representation evaluated here; for a pair A_and_B, A is the pair's encoder_q "
        "and B its encoder_r (default seq-based)",
    )
    add_data_model_runtime_args(parser, "--finetune-dataset")

    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--metrics-json",
        default=None,
        metavar="PATH",
        help="write the final figures and the arguments to this JSON file",
    )
    out.add_argument("--plot-dir", default=None, metavar="DIR", help="write PNG figures into this folder")


def prepare_args(args: argparse.Namespace, ctx: DistContext) -> argparse.Namespace:
    """Seeding, and the data seed every rank shares (rank 0's when none is given)."""
    if args.seed is not None:
        seed_everything(args.seed)
    # One seed drives crops and shuffling; without --seed a fresh one is drawn (by rank 0) and recorded.
    args.data_seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    args.data_seed = broadcast_int(args.data_seed, ctx.device)
    if args.batch_size % ctx.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} (the total over all processes) must be divisible by "
            f"the {ctx.world_size} processes"
        )
    return args


def check_evaluation_flags(args: argparse.Namespace) -> None:
    """What both scripts check before starting: argparse has refused impossible numbers already."""
    check_window_size(args.window_size, (args.finetune_skeleton_representation,))
    if args.pretrained and not Path(args.pretrained).is_file():
        raise UsageError(f"--pretrained {args.pretrained}: no such checkpoint file")


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def make_dataset(
    args: argparse.Namespace, part: str, train: bool, indices: np.ndarray | None = None
) -> DownstreamDataset:
    """The ``part`` ('train'/'val') split in the evaluated representation; random crops when ``train``."""
    paths = split_paths(args.data_root, args.finetune_dataset, args.protocol, part)
    return DownstreamDataset(
        paths,
        args.finetune_skeleton_representation,
        train=train,
        input_size=args.window_size,
        seed=args.data_seed,
        indices=indices,
    )


def check_split_contents(dataset: DownstreamDataset, part: str, num_class: int, args: argparse.Namespace) -> None:
    """UsageError when a split is empty or holds a label the dataset has no class for (both scripts say the
    same: the label file, the first bad label and the range expected)."""
    if len(dataset) == 0:
        raise UsageError(f"the {part} split of {args.finetune_dataset}/{args.protocol} under {args.data_root} is empty")
    bad = np.flatnonzero(dataset.labels >= num_class)
    if bad.size:
        i = int(bad[0])
        raise UsageError(
            f"{dataset.paths.label}: label {int(dataset.labels[i])} of sample {dataset.names[i]} is "
            f"out of range; {args.finetune_dataset} has {num_class} classes, labels 0 to "
            f"{num_class - 1}"
        )


@dataclass(frozen=True)
class BatchPlan:
    """Batches of ``batch_size`` over the dataset indices ``order``, split across processes the way
    DataParallel splits a batch across GPUs: every process takes a contiguous chunk of
    ceil(batch_size / world_size) rows of each batch (the last processes may get less, or nothing).

    With one process the batches are exactly those of a plain loader over ``order``; with several, each
    batch is the union of the processes' chunks, so anything that depends on batch composition
    (BatchNorm in train mode) sees what DataParallel over that many devices would."""

    order: np.ndarray  # (n,) dataset indices, in the order the batches take them
    batch_size: int

    def batches(self, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """The (non-empty) index lists process ``rank`` runs, in order."""
        chunk = -(-self.batch_size // world_size)
        out = []
        for start in range(0, len(self.order), self.batch_size):
            batch = self.order[start : start + self.batch_size]
            mine = batch[rank * chunk : (rank + 1) * chunk]
            if len(mine):
                out.append([int(i) for i in mine])
        return out

    def positions(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The dataset indices of process ``rank``'s rows, in the order it produces them."""
        batches = self.batches(rank, world_size)
        return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, dtype=np.int64)


def evaluation_plan(n: int, batch_size: int) -> BatchPlan:
    """Dataset order, as the reference's evaluation loader (``shuffle=False``)."""
    return BatchPlan(np.arange(n, dtype=np.int64), batch_size)


def shuffled_plan(n: int, batch_size: int, seed: int) -> BatchPlan:
    """A permutation drawn from ``torch.randperm`` with a generator seeded by ``seed`` (the order of a
    shuffled training loader)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return BatchPlan(order.astype(np.int64), batch_size)


def _loader_options(args: argparse.Namespace, ctx: DistContext) -> dict[str, Any]:
    return dict(num_workers=args.workers, pin_memory=ctx.device.type == "cuda", persistent_workers=args.workers > 0)


class PlannedLoader(NamedTuple):
    """A loader of this process's batches of ``plan``, and the plan (to gather the results back)."""

    loader: DataLoader
    plan: BatchPlan


def plan_loader(
    dataset: DownstreamDataset, plan: BatchPlan, args: argparse.Namespace, ctx: DistContext
) -> PlannedLoader:
    """This process's batches of ``plan`` (build it once: with workers it keeps them between passes);
    :func:`gather_rows` puts the results back in dataset order."""
    loader = CheckedLoader(dataset, batch_sampler=plan.batches(ctx.rank, ctx.world_size), **_loader_options(args, ctx))
    return PlannedLoader(loader, plan)


def train_loader(dataset: DownstreamDataset, args: argparse.Namespace, ctx: DistContext) -> DataLoader:
    """Shuffled training batches of ``--batch-size / world_size`` per process: under torchrun a seeded
    DistributedSampler shard, else a shuffle keyed by the loader's generator (see :func:`set_loader_epoch`)."""
    generator = torch.Generator().manual_seed(args.data_seed)
    sampler = (
        DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.data_seed, drop_last=False
        )
        if ctx.distributed
        else None
    )
    return CheckedLoader(
        dataset,
        batch_size=args.batch_size // ctx.world_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=False,
        generator=generator,
        **_loader_options(args, ctx),
    )


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Shuffle order keyed by (seed, epoch): a resumed run sees the batches an uninterrupted one would."""
    dataset = loader.dataset
    if isinstance(dataset, DownstreamDataset):
        dataset.set_epoch(epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.generator.manual_seed(seed * 100_003 + epoch)


def gather_rows(local: torch.Tensor, plan: BatchPlan, ctx: DistContext) -> torch.Tensor:
    """(n, ...) rows in dataset order on every process, from this process's rows in ``plan`` order.

    Every process knows every process's positions (the plan is deterministic), so only the rows travel:
    each pads its rows to the longest share, all are gathered, and each share is put at its positions."""
    n = len(plan.order)
    world = ctx.world_size if ctx.distributed else 1
    shares = [plan.positions(r, world) for r in range(world)]
    if world == 1:
        out = local.new_empty((n, *local.shape[1:]))
        out[torch.from_numpy(shares[0]).to(local.device)] = local
        return out
    m = max(len(s) for s in shares)
    padded = local.new_zeros((m, *local.shape[1:])).to(ctx.device)
    padded[: local.shape[0]] = local.to(ctx.device)
    gathered = concat_all_gather(padded).reshape(world, m, *local.shape[1:])
    out = gathered.new_empty((n, *local.shape[1:]))
    for r, share in enumerate(shares):
        out[torch.from_numpy(share).to(out.device)] = gathered[r, : len(share)]
    return out.to(local.device)


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


def build_encoder_for(args: argparse.Namespace, num_class: int) -> tuple[nn.Module, dict[str, torch.Tensor] | None]:
    """The encoder for ``--finetune-skeleton-representation`` with a ``num_class``-way ``fc``, and, when
    ``--pretrained`` is given, the pretrained weights loaded into it (returned for later comparison)."""
    from models import build_encoder

    model = build_encoder(args.finetune_skeleton_representation, num_class, **encoder_kwargs(args))
    if not args.pretrained:
        return model, None
    weights = load_pretrained_encoder(
        model,
        args.pretrained,
        args.pretrain_skeleton_representation,
        args.finetune_skeleton_representation,
        window_size=args.window_size,
    )
    return model, weights


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


def freeze_all(model: nn.Module) -> None:
    """Retrieval: no parameter gets gradients (nothing is trained)."""
    for parameter in model.parameters():
        parameter.requires_grad = False


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


def protocol_name(args: argparse.Namespace) -> str:
    """'linear', 'fine-tuned' or 'supervised', with the label fraction when one is used."""
    if not args.pretrained:
        name = "supervised"
    elif args.finetune:
        name = "fine-tuned"
    else:
        name = "linear"
    if args.label_fraction is not None:
        name += f" ({args.label_fraction:g} of the labels)"
    return name


# ---------------------------------------------------------------------------------------------------
# Epoch loops
# ---------------------------------------------------------------------------------------------------


def correct_counts(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int]) -> torch.Tensor:
    """(len(topk),) int64 number of rows whose target is among the ``k`` highest scores of (B, C) ``output``."""
    k_max = min(max(topk), output.shape[1])
    hits = output.topk(k_max, dim=1).indices == target[:, None]  # (B, k_max)
    return torch.stack([hits[:, : min(k, k_max)].any(dim=1).sum() for k in topk])


class _Totals:
    """A loss sum and exact int64 counts accumulated on the device (float32 and int64 exist on every
    backend; the host waits only when asked for the figures)."""

    def __init__(self, counts: int, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        self.counts = torch.zeros(counts, dtype=torch.int64, device=device)

    def add(self, loss_mean: torch.Tensor, counts: torch.Tensor) -> None:
        self.loss += loss_mean.detach().float() * counts[-1]
        self.counts += counts

    def local(self) -> tuple[float, list[int]]:
        return float(self.loss), self.counts.tolist()

    def reduced(self) -> tuple[float, list[int]]:
        """Summed over every process (a collective under torchrun)."""
        return float(all_reduce_(self.loss.clone())), all_reduce_(self.counts.clone()).tolist()


class Quiet:
    """The progress display that shows nothing (the loops' default): iterates, ignores figures."""

    def __init__(self, iterable: Iterable[Any], desc: str = "") -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable)

    def set_postfix(self, **figures: Any) -> None:
        pass


# A progress display: called with an iterable and a description, it iterates like it and takes the
# running figures through ``set_postfix(**figures)`` (tqdm's interface).
Progress = Callable[[Iterable[Any], str], Any]


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    desc: str,
    train_mode: bool,
    print_freq: int = 10,
    progress: Progress = Quiet,
) -> dict[str, float]:
    """One epoch; loss and top-1 (percent) over the clips every rank trained on. ``progress`` shows
    the running figures every ``print_freq`` steps on rank 0."""
    device = ctx.device
    model.train(train_mode)
    totals = _Totals(2, device)  # correct top-1, clips
    bar = progress(loader, desc)
    for i, (inputs, target) in enumerate(bar):
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        output = model(inputs)  # (B, num_class)
        loss = criterion(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = torch.tensor([inputs.shape[0]], dtype=torch.int64, device=device)
        totals.add(loss, torch.cat([correct_counts(output.detach(), target, (1,)), n]))
        if ctx.is_main and print_freq > 0 and i % print_freq == 0:
            loss_sum, (correct, count) = totals.local()
            bar.set_postfix(loss=f"{loss_sum / count:.4f}", top1=f"{100.0 * correct / count:.2f}")
    loss_sum, (correct, count) = totals.reduced()
    count = max(count, 1)
    return {"loss": loss_sum / count, "top1": 100.0 * correct / count}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: PlannedLoader,
    criterion: nn.Module,
    ctx: DistContext,
    desc: str = "eval",
    progress: Progress = Quiet,
) -> tuple[dict[str, float], np.ndarray]:
    """Loss, top-1 and top-5 (percent) over the dataset of ``data``, and the top-1 predictions in dataset
    order. Under torchrun every rank must call this: each runs its share of the plan, and correct counts
    are summed over ranks (exactly one process's figures)."""
    device = ctx.device
    network = unwrap(model)  # no DDP collectives in the forward: shares may differ by one batch
    if ctx.distributed:
        # Trained BatchNorm statistics drift apart across ranks; rank 0's are those saved.
        broadcast_module_state(network)
    network.eval()
    totals = _Totals(3, device)  # top-1, top-5 correct, clips
    predictions = []
    for inputs, target in progress(data.loader, desc):
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        output = network(inputs)  # (B, num_class)
        n = torch.tensor([inputs.shape[0]], dtype=torch.int64, device=device)
        totals.add(criterion(output, target), torch.cat([correct_counts(output, target, (1, 5)), n]))
        predictions.append(output.argmax(dim=1))
    local = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64, device=device)
    preds = gather_rows(local, data.plan, ctx).cpu().numpy()
    loss_sum, (top1, top5, count) = totals.reduced()
    count = max(count, 1)
    return {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count}, preds


# ---------------------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------------------


@contextmanager
def batch_statistics_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in train mode (BatchNorm normalises with each batch's statistics, dropout is active) for
    the duration of the block; afterwards every buffer (running statistics, batch counters) and every
    module's mode are as before, so nothing the forward passes update is kept."""
    modes = [(module, module.training) for module in model.modules()]
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    for module in model.modules():  # not model.train(): freeze_encoder() pins that to eval mode
        module.training = True
    try:
        yield model
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        for module, mode in modes:
            module.training = mode


@torch.no_grad()
def extract_features(
    model: nn.Module, data: PlannedLoader, ctx: DistContext, desc: str, mode: str = "eval", progress: Progress = Quiet
) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 features before ``fc`` and (N,) labels of the dataset of ``data``, in dataset order,
    computed in the plan's batches with the encoder in ``mode`` ('eval': running statistics, no dropout; 'train':
    batch statistics and dropout, as the reference extracts them -- see :func:`batch_statistics_mode`).

    Under torchrun every rank must call this; each runs its share of the plan."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode must be one of {', '.join(FEATURE_MODES)}, got {mode!r}")
    features, labels = [], []
    with _feature_mode(model, mode):
        for inputs, target in progress(data.loader, desc):
            output = model(inputs.to(ctx.device, non_blocking=True), knn_eval=True)
            features.append(output.reshape(output.shape[0], -1).float())
            labels.append(target.reshape(-1).to(ctx.device))
    # A rank with an empty share still needs the feature size to join the gather.
    dim = torch.tensor([features[0].shape[1] if features else 0], device=ctx.device)
    width = int(all_reduce_(dim, "max").item())
    if not features:
        features = [torch.zeros((0, width), device=ctx.device)]
        labels = [torch.zeros(0, dtype=torch.int64, device=ctx.device)]
    all_features = gather_rows(torch.cat(features), data.plan, ctx)
    all_labels = gather_rows(torch.cat(labels).long(), data.plan, ctx)
    return all_features.cpu().numpy(), all_labels.cpu().numpy().astype(np.int64)


@contextmanager
def _feature_mode(model: nn.Module, mode: str) -> Iterator[None]:
    if mode == "train":
        with batch_statistics_mode(model):
            yield
        return
    was_training = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in was_training:
            module.training = training
