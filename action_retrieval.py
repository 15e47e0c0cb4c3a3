#!/usr/bin/env python
"""Action retrieval: cosine k-nearest-neighbour classification on frozen encoder features.

Features are the pretrained query encoder's vector before ``fc`` (``knn_eval=True``) for a centre crop of
0.95 of every training and evaluation clip; each evaluation clip takes the majority label of its ``k``
cosine-nearest training clips (``--knn-neighbours``, default 1); the figure is top-1 accuracy.
``--with-autoencoder`` adds the reference's second figure: the same KNN on the 125-d codes of an
auto-encoder trained on the training features.

Under ``torchrun`` every rank extracts the features of a disjoint strided shard of each split; rank 0
gathers them in dataset order and alone runs the KNN (and auto-encoder) and writes the outputs, while
the other ranks leave once their shards are handed over (rank 0's remaining work may outlast a
collective's timeout, so nobody waits for it).

    python action_retrieval.py --knn-neighbours 1 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from action_classification import (
    add_evaluation_args,
    build_encoder_for,
    data_parallel,
    finish_args,
    gather_shards,
    make_dataset,
    make_loader,
    run_script,
)
from common.distributed import DistContext, all_reduce_, cleanup, setup
from common.knn import knn_accuracy
from common.plots import action_names, plot_tsne
from common.training import args_to_dict, write_json_atomic
from feeders import num_classes

AE_CODE_SIZE = 125


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_evaluation_args(parser)
    knn = parser.add_argument_group("retrieval")
    knn.add_argument("--knn-neighbours", type=int, default=1, metavar="K",
                     help="number of cosine nearest neighbours that vote (default 1)")
    knn.add_argument("--knn-chunk-size", type=int, default=1024, metavar="N",
                     help="evaluation clips per similarity matrix product (memory: N x training clips)")
    knn.add_argument("--save-features", default=None, metavar="PATH",
                     help="write train/val features, labels and sample names (dataset order) to this .npz")
    knn.add_argument("--tsne-samples", type=int, default=5000, metavar="N",
                     help="evaluation clips (a seeded random subset) shown in the t-SNE plot of --plot-dir")
    ae = parser.add_argument_group("auto-encoder (the reference's second retrieval figure)")
    ae.add_argument("--with-autoencoder", action="store_true",
                    help=f"also report KNN on the {AE_CODE_SIZE}-d codes of an auto-encoder trained on the "
                         "training features")
    ae.add_argument("--ae-epochs", type=int, default=400, help="auto-encoder epochs (default 400)")
    ae.add_argument("--ae-batch-size", type=int, default=64, help="auto-encoder mini-batch size (default 64)")
    ae.add_argument("--ae-lr", type=float, default=1e-3, help="auto-encoder Adam learning rate (default 1e-3)")
    ae.add_argument("--ae-lr-step", choices=("iteration", "epoch"), default="iteration",
                    help="unit of the x0.95-every-50 decay: the reference steps its scheduler every "
                         "iteration (default); 'epoch' decays every 50 epochs")
    return parser


class FeatureAutoencoder(nn.Module):
    """The reference's auto-encoder: D -> 1024 -> 512 -> code (tanh after each) and the mirror back."""

    def __init__(self, input_size: int, code_size: int = AE_CODE_SIZE) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Tanh(),
            nn.Linear(1024, 512), nn.Tanh(),
            nn.Linear(512, code_size), nn.Tanh(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_size, 512), nn.Tanh(),
            nn.Linear(512, 1024), nn.Tanh(),
            nn.Linear(1024, input_size),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)  # (B, code_size)
        return self.decoder(code), code


class AutoencoderFit(NamedTuple):
    model: FeatureAutoencoder  # in eval mode
    train_mse: float  # mean training loss of the last epoch
    lr: float  # learning rate at the end


