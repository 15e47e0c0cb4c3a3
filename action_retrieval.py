#!/usr/bin/env python
"""Action retrieval: cosine k-nearest-neighbour classification on frozen encoder features.

Features are the pretrained query encoder's vector before ``fc`` (``knn_eval=True``) for a centre crop of
0.95 of every training and evaluation clip; each evaluation clip takes the majority label of its ``k``
cosine-nearest training clips (``--knn-neighbours``, default 1); the figure is top-1 accuracy.
``--feature-mode eval`` (default) extracts them with the encoder in eval mode; ``--feature-mode train``
as the reference does, in train mode: BatchNorm normalises with each batch's statistics, dropout is
active (seeded), the training clips come in a seeded shuffled order and the evaluation clips in order,
``--batch-size`` per batch; nothing the forward passes update is kept.
``--with-autoencoder`` adds the reference's second figure: the same KNN on the 125-d codes of an
auto-encoder trained on the training features.

Under ``torchrun`` every rank extracts the features of its chunk of every batch (DataParallel's split
of a batch over devices); the features are gathered back in dataset order, rank 0 alone runs the KNN
(and auto-encoder) and writes the outputs, and the other ranks leave once their shares are handed over
(rank 0's remaining work may outlast a collective's timeout, so nobody waits for it).

    python action_retrieval.py --knn-neighbours 1 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common import cli
from common.io import UsageError, atomic_save_npz, write_json_atomic
from engine import evaluation
from engine.args import positive_float, positive_int
from engine.evaluation import BatchPlan
from engine.knn import knn_accuracy
from engine.launch import DistContext, process_context, progress_bars, wrap_model
from engine.plots import TSNE_MIN_SAMPLES, action_names, plot_tsne
from engine.training import args_to_dict
from feeders import DownstreamDataset, num_classes

PROG = "action_retrieval.py"
AE_CODE_SIZE = 125


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluation.add_evaluation_args(parser)
    knn = parser.add_argument_group("retrieval")
    knn.add_argument(
        "--knn-neighbours",
        type=positive_int,
        default=1,
        metavar="K",
        help="number of cosine nearest neighbours that vote (default 1)",
    )
    knn.add_argument(
        "--knn-chunk-size",
        type=positive_int,
        default=1024,
        metavar="N",
        help="evaluation clips per similarity matrix product (memory: N x training clips)",
    )
    knn.add_argument(
        "--feature-mode",
        choices=evaluation.FEATURE_MODES,
        default="eval",
        help="encoder mode during feature extraction: 'eval' (running BatchNorm statistics, no "
        "dropout) or 'train', the reference's computation (each batch's BatchNorm statistics, "
        "seeded dropout, training clips in a seeded shuffled order, batches of --batch-size); "
        "see docs/evaluation.md, Feature mode",
    )
    knn.add_argument(
        "--save-features",
        default=None,
        metavar="PATH",
        help="write train/val features, labels and sample names (dataset order) to this .npz",
    )
    knn.add_argument(
        "--tsne-samples",
        type=positive_int,
        default=5000,
        metavar="N",
        help="evaluation clips (a seeded random subset) shown in the t-SNE plot of --plot-dir",
    )
    ae = parser.add_argument_group("auto-encoder (the reference's second retrieval figure)")
    ae.add_argument(
        "--with-autoencoder",
        action="store_true",
        help=f"also report KNN on the {AE_CODE_SIZE}-d codes of an auto-encoder trained on the training features",
    )
    ae.add_argument("--ae-epochs", type=positive_int, default=400, help="auto-encoder epochs (default 400)")
    ae.add_argument("--ae-batch-size", type=positive_int, default=64, help="auto-encoder mini-batch size (default 64)")
    ae.add_argument("--ae-lr", type=positive_float, default=1e-3, help="auto-encoder Adam learning rate (default 1e-3)")
    ae.add_argument(
        "--ae-lr-step",
        choices=("iteration", "epoch"),
        default="iteration",
        help="unit of the x0.95-every-50 decay: the reference steps its scheduler every "
        "iteration (default); 'epoch' decays every 50 epochs",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: extract, retrieve, report; 0 on success, 2 (and one line on stderr) on bad input."""
    return cli.run_main(PROG, build_parser(), run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract features, run KNN (and the auto-encoder); returns the metrics ``--metrics-json`` receives
    (rank 0; an empty dict on the other ranks under torchrun)."""
    check_flags(args)
    with process_context(args.device) as ctx:
        evaluation.prepare_args(args, ctx)
        data = load_data(args)
        model = build_model(args, ctx, data)
        features = extract(args, ctx, data, model)
        return report(args, ctx, data, features) if ctx.is_main else {}


def check_flags(args: argparse.Namespace) -> None:
    """What argparse cannot check (before anything is read)."""
    evaluation.check_evaluation_flags(args)
    if args.plot_dir and args.tsne_samples < TSNE_MIN_SAMPLES:
        raise UsageError(
            f"--tsne-samples {args.tsne_samples}: the t-SNE plot of --plot-dir needs at least {TSNE_MIN_SAMPLES} clips"
        )
    if args.resume:
        warnings.warn("--resume has no effect on retrieval (nothing is trained); ignored", stacklevel=1)


# ---------------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------------


class Data(NamedTuple):
    train: DownstreamDataset
    val: DownstreamDataset
    num_class: int


def load_data(args: argparse.Namespace) -> Data:
    """Both splits with the evaluation transform (centre crop 0.95), as in the reference's retrieval
    options; checked before any model is built."""
    num_class = num_classes(args.finetune_dataset)
    train_set = evaluation.make_dataset(args, "train", train=False)
    val_set = evaluation.make_dataset(args, "val", train=False)
    for part, dataset in (("train", train_set), ("val", val_set)):
        evaluation.check_split_contents(dataset, part, num_class, args)
    if args.plot_dir and len(val_set) < TSNE_MIN_SAMPLES:
        raise UsageError(
            f"{val_set.paths.data} holds {len(val_set)} clips; the t-SNE plot of --plot-dir needs at "
            f"least {TSNE_MIN_SAMPLES}"
        )
    if len(train_set) < args.knn_neighbours:
        raise UsageError(f"--knn-neighbours {args.knn_neighbours} exceeds the {len(train_set)} training clips")
    return Data(train_set, val_set, num_class)


def build_model(args: argparse.Namespace, ctx: DistContext, data: Data) -> nn.Module:
    """The (pretrained or randomly initialised) encoder, frozen, on the device."""
    model, _ = evaluation.build_encoder_for(args, data.num_class)
    evaluation.freeze_all(model)
    model = wrap_model(model, ctx, trainable=False, requested_device=args.device)
    if ctx.is_main:
        source = f"pretrained {args.pretrained}" if args.pretrained else "randomly initialised encoder"
        shared = f", features extracted by {ctx.world_size} processes" if ctx.distributed else ""
        print(
            f"retrieval with {args.finetune_skeleton_representation} features on {args.finetune_dataset} "
            f"{args.protocol}: {len(data.train)} training / {len(data.val)} evaluation clips, {source}, "
            f"{args.feature_mode}-mode features, device {ctx.device}{shared}",
            flush=True,
        )
    return model


class Features(NamedTuple):
    train: np.ndarray  # (N_train, D) float32, dataset order
    train_labels: np.ndarray  # (N_train,) int64
    val: np.ndarray  # (N_val, D)
    val_labels: np.ndarray


def feature_plans(args: argparse.Namespace, data: Data) -> tuple[BatchPlan, BatchPlan]:
    """The batches features are extracted in. Train mode: the reference's loaders (training clips shuffled
    by the data seed, evaluation clips in order, ``--batch-size`` each), since batch composition changes
    the features. Eval mode: dataset order (the composition does not matter)."""
    val_plan = evaluation.evaluation_plan(len(data.val), args.batch_size)
    if args.feature_mode == "train":
        return evaluation.shuffled_plan(len(data.train), args.batch_size, args.data_seed), val_plan
    return evaluation.evaluation_plan(len(data.train), args.batch_size), val_plan


def extract(args: argparse.Namespace, ctx: DistContext, data: Data, model: nn.Module) -> Features:
    """Both splits' features in dataset order (every rank takes part under torchrun)."""
    train_plan, val_plan = feature_plans(args, data)
    if args.feature_mode == "train":
        torch.manual_seed(args.data_seed)  # dropout masks: the same for the same --seed
    bars = progress_bars(ctx)
    (train, train_labels), (val, val_labels) = (
        evaluation.extract_features(
            model, evaluation.plan_loader(dataset, plan, args, ctx), ctx, desc, mode=args.feature_mode, progress=bars
        )
        for dataset, plan, desc in ((data.train, train_plan, "train features"), (data.val, val_plan, "eval features"))
    )
    return Features(train, train_labels, val, val_labels)


