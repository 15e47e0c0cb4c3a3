"""What both evaluation scripts share: their flags, the downstream clips and the semi-supervised subset,
the batch plan that splits work over processes as DataParallel splits a batch over devices, freezing,
and the epochs: training, evaluation and feature extraction (in eval mode, or in train mode as the
reference extracts features). Functions take values, never the scripts' argument namespace; progress
bars show on rank 0, nothing else here prints."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from common.distributed import all_reduce_, broadcast_int, broadcast_module_state, concat_all_gather
from common.io import UsageError
from engine.args import add_data_model_runtime_args, add_optim_args
from engine.launch import DistContext, progress_bars, unwrap
from engine.pretrained import HEAD_PREFIX, load_pretrained_encoder
from engine.training import correct_counts, loader_options, seed_everything
from feeders.datasets import CheckedLoader, DownstreamDataset, split_paths
from models import ENCODERS, REPRESENTATIONS, build_encoder

FEATURE_MODES = ("eval", "train")
LABEL_SAMPLINGS = ("global", "per-class")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Flags both evaluation scripts share: the reference's optimisation flags (its scripts pass them to
    retrieval too), the checkpoints and representations, data, encoder sizes, runtime and outputs."""
    add_optim_args(parser, epochs=80, batch_size=256, lr=30.0, schedule=[50, 70], weight_decay=0.0)
    add = parser.add_argument_group("checkpoints and representations").add_argument
    add("--resume", default="", metavar="PATH", help="continue from a classifier checkpoint")
    add("--pretrained", default="", metavar="PATH", help="MoCo pretraining checkpoint; empty: a random encoder")
    pretraining = "the representation(s) --pretrained was pretrained with"
    add("--pretrain-skeleton-representation", default="seq-based", choices=REPRESENTATIONS, help=pretraining)
    evaluated = "the representation evaluated: for a pair A_and_B, A is its encoder_q and B its encoder_r"
    add("--finetune-skeleton-representation", default="seq-based", choices=tuple(ENCODERS), help=evaluated)
    add_data_model_runtime_args(parser, "--finetune-dataset")
    add = parser.add_argument_group("outputs").add_argument
    add("--metrics-json", default=None, metavar="PATH", help="write the figures to this JSON file")
    add("--plot-dir", default=None, metavar="DIR", help="write PNG figures into this folder")


def shared_seed(seed: int | None, ctx: DistContext) -> int:
    """The seed of crops, orders and subsets, the same on every rank: ``seed`` (and everything seeded
    with it), or one rank 0 draws."""
    if seed is not None:
        seed_everything(seed)
        return seed
    return broadcast_int(int(np.random.SeedSequence().entropy % 2**31), ctx.device)


@dataclass(frozen=True)
class Clips:
    """Where a downstream run's clips come from and how they are cut."""

    data_root: str
    dataset: str
    protocol: str
    num_class: int
    representation: str
    window_size: int
    seed: int

    def open(self, part: str, train: bool, indices: np.ndarray | None = None) -> DownstreamDataset:
        """The ``part`` ('train'/'val') split, random crops when ``train``; UsageError when it is empty or
        holds a label the dataset has no class for (the label file, the first bad label, the range)."""
        paths = split_paths(self.data_root, self.dataset, self.protocol, part)
        clips = DownstreamDataset(
            paths,
            ENCODERS[self.representation].view,
            train=train,
            input_size=self.window_size,
            seed=self.seed,
            indices=indices,
        )
        if len(clips) == 0:
            raise UsageError(f"the {part} split of {self.dataset}/{self.protocol} under {self.data_root} is empty")
        bad = np.flatnonzero(clips.labels >= self.num_class)
        if bad.size:
            i = int(bad[0])
            raise UsageError(
                f"{paths.label}: label {int(clips.labels[i])} of sample {clips.names[i]} is out of range; "
                f"{self.dataset} has {self.num_class} classes, labels 0 to {self.num_class - 1}"
            )
        return clips


