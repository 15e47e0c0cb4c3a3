"""End-to-end demo on synthetic data: the whole method on a 2-core CPU in a few minutes, each stage run as
its own process (the command a user would type). What it does, its settings and why: docs/demo.md.

    python demo.py [--out demo_output] [--smallest] [--seed N] [--no-plots]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.cli import RunFailed, run_main
from common.io import atomic_torch_save, ensure_folder, write_json_atomic
from data_gen.synthetic import write_synthetic_ntu
from engine.args import flag, nonnegative_int
from engine.ledger import markdown_table
from engine.training import seed_everything
from moco.builder import build_moco, checkpoint_state_dict

PROG = "demo.py"
ROOT = Path(__file__).resolve().parent
REPRESENTATION = "seq-based_and_graph-based"
DOWNSTREAM = ("seq-based", "graph-based")
NTU60 = "NTU-RGB-D-60-AGCN"
# Everything that sets the demo's cost, as the flags of its stages; why each differs from the paper's
# recipe: docs/demo.md. "default": about 11 minutes on 2 CPU cores. "smallest": the test suite's, seconds.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "data": dict(num_classes=10, samples_per_class=30),
        "encoders": dict(gru_hidden_size=128, gru_layers=2, agcn_base_channels=4, hcn_out_channels=8, window_size=32),
        "pretrain": dict(lr=0.05, batch_size=32, epochs=240, schedule=192, save_freq=240),
        "moco": dict(moco_k=64, moco_m=0.99, moco_t=0.2, spatial_augment="none"),
        "linear": dict(lr=0.1, batch_size=32, epochs=20, schedule=15),
    },
    "smallest": {
        "data": dict(num_classes=4, samples_per_class=6),
        "encoders": dict(gru_hidden_size=8, gru_layers=1, agcn_base_channels=4, hcn_out_channels=8, window_size=32),
        "pretrain": dict(lr=0.01, batch_size=4, epochs=1, schedule=1, save_freq=1),
        "moco": dict(moco_k=16, moco_m=0.99, moco_t=0.2, spatial_augment="none"),
        "linear": dict(lr=0.1, batch_size=4, epochs=1, schedule=1),
    },
}


def run_stage(name: str, script: str, values: Mapping[str, Any], *switches: str) -> dict[str, Any]:
    """Run one of the project's commands as its own process, as a user would, with ``values`` as its flags
    (``{"moco_k": 64}``: ``--moco-k 64``) and ``switches``; return the metrics JSON it wrote, if any."""
    argv = [text for key, value in values.items() for text in (flag(key), str(value))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rc = subprocess.run([sys.executable, str(ROOT / script), *argv, *switches], env=env).returncode
    if rc:
        raise RunFailed(f"{name} failed (exit {rc})")
    return json.loads(Path(values["metrics_json"]).read_text()) if "metrics_json" in values else {}


def prepare_data(out: Path, size: dict, seed: int) -> None:
    """Synthetic raw skeletons -> data_gen, into ``OUT/data``."""
    write_synthetic_ntu(out / "raw", **size["data"], seed=seed)
    values = dict(data_path=out / "raw", out_folder=out / "data" / NTU60, dataset="ntu60", benchmarks="xview")
    run_stage("data preparation", "data_gen/ntu_gendata.py", {**values, "workers": 2}, "--no-progress")


def on_cpu(out: Path, size: dict, seed: int) -> dict[str, Any]:
    """The flags every training and evaluation stage shares: the data, the seed, the CPU, the sizes."""
    return dict(data_root=out / "data", seed=seed, workers=0, device="cpu", **size["encoders"])


def pretrain(out: Path, size: dict, seed: int) -> list[dict[str, float]]:
    """Inter-skeleton pretraining; returns its per-epoch loss and contrastive accuracies."""
    values = dict(skeleton_representation=REPRESENTATION, pre_dataset="ntu60", protocol="cross_view")
    values.update(checkpoint_path=out / "pretrain", metrics_json=out / "metrics" / "pretrain.json")
    values.update(**size["pretrain"], **size["moco"], **on_cpu(out, size, seed))
    history = run_stage("pretraining", "main_moco_inter_skeleton.py", values, "--mlp", "--overwrite")
    return [{k: h[k] for k in ("epoch", "train_loss", "acc_s1", "acc_s2")} for h in history["history"]]


def write_random_checkpoint(path: Path, size: dict, seed: int) -> Path:
    """A pretraining checkpoint of untrained encoders (the baseline): same architecture, same layout."""
    seed_everything(seed)
    model = build_moco(REPRESENTATION, K=size["moco"]["moco_k"], mlp=True, **size["encoders"])
    return atomic_torch_save({"epoch": 0, "arch": REPRESENTATION, "state_dict": checkpoint_state_dict(model)}, path)


def evaluate(checkpoint: Path, rep: str, out: Path, tag: str, size: dict, args: argparse.Namespace) -> dict[str, float]:
    """Linear classification and KNN retrieval of one encoder of ``checkpoint``."""
    name, metrics = f"{tag}_{rep}", out / "metrics"
    values = dict(pretrained=checkpoint, pretrain_skeleton_representation=REPRESENTATION, finetune_dataset="ntu60")
    values.update(finetune_skeleton_representation=rep, protocol="cross_view", **on_cpu(out, size, args.seed))
    values.update({"plot_dir": out / "plots" / name} if args.plots else {})
    linear = dict(**size["linear"], checkpoint_path=out / "linear" / name, metrics_json=metrics / f"linear_{name}.json")
    linear = run_stage(f"linear evaluation of {name}", "action_classification.py", {**values, **linear}, "--overwrite")
    knn = dict(knn_neighbours=1, metrics_json=metrics / f"knn_{name}.json")
    knn = run_stage(f"retrieval of {name}", "action_retrieval.py", {**values, **knn})
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
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--smallest", action="store_true", help="tiny sizes (the test suite's setting)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG figures")
    return parser


def run(args: argparse.Namespace) -> None:
    """Every stage in turn, then the table, ``demo_results.json`` and how long each stage took."""
    size, out = SIZES["smallest" if args.smallest else "default"], ensure_folder(args.out, "--out")
    started, timings = time.perf_counter(), {}

    def stage(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        print(f"[demo] {name} done ({timings[name]:.0f} s)", flush=True)

    prepare_data(out, size, args.seed)
    stage("synthetic data and data_gen")
    history = pretrain(out, size, args.seed)
    stage("pretraining")
    checkpoints = {
        "pretrained": out / "pretrain" / "checkpoint_last.pth.tar",
        "random": write_random_checkpoint(out / "random_init" / "checkpoint_random.pth.tar", size, args.seed),
    }
    results = {
        tag: {rep: evaluate(checkpoint, rep, out, tag, size, args) for rep in DOWNSTREAM}
        for tag, checkpoint in checkpoints.items()
    }
    stage("evaluation")
    total = round(time.perf_counter() - started, 1)
    summary = {"results": results, "pretraining": {"history": history}, "timings_s": timings, "size": size}
    write_json_atomic(out / "demo_results.json", {**summary, "total_s": total})
    print("\nSynthetic NTU-format data, x-view; inter-skeleton contrast seq-based + graph-based\n")
    print(format_table(results))
    plots = f", plots in {out / 'plots'}" if args.plots else ""
    print(f"\n[demo] finished in {total:.0f} s; figures in {out / 'demo_results.json'}{plots}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