def report(args: argparse.Namespace, ctx: DistContext, data: Data, features: Features) -> dict[str, Any]:
    """KNN (and auto-encoder) figures, saved features, the t-SNE plot, the JSON and the closing line."""
    metrics = knn_metrics(args, ctx, data, features)
    summary = f"KNN (k={args.knn_neighbours}) top-1 {metrics['knn_top1']:.2f}%"
    if args.with_autoencoder:
        metrics.update(autoencoder_metrics(args, ctx, features))
        summary += f" | with auto-encoder {metrics['knn_top1_autoencoder']:.2f}%"
    if args.save_features:
        atomic_save_npz(
            args.save_features,
            train_features=features.train,
            train_labels=features.train_labels,
            train_names=np.array(data.train.names),
            val_features=features.val,
            val_labels=features.val_labels,
            val_names=np.array(data.val.names),
        )
        metrics["features"] = str(args.save_features)
    if args.plot_dir:
        metrics["plots"] = [str(_plot_tsne(args, data, features))]
    metrics["args"] = args_to_dict(args)
    if args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    print(
        f"retrieval {args.finetune_skeleton_representation} on {args.finetune_dataset} {args.protocol}: {summary}",
        flush=True,
    )
    return metrics


def knn_metrics(args: argparse.Namespace, ctx: DistContext, data: Data, features: Features) -> dict[str, Any]:
    """Cosine KNN top-1 (percent) of the evaluation clips against the training clips."""
    accuracy, _ = knn_accuracy(
        features.train,
        features.train_labels,
        features.val,
        features.val_labels,
        args.knn_neighbours,
        chunk_size=args.knn_chunk_size,
        device=ctx.device,
    )
    return {
        "task": "action_retrieval",
        "knn_top1": 100.0 * accuracy,
        "k": args.knn_neighbours,
        "feature_mode": args.feature_mode,
        "feature_dim": int(features.train.shape[1]),
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_class": data.num_class,
    }