def label_subset(labels: np.ndarray, fraction: float, seed: int, sampling: str = "global") -> np.ndarray:
    """Sorted indices of the semi-supervised protocol's training clips. 'global': int(N x fraction) clips
    drawn at random from all N, no per-class balance (the lineage's feeder: a shuffle of range(N) by NumPy's
    legacy generator, here seeded); 'per-class': round(fraction x n_c) of each class c, at least one."""
    if sampling == "global":
        return np.sort(np.random.RandomState(seed).permutation(len(labels))[: int(len(labels) * fraction)])
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(members, size=max(1, int(np.floor(fraction * len(members) + 0.5))), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass(frozen=True)
class BatchPlan:
    """Batches of ``batch_size`` over the dataset indices ``order`` (a plain loader's with one process),
    each split across processes as DataParallel splits a batch across devices (``torch.chunk``): pieces of
    ceil(len(batch) / world_size) rows, the last processes getting fewer or none, the partial last batch
    included. What depends on a batch's make-up (BatchNorm in train mode) sees what DataParallel would."""

    order: np.ndarray  # (n,) dataset indices, in the order the batches take them
    batch_size: int

    def batches(self, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """The (non-empty) index lists process ``rank`` runs, in order."""
        out = []
        for start in range(0, len(self.order), self.batch_size):
            batch = self.order[start : start + self.batch_size]
            piece = -(-len(batch) // world_size)
            if len(mine := batch[rank * piece : (rank + 1) * piece]):
                out.append([int(i) for i in mine])
        return out

    def positions(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The dataset indices of process ``rank``'s rows, in the order it produces them."""
        return np.array([i for batch in self.batches(rank, world_size) for i in batch], dtype=np.int64)


def random_order(n: int, seed: int, stream: int) -> np.ndarray:
    """A seeded permutation of range(n); ``stream`` tells apart the orders drawn from one seed."""
    return np.random.default_rng((seed, stream)).permutation(n).astype(np.int64)


class PlannedLoader(NamedTuple):
    """A loader of this process's batches of ``plan``, and the plan (to gather the results back)."""

    loader: DataLoader
    plan: BatchPlan


def plan_loader(dataset: DownstreamDataset, plan: BatchPlan, workers: int, ctx: DistContext) -> PlannedLoader:
    """This process's batches of ``plan`` (build it once: with workers it keeps them between passes);
    :func:`gather_rows` puts the results back in dataset order."""
    batches = plan.batches(ctx.rank, ctx.world_size)
    return PlannedLoader(CheckedLoader(dataset, batch_sampler=batches, **loader_options(workers, ctx.device)), plan)


def train_loader(dataset: DownstreamDataset, batch_size: int, workers: int, seed: int, ctx: DistContext) -> DataLoader:
    """Shuffled training batches of ``batch_size / world_size`` per process: under torchrun a seeded
    DistributedSampler shard, else a shuffle keyed by the loader's generator (``training.set_loader_epoch``)."""
    sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, seed=seed) if ctx.distributed else None
    return CheckedLoader(
        dataset,
        batch_size=batch_size // ctx.world_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        **loader_options(workers, ctx.device),
    )


def gather_rows(local: torch.Tensor, plan: BatchPlan, ctx: DistContext) -> torch.Tensor:
    """(n, ...) rows in dataset order on every process, from this process's rows in ``plan`` order.

    Every process knows every process's positions (the plan is deterministic), so only the rows travel:
    each pads its rows to the longest share, all are gathered, and each share is put at its positions."""
    world = ctx.world_size if ctx.distributed else 1
    shares = [torch.from_numpy(plan.positions(r, world)) for r in range(world)]
    longest = max(len(s) for s in shares)
    padded = local.new_zeros((longest, *local.shape[1:]), device=ctx.device)
    padded[: local.shape[0]] = local
    gathered = concat_all_gather(padded).reshape(world, longest, *local.shape[1:])
    out = gathered.new_empty((len(plan.order), *local.shape[1:]))
    for r, share in enumerate(shares):
        out[share.to(out.device)] = gathered[r, : len(share)]
    return out


def load_encoder(
    representation: str, num_class: int, sizes: Mapping, pretrained: str, pretrain_representation: str
) -> tuple[nn.Module, dict[str, torch.Tensor] | None]:
    """The encoder of ``representation`` (``sizes``: :func:`engine.args.encoder_kwargs`) with a
    ``num_class``-way ``fc``, and with ``pretrained`` the weights it loaded (:func:`load_pretrained_encoder`)."""
    model = build_encoder(representation, num_class, **sizes)
    if not pretrained:
        return model, None
    own = {name: sizes[name] for name in ENCODERS[representation].options}
    return model, load_pretrained_encoder(
        model, pretrained, pretrain_representation, representation, sizes["window_size"], own
    )


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_encoder(model: nn.Module) -> None:
    """Linear protocol: only ``fc`` gets gradients, and the model stays in eval mode even when something
    calls ``train()`` -- BatchNorm running statistics are pretrained weights too."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(HEAD_PREFIX)
    model.eval()
    model.train = _stay_in_eval.__get__(model)


def check_encoder_unchanged(model: nn.Module, reference: Mapping[str, torch.Tensor], epoch: int) -> None:
    """RuntimeError naming the encoder tensors (parameters or buffers) that differ from ``reference``."""
    current = unwrap(model).state_dict()
    changed = []
    for key, expected in reference.items():
        value = current[key].detach().cpu()
        if not torch.equal(value, expected):
            changed.append(f"{key} (max change {(value.double() - expected.double()).abs().max().item():.3g})")
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise RuntimeError(
            f"linear evaluation changed frozen encoder weights during epoch {epoch}: {listed}. Only fc may "
            "change: encoder parameters need requires_grad=False and the encoder must stay in eval mode "
            "(BatchNorm statistics)."
        )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    desc: str,
    train_mode: bool,
    print_freq: int = 10,
) -> dict[str, float]:
    """One epoch of cross-entropy; loss and top-1 (percent) over the clips every rank trained on. The bar
    shows the running figures every ``print_freq`` steps on rank 0."""
    model.train(train_mode)
    loss_sum = torch.zeros((), device=ctx.device)
    counts = torch.zeros(2, dtype=torch.int64, device=ctx.device)  # correct top-1, clips
    bar = progress_bars(ctx)(loader, desc)
    for i, (inputs, target) in enumerate(bar):
        target = target.to(ctx.device, non_blocking=True)
        output = model(inputs.to(ctx.device, non_blocking=True))  # (B, num_class)
        loss = nn.functional.cross_entropy(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(target)
        counts += torch.cat([correct_counts(output.detach(), target, (1,)), counts.new_tensor([len(target)])])
        if ctx.is_main and i % print_freq == 0:
            n = max(int(counts[1]), 1)
            bar.set_postfix(loss=f"{float(loss_sum) / n:.4f}", top1=f"{100.0 * int(counts[0]) / n:.2f}")
    correct, n = all_reduce_(counts).tolist()  # summed over every process under torchrun
    return {"loss": float(all_reduce_(loss_sum)) / max(n, 1), "top1": 100.0 * correct / max(n, 1)}


@contextmanager
def feature_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """``model`` in ``mode`` for the block: 'eval', or 'train' (BatchNorm normalises with each batch's
    statistics, dropout is active). Afterwards every buffer (running statistics, batch counters) and
    every module's mode are as before, so nothing the forward passes update is kept."""
    modes = [(module, module.training) for module in model.modules()]
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    for module in model.modules():  # not model.train(): freeze_encoder() pins that to eval mode
        module.training = mode == "train"
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        for module, training in modes:
            module.training = training


@torch.no_grad()
def outputs_in_order(
    model: nn.Module, data: PlannedLoader, ctx: DistContext, desc: str, mode: str = "eval", **forward: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 outputs of ``model(clips, **forward)`` and (N,) labels of the dataset of ``data``, in
    dataset order, computed in the plan's batches with the network in ``mode`` (:func:`feature_mode`).
    Under torchrun every rank must call this: each runs its share of the plan, and gets every row."""
    outputs = [torch.zeros((0, 0), device=ctx.device)]
    labels = [torch.zeros(0, dtype=torch.int64, device=ctx.device)]
    with feature_mode(model, mode):
        for inputs, target in progress_bars(ctx)(data.loader, desc):
            output = model(inputs.to(ctx.device, non_blocking=True), **forward)
            outputs.append(output.reshape(output.shape[0], -1).float())
            labels.append(target.reshape(-1).to(ctx.device).long())
    # A rank with an empty share still needs the row size to join the gather.
    width = int(all_reduce_(torch.tensor([outputs[-1].shape[1]], device=ctx.device), "max"))
    local = torch.cat([o.reshape(-1, width) for o in outputs])
    return gather_rows(local, data.plan, ctx), gather_rows(torch.cat(labels), data.plan, ctx)


def evaluate(model: nn.Module, data: PlannedLoader, ctx: DistContext, desc: str) -> tuple[dict[str, float], np.ndarray]:
    """Loss, top-1 and top-5 (percent) over the dataset of ``data`` with the network in eval mode, and the
    top-1 predictions in dataset order (every rank must call it under torchrun)."""
    network = unwrap(model)  # no DDP collectives in the forward: shares may differ by one batch
    broadcast_module_state(network)  # trained BatchNorm statistics drift apart across ranks; rank 0's are saved
    logits, labels = outputs_in_order(network, data, ctx, desc)
    top1, top5 = (100.0 * correct_counts(logits, labels, (1, 5)) / len(labels)).tolist()
    loss = float(nn.functional.cross_entropy(logits, labels))
    return {"loss": loss, "top1": top1, "top5": top5}, logits.argmax(dim=1).cpu().numpy()
