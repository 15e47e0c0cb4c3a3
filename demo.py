"""End-to-end demo on synthetic data: the whole method on a 2-core CPU in a few minutes.

    python demo.py [--out demo_output] [--smallest] [--seed N] [--no-plots]

1. writes a synthetic NTU-format raw set (``data_gen/synthetic.py``);
2. prepares it with ``data_gen/ntu_gendata.py`` (NTU 60 layout, x-view benchmark);
3. pretrains inter-skeleton contrast between the seq-based (BiGRU) and graph-based (AGCN)
   representations at reduced sizes;
4. evaluates the pretrained encoders and randomly initialised ones of the same architecture by linear
   classification and KNN retrieval, and prints them side by side as a Markdown table (plots go to
   ``OUT/plots``, every figure to ``OUT/demo_results.json``).

The settings and why they differ from the paper's recipe: docs/demo.md. ``--smallest`` is the setting the
test suite runs: it checks the plumbing, not the margins (tests/test_learning.py checks that
pretraining learns).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.io import atomic_torch_save, write_json_atomic
from data_gen.synthetic import write_synthetic_ntu
from engine.ledger import markdown_table
from engine.training import seed_everything
from moco.builder import build_moco, checkpoint_state_dict

ROOT = Path(__file__).resolve().parent
REPRESENTATION = "seq-based_and_graph-based"
DOWNSTREAM = ("seq-based", "graph-based")


@dataclass(frozen=True)
class DemoSize:
    """Everything that sets the demo's cost."""

    num_classes: int
    samples_per_class: int
    gru_hidden_size: int
    gru_layers: int
    agcn_base_channels: int
    moco_k: int
    moco_m: float
    moco_t: float
    spatial_augment: str
    window_size: int
    batch_size: int
    pretrain_epochs: int
    pretrain_lr: float
    linear_epochs: int
    linear_schedule: tuple[int, ...]


SIZES = {
    # About 11 minutes on 2 CPU cores; why each setting differs from the paper's recipe: docs/demo.md.
    "default": DemoSize(
        num_classes=10,
        samples_per_class=30,
        gru_hidden_size=128,
        gru_layers=2,
        agcn_base_channels=4,
        moco_k=64,
        moco_m=0.99,
        moco_t=0.2,
        spatial_augment="none",
        window_size=32,
        batch_size=32,
        pretrain_epochs=240,
        pretrain_lr=0.05,
        linear_epochs=20,
        linear_schedule=(15,),
    ),
    # The test suite's setting: seconds, plumbing only.
    "smallest": DemoSize(
        num_classes=4,
        samples_per_class=6,
        gru_hidden_size=8,
        gru_layers=1,
        agcn_base_channels=4,
        moco_k=16,
        moco_m=0.99,
        moco_t=0.2,
        spatial_augment="none",
        window_size=32,
        batch_size=4,
        pretrain_epochs=1,
        pretrain_lr=0.01,
        linear_epochs=1,
        linear_schedule=(1,),
    ),
}


def _encoder_sizes(size: DemoSize) -> dict[str, int]:
    """The encoder sizes of every stage: pretraining, the random baseline and the evaluations."""
    return {
        "gru_hidden_size": size.gru_hidden_size,
        "gru_layers": size.gru_layers,
        "agcn_base_channels": size.agcn_base_channels,
        "hcn_out_channels": 8,  # the demo's pair has no image-based encoder; small all the same
        "window_size": size.window_size,
    }


def _size_flags(size: DemoSize) -> list[str]:
    """:func:`_encoder_sizes` as the scripts' flags (``--gru-hidden-size 128`` ...)."""
    sizes = _encoder_sizes(size).items()
    return [text for name, value in sizes for text in (f"--{name.replace('_', '-')}", str(value))]


def write_random_checkpoint(path: Path, size: DemoSize, seed: int) -> Path:
    """A pretraining checkpoint of untrained encoders (the baseline): same architecture, same layout."""
    seed_everything(seed)
    model = build_moco(REPRESENTATION, K=size.moco_k, mlp=True, **_encoder_sizes(size))
    return atomic_torch_save({"epoch": 0, "arch": REPRESENTATION, "state_dict": checkpoint_state_dict(model)}, path)


class DemoError(RuntimeError):
    """A stage of the demo failed; the message names it."""