def train_autoencoder(features: torch.Tensor, epochs: int, *, batch_size: int = 64, lr: float = 1e-3,
                      lr_step: str = "iteration", decay_every: int = 50, seed: int = 0,
                      progress: bool = True) -> AutoencoderFit:
    """Fit a :class:`FeatureAutoencoder` to (N, D) ``features`` (on their device) with MSE and Adam; the
    learning rate is multiplied by 0.95 every ``decay_every`` scheduler steps, a step being an iteration
    (the reference) or an epoch."""
    if lr_step not in ("iteration", "epoch"):
        raise ValueError(f"lr_step must be 'iteration' or 'epoch', got {lr_step!r}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global stream
        torch.manual_seed(seed)
        model = FeatureAutoencoder(features.shape[1])
    model = model.to(features.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.95 ** (step // decay_every))
    criterion = nn.MSELoss()
    model.train()
    mean_loss = float("nan")
    for _ in tqdm(range(epochs), desc="auto-encoder", leave=False, disable=not progress, file=sys.stderr):
        order = torch.randperm(features.shape[0], generator=generator).to(features.device)
        total = torch.zeros((), device=features.device)
        for start in range(0, features.shape[0], batch_size):
            batch = features[order[start : start + batch_size]]  # (B, D)
            reconstruction, _ = model(batch)
            loss = criterion(reconstruction, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if lr_step == "iteration":
                scheduler.step()
            total += loss.detach() * batch.shape[0]
        if lr_step == "epoch":
            scheduler.step()
        mean_loss = (total / features.shape[0]).item()
    model.eval()
    return AutoencoderFit(model, mean_loss, optimizer.param_groups[0]["lr"])


@torch.no_grad()
def encode(model: FeatureAutoencoder, features: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, float]:
    """(N, code) codes in input order, and the mean reconstruction MSE."""
    codes, squared = [], 0.0
    for start in range(0, features.shape[0], batch_size):
        batch = features[start : start + batch_size]
        reconstruction, code = model(batch)
        codes.append(code)
        squared += float(((reconstruction - batch) ** 2).mean(dim=1).sum())
    return torch.cat(codes), squared / max(features.shape[0], 1)


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, ctx: DistContext, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 features before ``fc`` and (N,) labels of the whole dataset, in dataset order.

    Under torchrun ``loader`` holds this rank's shard (see ``make_loader``) and every rank must call
    this; the shards are gathered back into dataset order."""
    model.eval()
    features, labels = [], []
    for inputs, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                               disable=not ctx.is_main):
        output = model(inputs.to(ctx.device, non_blocking=True), knn_eval=True)
        features.append(output.reshape(output.shape[0], -1).float())
        labels.append(target.reshape(-1).to(ctx.device))
    n = len(loader.dataset)
    # A rank with an empty shard still needs the feature size to join the gather.
    dim = torch.tensor([features[0].shape[1] if features else 0], device=ctx.device)
    width = int(all_reduce_(dim, "max").item())
    if not features:
        features = [torch.zeros((0, width), device=ctx.device)]
        labels = [torch.zeros(0, dtype=torch.int64, device=ctx.device)]
    all_features = gather_shards(torch.cat(features), n, ctx)
    all_labels = gather_shards(torch.cat(labels).long(), n, ctx)
    return all_features.cpu().numpy(), all_labels.cpu().numpy().astype(np.int64)


def save_features(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` written to a temporary file and renamed into place (loads without pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Extract features, run KNN (and the auto-encoder); returns the metrics ``--metrics-json`` receives."""
    args = build_parser().parse_args(argv)
    if args.knn_neighbours < 1:
        raise ValueError(f"--knn-neighbours must be >= 1, got {args.knn_neighbours}")
    if args.with_autoencoder and args.ae_epochs < 1:
        raise ValueError(f"--ae-epochs must be >= 1, got {args.ae_epochs}")
    if args.resume:
        warnings.warn("--resume has no effect on retrieval (nothing is trained); ignored", stacklevel=1)
    ctx = setup(args.device)
    try:
        return _run(args, ctx)
    finally:
        cleanup()


def _run(args: argparse.Namespace, ctx: DistContext) -> dict[str, Any]:
    finish_args(args, ctx)
    device = ctx.device

    num_class = num_classes(args.finetune_dataset)
    # Both sets get the evaluation transform (centre crop 0.95), as in the reference's retrieval options.
    train_set = make_dataset(args, "train", train=False)
    val_set = make_dataset(args, "val", train=False)
    if len(train_set) < args.knn_neighbours:
        raise ValueError(f"--knn-neighbours {args.knn_neighbours} exceeds the {len(train_set)} training clips")
    if len(val_set) == 0:
        raise ValueError(f"the val split of {args.finetune_dataset}/{args.protocol} under {args.data_root} is empty")

    model, _ = build_encoder_for(args, num_class)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model = data_parallel(model, ctx)
    if ctx.is_main:
        print(f"retrieval with {args.finetune_skeleton_representation} features on {args.finetune_dataset} "
              f"{args.protocol}: {len(train_set)} training / {len(val_set)} evaluation clips, "
              f"{'pretrained ' + args.pretrained if args.pretrained else 'randomly initialised encoder'}, device "
              f"{device}" + (f", features extracted by {ctx.world_size} processes" if ctx.distributed else ""),
              flush=True)

    train_features, train_labels = extract_features(model, make_loader(train_set, args, ctx, False), ctx,
                                                    "train features")
    val_features, val_labels = extract_features(model, make_loader(val_set, args, ctx, False), ctx,
                                                 "eval features")
    if not ctx.is_main:
        return {}
    accuracy, _ = knn_accuracy(train_features, train_labels, val_features, val_labels, args.knn_neighbours,
                               chunk_size=args.knn_chunk_size, device=device)
    metrics: dict[str, Any] = {
        "task": "action_retrieval",
        "knn_top1": 100.0 * accuracy,
        "k": args.knn_neighbours,
        "feature_dim": int(train_features.shape[1]),
        "num_train": len(train_set),
        "num_val": len(val_set),
        "num_class": num_class,
    }
    summary = f"KNN (k={args.knn_neighbours}) top-1 {100.0 * accuracy:.2f}%"

    if args.with_autoencoder:
        train_t = torch.from_numpy(train_features).to(device)
        val_t = torch.from_numpy(val_features).to(device)
        auto, train_loss, _ = train_autoencoder(train_t, args.ae_epochs, batch_size=args.ae_batch_size, lr=args.ae_lr,
                                             lr_step=args.ae_lr_step, seed=args.data_seed)
        train_codes, _ = encode(auto, train_t)
        val_codes, val_loss = encode(auto, val_t)
        ae_accuracy, _ = knn_accuracy(train_codes, train_labels, val_codes, val_labels, args.knn_neighbours,
                                      chunk_size=args.knn_chunk_size, device=device)
        metrics.update({
            "knn_top1_autoencoder": 100.0 * ae_accuracy,
            "autoencoder": {"epochs": args.ae_epochs, "code_size": AE_CODE_SIZE, "lr_step": args.ae_lr_step,
                            "train_mse": train_loss, "val_mse": val_loss},
        })
        summary += f" | with auto-encoder {100.0 * ae_accuracy:.2f}%"

    if args.save_features:
        save_features(args.save_features,
                      train_features=train_features, train_labels=train_labels, train_names=np.array(train_set.names),
                      val_features=val_features, val_labels=val_labels, val_names=np.array(val_set.names))
        metrics["features"] = str(args.save_features)
    if args.plot_dir:
        rng = np.random.default_rng(args.data_seed)
        shown = np.sort(rng.permutation(len(val_set))[: args.tsne_samples])
        plot_path = Path(args.plot_dir) / "tsne.png"
        plot_tsne(val_features[shown], val_labels[shown], action_names(args.finetune_dataset, num_class), plot_path,
                  title=f"{args.finetune_skeleton_representation} features, {args.finetune_dataset} {args.protocol} "
                        f"evaluation set (t-SNE, cosine)", seed=args.data_seed)
        metrics["plots"] = [str(plot_path)]
    metrics["args"] = args_to_dict(args)
    if args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    print(f"retrieval {args.finetune_skeleton_representation} on {args.finetune_dataset} {args.protocol}: {summary}",
          flush=True)
    return metrics


if __name__ == "__main__":
    run_script(main)
