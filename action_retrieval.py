#!/usr/bin/env python
"""Action retrieval: cosine k-nearest-neighbour classification on frozen encoder features.

Features are the query encoder's vector before ``fc`` (``knn_eval=True``) for a centre crop of 0.95 of
every training and evaluation clip; each evaluation clip takes the majority label of its ``k``
cosine-nearest training clips; the figure is top-1 accuracy (and, ``--with-autoencoder``, the reference's
second figure on an auto-encoder's codes). ``--feature-mode train`` extracts them as the reference does:
the encoder in train mode, batches of ``--batch-size`` in seeded random orders (``--eval-order sorted``:
the evaluation clips in dataset order). Under ``torchrun`` every rank extracts its piece of every batch
(DataParallel's split), the features are gathered in dataset order and rank 0 alone runs the KNN and
writes. See docs/evaluation.md.

    python action_retrieval.py --knn-neighbours 1 \\
        --pretrained checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_view \\
        --pretrain-skeleton-representation seq-based_and_graph-based --finetune-skeleton-representation seq-based
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from common import cli
from common.io import UsageError, atomic_save_npz, check_output_file, check_output_folder, write_json_atomic
from engine import evaluation
from engine.args import check_window_size, encoder_kwargs, positive_float, positive_int
from engine.evaluation import BatchPlan, Clips
from engine.knn import AE_CODE_SIZE, encode, knn_accuracy, train_autoencoder
from engine.launch import DistContext, process_context, rank0_printer, wrap_model
from engine.plots import TSNE_MIN_SAMPLES, action_names, plot_tsne
from engine.provenance import provenance
from engine.training import args_to_dict
from feeders.datasets import DownstreamDataset, num_classes

PROG = "action_retrieval.py"
FEATURES = ("train_features", "train_labels", "val_features", "val_labels")  # the arrays of --save-features


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluation.add_evaluation_args(parser)
    add = parser.add_argument_group("retrieval").add_argument
    add("--knn-neighbours", type=positive_int, default=1, metavar="K", help="neighbours that vote")
    add("--knn-chunk-size", type=positive_int, default=1024, metavar="N", help="evaluation clips per matrix product")
    modes = "the encoder's mode while extracting: eval, or train (the reference's: batch statistics, seeded dropout)"
    add("--feature-mode", choices=evaluation.FEATURE_MODES, default="eval", help=modes)
    orders = "--feature-mode train: the evaluation clips' order, seeded random (as the reference's files) or sorted"
    add("--eval-order", choices=("random", "sorted"), default="random", help=orders)
    add("--save-features", default=None, metavar="PATH", help="write the features to this .npz")
    add("--tsne-samples", type=positive_int, default=5000, metavar="N", help="evaluation clips in the t-SNE plot")
    add = parser.add_argument_group("auto-encoder (the reference's second retrieval figure)").add_argument
    add("--with-autoencoder", action="store_true", help=f"also KNN on the {AE_CODE_SIZE}-d codes of an auto-encoder")
    add("--ae-epochs", type=positive_int, default=400, help="auto-encoder epochs")
    add("--ae-batch-size", type=positive_int, default=64, help="auto-encoder mini-batch size")
    add("--ae-lr", type=positive_float, default=1e-3, help="auto-encoder Adam learning rate")
    steps = "unit of the x0.95-every-50 decay (the reference steps every iteration)"
    add("--ae-lr-step", choices=("iteration", "epoch"), default="iteration", help=steps)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: extract, retrieve, report; 0 on success, 2 (and one line on stderr) on bad input."""
    return cli.run_main(PROG, build_parser(), run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract features, run KNN (and the auto-encoder); returns the metrics ``--metrics-json`` receives
    (rank 0; an empty dict on the other ranks under torchrun)."""
    check_flags(args)
    with process_context(args.device) as ctx:
        seed = evaluation.shared_seed(args.seed, ctx)
        data = load_data(args, seed)
        model = build_model(args, ctx, data)
        features = extract(args, ctx, data, model, seed)
        return report(args, ctx, data, features, seed) if ctx.is_main else {}


def check_flags(args: argparse.Namespace) -> None:
    """What argparse cannot check, outputs included (before anything is read or computed)."""
    check_window_size(args.window_size, (args.finetune_skeleton_representation,))
    for flag, path in (("--metrics-json", args.metrics_json), ("--save-features", args.save_features)):
        if path:
            check_output_file(path, flag)
    if args.plot_dir:
        check_output_folder(args.plot_dir, "--plot-dir")
    if args.resume:
        warnings.warn("--resume has no effect on retrieval (nothing is trained); ignored", stacklevel=1)


class Data(NamedTuple):
    train: DownstreamDataset
    val: DownstreamDataset
    num_class: int


def load_data(args: argparse.Namespace, seed: int) -> Data:
    """Both splits with the evaluation transform (centre crop 0.95), as in the reference's retrieval
    options; checked before any model is built."""
    num_class = num_classes(args.finetune_dataset)
    representation = args.finetune_skeleton_representation
    clips = Clips(
        args.data_root, args.finetune_dataset, args.protocol, num_class, representation, args.window_size, seed
    )
    data = Data(clips.open("train", train=False), clips.open("val", train=False), num_class)
    if args.plot_dir and min(args.tsne_samples, len(data.val)) < TSNE_MIN_SAMPLES:
        raise UsageError(
            f"the t-SNE plot of --plot-dir needs at least {TSNE_MIN_SAMPLES} clips: --tsne-samples is "
            f"{args.tsne_samples}, {data.val.paths.data} holds {len(data.val)}"
        )
    if len(data.train) < args.knn_neighbours:
        raise UsageError(f"--knn-neighbours {args.knn_neighbours} exceeds the {len(data.train)} training clips")
    return data


def build_model(args: argparse.Namespace, ctx: DistContext, data: Data) -> nn.Module:
    """The (pretrained or randomly initialised) encoder, frozen, on the device."""
    representation = args.finetune_skeleton_representation
    sizes, pretrained = encoder_kwargs(args), args.pretrained
    model, _ = evaluation.load_encoder(
        representation, data.num_class, sizes, pretrained, args.pretrain_skeleton_representation
    )
    model = wrap_model(model.requires_grad_(False), ctx, trainable=False, requested_device=args.device)
    source = f"pretrained {args.pretrained}" if args.pretrained else "randomly initialised encoder"
    shared = f", features extracted by {ctx.world_size} processes" if ctx.distributed else ""
    rank0_printer(ctx)(
        f"retrieval with {representation} features on {args.finetune_dataset} {args.protocol}: {len(data.train)} "
        f"training / {len(data.val)} evaluation clips, {source}, {args.feature_mode}-mode features, "
        f"device {ctx.device}{shared}"
    )
    return model


def feature_plans(args: argparse.Namespace, data: Data, seed: int) -> tuple[BatchPlan, BatchPlan]:
    """The batches features are extracted in. Train mode: the reference's loaders, since batch
    composition changes the features (see the module's docstring). Eval mode: dataset order (the
    composition does not matter)."""
    n_train, n_val = len(data.train), len(data.val)
    if args.feature_mode == "eval":
        return BatchPlan(np.arange(n_train), args.batch_size), BatchPlan(np.arange(n_val), args.batch_size)
    val_order = np.arange(n_val) if args.eval_order == "sorted" else evaluation.random_order(n_val, seed, 1)
    return BatchPlan(evaluation.random_order(n_train, seed, 0), args.batch_size), BatchPlan(val_order, args.batch_size)


def extract(
    args: argparse.Namespace, ctx: DistContext, data: Data, model: nn.Module, seed: int
) -> dict[str, np.ndarray]:
    """Both splits' (N, D) float32 ``*_features`` and (N,) ``*_labels`` in dataset order (every rank takes
    part under torchrun)."""
    plans = feature_plans(args, data, seed)
    if args.feature_mode == "train":
        torch.manual_seed(seed)  # dropout masks: the same for the same --seed
    (train, train_labels), (val, val_labels) = (
        evaluation.outputs_in_order(
            model, evaluation.plan_loader(dataset, plan, args.workers, ctx), ctx, desc, args.feature_mode, knn_eval=True
        )
        for dataset, plan, desc in zip((data.train, data.val), plans, ("train features", "eval features"))
    )
    return {name: t.cpu().numpy() for name, t in zip(FEATURES, (train, train_labels, val, val_labels))}


def report(
    args: argparse.Namespace, ctx: DistContext, data: Data, features: dict[str, np.ndarray], seed: int
) -> dict[str, Any]:
    """KNN (and auto-encoder) figures, saved features, the t-SNE plot, the JSON and the closing line."""
    knn = dict(k=args.knn_neighbours, chunk_size=args.knn_chunk_size, device=ctx.device)
    train, train_labels, val, val_labels = (features[name] for name in FEATURES)
    accuracy, _ = knn_accuracy(train, train_labels, val, val_labels, **knn)
    metrics: dict[str, Any] = {
        "task": "action_retrieval",
        "knn_top1": 100.0 * accuracy,
        "k": args.knn_neighbours,
        "feature_mode": args.feature_mode,
        "feature_dim": int(train.shape[1]),
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_class": data.num_class,
        "seed": seed,
    }
    summary = f"KNN (k={args.knn_neighbours}) top-1 {metrics['knn_top1']:.2f}%"
    if args.with_autoencoder:
        metrics.update(autoencoder_metrics(args, ctx, features, seed, knn))
        summary += f" | with auto-encoder {metrics['knn_top1_autoencoder']:.2f}%"
    if args.save_features:
        names = {"train_names": np.array(data.train.names), "val_names": np.array(data.val.names)}
        metrics["features"] = str(atomic_save_npz(args.save_features, **features, **names))
    if args.plot_dir:
        metrics["plots"] = [str(plot(args, data, val, val_labels, seed))]
    folders = [data.train.paths.data.parent, data.val.paths.data.parent]
    checkpoints = {"--pretrained": args.pretrained}
    metrics["provenance"] = provenance(
        device=ctx.device, world_size=ctx.world_size, data_folders=folders, checkpoints=checkpoints
    )
    metrics["args"] = args_to_dict(args)
    if args.metrics_json:
        write_json_atomic(args.metrics_json, metrics)
    representation = args.finetune_skeleton_representation
    print(f"retrieval {representation} on {args.finetune_dataset} {args.protocol}: {summary}", flush=True)
    return metrics


def autoencoder_metrics(
    args: argparse.Namespace, ctx: DistContext, features: dict[str, np.ndarray], seed: int, knn: dict[str, Any]
) -> dict[str, Any]:
    """The reference's second figure: KNN on the codes of an auto-encoder fit to the training features."""
    train, val = (torch.from_numpy(features[f"{part}_features"]).to(ctx.device) for part in ("train", "val"))
    fit = train_autoencoder(
        train, args.ae_epochs, batch_size=args.ae_batch_size, lr=args.ae_lr, lr_step=args.ae_lr_step, seed=seed
    )
    (train_codes, _), (val_codes, val_mse) = encode(fit.model, train), encode(fit.model, val)
    accuracy, _ = knn_accuracy(train_codes, features["train_labels"], val_codes, features["val_labels"], **knn)
    summary = dict(epochs=args.ae_epochs, code_size=AE_CODE_SIZE, lr_step=args.ae_lr_step, train_mse=fit.train_mse)
    return {"knn_top1_autoencoder": 100.0 * accuracy, "autoencoder": {**summary, "val_mse": val_mse}}


def plot(args: argparse.Namespace, data: Data, features: np.ndarray, labels: np.ndarray, seed: int) -> Path:
    """The t-SNE map of (a seeded subset of at most ``--tsne-samples``) evaluation clips."""
    shown = np.sort(np.random.default_rng(seed).permutation(len(labels))[: args.tsne_samples])
    return plot_tsne(
        features[shown],
        labels[shown],
        action_names(args.finetune_dataset, data.num_class),
        Path(args.plot_dir) / "tsne.png",
        title=f"{args.finetune_skeleton_representation} features ({args.feature_mode} mode), "
        f"{args.finetune_dataset} {args.protocol} evaluation set (t-SNE, cosine)",
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(main())