def autoencoder_metrics(args: argparse.Namespace, ctx: DistContext, features: Features) -> dict[str, Any]:
    """The reference's second figure: KNN on the codes of an auto-encoder fit to the training features."""
    train_t = torch.from_numpy(features.train).to(ctx.device)
    val_t = torch.from_numpy(features.val).to(ctx.device)
    fit = train_autoencoder(
        train_t,
        args.ae_epochs,
        batch_size=args.ae_batch_size,
        lr=args.ae_lr,
        lr_step=args.ae_lr_step,
        seed=args.data_seed,
    )
    train_codes, _ = encode(fit.model, train_t)
    val_codes, val_loss = encode(fit.model, val_t)
    accuracy, _ = knn_accuracy(
        train_codes,
        features.train_labels,
        val_codes,
        features.val_labels,
        args.knn_neighbours,
        chunk_size=args.knn_chunk_size,
        device=ctx.device,
    )
    return {
        "knn_top1_autoencoder": 100.0 * accuracy,
        "autoencoder": {
            "epochs": args.ae_epochs,
            "code_size": AE_CODE_SIZE,
            "lr_step": args.ae_lr_step,
            "train_mse": fit.train_mse,
            "val_mse": val_loss,
        },
    }


def _plot_tsne(args: argparse.Namespace, data: Data, features: Features) -> Path:
    rng = np.random.default_rng(args.data_seed)
    shown = np.sort(rng.permutation(len(data.val))[: args.tsne_samples])
    names = action_names(args.finetune_dataset, data.num_class)
    return plot_tsne(
        features.val[shown],
        features.val_labels[shown],
        names,
        Path(args.plot_dir) / "tsne.png",
        title=f"{args.finetune_skeleton_representation} features ({args.feature_mode} mode), "
        f"{args.finetune_dataset} {args.protocol} evaluation set (t-SNE, cosine)",
        seed=args.data_seed,
    )


# ---------------------------------------------------------------------------------------------------
# Auto-encoder
# ---------------------------------------------------------------------------------------------------


class FeatureAutoencoder(nn.Module):
    """The reference's auto-encoder: D -> 1024 -> 512 -> code (tanh after each) and the mirror back."""

    def __init__(self, input_size: int, code_size: int = AE_CODE_SIZE) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Tanh(),
            nn.Linear(1024, 512),
            nn.Tanh(),
            nn.Linear(512, code_size),
            nn.Tanh(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_size, 512),
            nn.Tanh(),
            nn.Linear(512, 1024),
            nn.Tanh(),
            nn.Linear(1024, input_size),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)  # (B, code_size)
        return self.decoder(code), code


class AutoencoderFit(NamedTuple):
    model: FeatureAutoencoder  # in eval mode
    train_mse: float  # mean training loss of the last epoch
    lr: float  # learning rate at the end


def train_autoencoder(
    features: torch.Tensor,
    epochs: int,
    *,
    batch_size: int = 64,
    lr: float = 1e-3,
    lr_step: str = "iteration",
    decay_every: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> AutoencoderFit:
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


if __name__ == "__main__":
    raise SystemExit(main())