def run_stage(name: str, script: str, argv: list[str], metrics: Path | None = None) -> dict[str, Any]:
    """Run one of the project's command-line tools as its own process, as a user would; return the metrics
    JSON it wrote (the entry points share libraries, never import each other)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rc = subprocess.run([sys.executable, str(ROOT / script), *argv], env=env).returncode
    if rc:
        raise DemoError(f"{name} failed (exit {rc})")
    return json.loads(metrics.read_text()) if metrics is not None else {}


def evaluate(
    checkpoint: Path, representation: str, data_root: Path, out: Path, tag: str, size: DemoSize, seed: int, plots: bool
) -> dict[str, float]:
    """Linear classification and KNN retrieval of one encoder of ``checkpoint``."""
    common = [
        "--pretrained",
        str(checkpoint),
        "--pretrain-skeleton-representation",
        REPRESENTATION,
        "--finetune-skeleton-representation",
        representation,
        "--finetune-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--data-root",
        str(data_root),
        "--seed",
        str(seed),
        "-j",
        "0",
        "--device",
        "cpu",
        *_size_flags(size),
    ]
    name = f"{tag}_{representation}"
    plot_flags = ["--plot-dir", str(out / "plots" / name)] if plots else []
    linear_json, knn_json = out / "metrics" / f"linear_{name}.json", out / "metrics" / f"knn_{name}.json"
    linear = run_stage(
        f"linear evaluation of {name}",
        "action_classification.py",
        [
            *common,
            "--lr",
            "0.1",
            "--batch-size",
            str(size.batch_size),
            "--epochs",
            str(size.linear_epochs),
            "--schedule",
            *map(str, size.linear_schedule),
            "--checkpoint-path",
            str(out / "linear" / name),
            "--overwrite",
            "--metrics-json",
            str(linear_json),
            *plot_flags,
        ],
        linear_json,
    )
    knn = run_stage(
        f"retrieval of {name}",
        "action_retrieval.py",
        [*common, "--knn-neighbours", "1", "--metrics-json", str(knn_json), *plot_flags],
        knn_json,
    )
    return {"linear_top1": float(linear["top1"]), "knn_top1": float(knn["knn_top1"])}


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Side-by-side Markdown table: one row per representation and protocol, random vs pretrained."""
    rows = []
    for rep in DOWNSTREAM:
        for key, label in (("linear_top1", "linear top-1 (%)"), ("knn_top1", "KNN k=1 top-1 (%)")):
            rand, pre = results["random"][rep][key], results["pretrained"][rep][key]
            rows.append([rep, label, f"{rand:.1f}", f"{pre:.1f}", f"{pre - rand:+.1f}"])
    return markdown_table(["encoder", "evaluation", "random init", "pretrained", "margin"], rows, "llrrr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--smallest", action="store_true", help="tiny sizes (the test suite's setting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG figures")
    return parser


def prepare_data(out: Path, size: DemoSize, seed: int) -> Path:
    """Synthetic raw skeletons -> data_gen; returns the data root (``OUT/data``)."""
    raw = out / "raw"
    write_synthetic_ntu(raw, num_classes=size.num_classes, samples_per_class=size.samples_per_class, seed=seed)
    data_root = out / "data"
    run_stage(
        "data preparation",
        "data_gen/ntu_gendata.py",
        [
            "--data-path",
            str(raw),
            "--dataset",
            "ntu60",
            "--benchmarks",
            "xview",
            "--out-folder",
            str(data_root / "NTU-RGB-D-60-AGCN"),
            "--workers",
            "2",
            "--no-progress",
        ],
    )
    return data_root


def pretrain(out: Path, data_root: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Inter-skeleton pretraining; returns its per-epoch loss and contrastive accuracies."""
    metrics = out / "metrics" / "pretrain.json"
    history = run_stage(
        "pretraining",
        "main_moco_inter_skeleton.py",
        [
            "--skeleton-representation",
            REPRESENTATION,
            "--pre-dataset",
            "ntu60",
            "--protocol",
            "cross_view",
            "--data-root",
            str(data_root),
            "--checkpoint-path",
            str(out / "pretrain"),
            "--mlp",
            "--lr",
            str(size.pretrain_lr),
            "--batch-size",
            str(size.batch_size),
            "--epochs",
            str(size.pretrain_epochs),
            "--schedule",
            str(max(1, int(size.pretrain_epochs * 0.8))),
            "--moco-k",
            str(size.moco_k),
            "--moco-m",
            str(size.moco_m),
            "--spatial-augment",
            size.spatial_augment,
            "--moco-t",
            str(size.moco_t),
            "--seed",
            str(seed),
            "-j",
            "0",
            "--device",
            "cpu",
            "--save-freq",
            str(max(1, size.pretrain_epochs)),
            "--overwrite",
            "--metrics-json",
            str(metrics),
            *_size_flags(size),
        ],
        metrics,
    )["history"]
    keys = ("train_loss", "acc_s1", "acc_s2")
    return {"history": [{"epoch": h["epoch"], **{k: h[k] for k in keys}} for h in history]}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size = SIZES["smallest" if args.smallest else "default"]
    out = Path(args.out)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        print(f"[demo] {name} done ({timings[name]:.0f} s)", flush=True)

    try:
        data_root = prepare_data(out, size, args.seed)
        stage("synthetic data and data_gen")
        pretraining = pretrain(out, data_root, size, args.seed)
        stage("pretraining")
        checkpoints = {
            "pretrained": out / "pretrain" / "checkpoint_last.pth.tar",
            "random": write_random_checkpoint(out / "random_init" / "checkpoint_random.pth.tar", size, args.seed),
        }
        results = {
            tag: {
                rep: evaluate(checkpoint, rep, data_root, out, tag, size, args.seed, args.plots) for rep in DOWNSTREAM
            }
            for tag, checkpoint in checkpoints.items()
        }
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    stage("evaluation")

    summary = {
        "results": results,
        "pretraining": pretraining,
        "timings_s": timings,
        "size": size.__dict__,
        "total_s": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "demo_results.json", summary)
    print(
        "\nSynthetic NTU-format data, x-view; inter-skeleton contrast seq-based + graph-based\n\n"
        + format_table(results)
    )
    print(
        f"\n[demo] finished in {summary['total_s']:.0f} s; figures in {out / 'demo_results.json'}"
        + (f", plots in {out / 'plots'}" if args.plots else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
