#!/usr/bin/env python
"""Pretraining step time with data loading, every figure a ratio against a baseline measured in the same run.

Each row times the full MoCo step of one representation pair (momentum update, both encoders on both views,
InfoNCE, backward, SGD, enqueue) fed as training feeds it: PretrainDataset over a memory-mapped split of
random-walk clips, a DataLoader, pinned batches copied without blocking. Rows: every pair x precision
(fp32: torch's default flags, as the training script runs without --amp; bf16: autocast, as with --amp) x
BiGRU (fused: ours, one native GRU call per layer and direction; per-frame: the reference's loop, one GRU
call per frame). The baseline of a pair is its fp32 row with the per-frame loop (the reference's step), or
its fp32 row when the pair has no BiGRU; speedup = baseline ms / row ms.

    python bench/bench_pretrain.py                                    # paper sizes: batch 64, K 16384
    python bench/bench_pretrain.py --batch 8 --moco-k 64 --gru-hidden-size 64 --iters 2 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import write_clips  # noqa: E402
from common import cli  # noqa: E402
from common.constants import WINDOW_SIZE  # noqa: E402
from common.io import UsageError, write_json_atomic  # noqa: E402
from common.split_folder import SplitPaths  # noqa: E402
from engine.args import add_model_size_args, encoder_kwargs  # noqa: E402
from engine.training import select_device  # noqa: E402
from feeders.datasets import PretrainDataset  # noqa: E402
from moco.builder import build_moco  # noqa: E402
from moco.step import contrastive_step  # noqa: E402
from models import ENCODERS, PAIRS, REPRESENTATIONS, parse_representation  # noqa: E402
from models.bigru import BIGRU, reference_loop_features  # noqa: E402

PROG = "bench_pretrain.py"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
BIGRUS = ("fused", "per-frame")


def use_per_frame_loop(model: nn.Module) -> float:
    """Give every BiGRU of ``model`` the reference's per-frame loop on its own weights; max |fused - loop| of
    the first one's features."""
    grus = [m for m in model.modules() if isinstance(m, BIGRU)]
    x = torch.randn(4, 16, grus[0].en_input_size, device=next(model.parameters()).device)
    with torch.no_grad():
        fused = grus[0](x, knn_eval=True)
        for module in grus:  # an instance attribute: nn.Module.__call__ finds it before the class's forward
            module.encoder.forward = functools.partial(reference_loop_features, module.encoder.gru)
        return (grus[0](x, knn_eval=True) - fused).abs().max().item()


def make_loader(paths: SplitPaths, pair: str, args: argparse.Namespace, steps: int, device: torch.device) -> DataLoader:
    """The training loop's DataLoader over exactly ``steps`` batches (clips drawn with replacement)."""
    views = [ENCODERS[r].view for r in parse_representation(pair)]
    dataset = PretrainDataset(paths, views, seed=0)  # the pretraining crops (the default ratio)
    dataset.set_epoch(0)
    sampler = RandomSampler(dataset, True, args.batch * steps, generator=torch.Generator().manual_seed(0))
    cuda = device.type == "cuda"
    return DataLoader(dataset, args.batch, sampler=sampler, num_workers=args.workers, pin_memory=cuda, drop_last=True)


def time_windows(step: Callable[[], Any], args: argparse.Namespace, device: torch.device) -> tuple[list[float], float]:
    """ms per step of --repeats windows of --iters steps after --warmup, and the first step's seconds. The
    device is synchronised only between windows, as the training loop reads its meters only now and then."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        step()
    windows = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        for _ in range(args.iters):
            step()
        sync()
        windows.append((time.perf_counter() - start) / args.iters * 1e3)
    return windows, first


def measure(
    pair: str, precision: str, bigru: str, args: argparse.Namespace, paths: SplitPaths, device: torch.device
) -> dict:
    """One row: the step of ``pair`` at ``precision`` with the ``bigru`` path, fed by the DataLoader."""
    row: dict[str, Any] = {"pair": pair, "precision": precision, "bigru": bigru}
    torch.manual_seed(0)
    model = build_moco(pair, dim=128, K=args.moco_k, m=0.999, T=0.07, mlp=True, **encoder_kwargs(args)).to(device)
    if bigru == "per-frame":
        row["max_abs_feature_diff"] = use_per_frame_loop(model)
    optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)
    batches = iter(make_loader(paths, pair, args, args.warmup + args.iters * args.repeats, device))
    total_loss = torch.zeros((), device=device)

    def step() -> None:
        views = [v.to(device, non_blocking=True) for v in next(batches)]
        out = contrastive_step(model, model, views, optimizer, autocast_dtype=PRECISIONS[precision])
        total_loss.add_(out.loss)  # on the device: no wait

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    windows, first = time_windows(step, args, device)
    ms = statistics.median(windows)
    row.update(ms_per_step=ms, windows_ms=windows, first_step_s=first, clips_per_s=args.batch / ms * 1e3)
    row["loss_finite"] = bool(torch.isfinite(total_loss).item())
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def loader_only(pair: str, args: argparse.Namespace, paths: SplitPaths, device: torch.device) -> float:
    """Clips per second the DataLoader alone delivers to the device, after its workers' first batches."""
    warmup = 2 * args.workers + 1
    batches = iter(make_loader(paths, pair, args, warmup + args.iters * args.repeats, device))

    def one() -> None:
        for view in next(batches):
            view.to(device, non_blocking=True)

    windows, _ = time_windows(one, argparse.Namespace(**{**vars(args), "warmup": warmup}), device)
    return args.batch / statistics.median(windows) * 1e3


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """speedup and baseline of every timed row: its pair's fp32 per-frame row, else its pair's fp32 row."""
    timed = [r for r in rows if "ms_per_step" in r]
    for row in timed:
        same = [r for r in timed if r["pair"] == row["pair"] and r["precision"] == "fp32"]
        base = next((r for r in same if r["bigru"] == "per-frame"), None) or next(iter(same), None)
        if base is not None:
            row["baseline"] = f"{base['precision']} {base['bigru']}"
            row["speedup"] = base["ms_per_step"] / row["ms_per_step"]


def row_line(row: dict[str, Any]) -> str:
    head = f"{row['pair']:28s} {row['precision']:5s} {row['bigru']:9s}"
    if "error" in row:
        return f"{head} failed: {row['error']}"
    speedup = f"{row['speedup']:6.2f}x vs {row['baseline']}" if "speedup" in row else ""
    return f"{head} {row['ms_per_step']:10.1f} ms/step {row['clips_per_s']:8.0f} clips/s {speedup}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=REPRESENTATIONS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--bigrus", nargs="+", default=list(BIGRUS), choices=BIGRUS, help="BiGRU paths")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--moco-k", type=int, default=16384, help="queue size (default 16384)")
    parser.add_argument("--iters", type=int, default=10, help="steps per timed window (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--clips", type=int, default=1024, help="random-walk clips in the split (default 1024)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    add_model_size_args(parser)
    parser.set_defaults(window_size=WINDOW_SIZE)  # the views' length, the dataset's default
    return parser


def check_args(args: argparse.Namespace) -> None:
    for flag in ("batch", "moco_k", "iters", "repeats", "warmup", "clips"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if args.moco_k % args.batch:
        raise UsageError(f"--moco-k {args.moco_k} must be a multiple of --batch {args.batch}")
    if args.true_bidirectional_gru and "per-frame" in args.bigrus:
        raise UsageError("--true-bidirectional-gru computes another function than the per-frame loop: --bigrus fused")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    device = select_device(args.device)
    torch.backends.cudnn.benchmark = True  # as the training script runs without --seed
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cpus": os.cpu_count()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    results: dict[str, Any] = {**info, "args": vars(args), "rows": [], "loader_only_clips_per_s": {}}
    where = ", ".join(f"{k} {v}" for k, v in info.items())
    print(f"{where} | batch {args.batch}, K {args.moco_k}, {args.workers} workers", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips)
        for pair in args.pairs:
            bigrus = [b for b in ("per-frame", "fused") if b in args.bigrus] if "seq-based" in pair else ["fused"]
            for bigru, precision in [(b, p) for b in bigrus for p in PRECISIONS if p in args.precisions]:
                try:  # the baseline first, so each line can give its ratio
                    row = measure(pair, precision, bigru, args, paths, device)
                except Exception as exc:  # reported as a row; the other rows still run
                    row = {"pair": pair, "precision": precision, "bigru": bigru, "error": repr(exc)[:300]}
                results["rows"].append(row)
                add_speedups(results["rows"])
                print(row_line(row), flush=True)
                if args.json:  # after every row: a run cut short keeps what it measured
                    write_json_atomic(args.json, results)
            rate = loader_only(pair, args, paths, device)
            results["loader_only_clips_per_s"][pair] = rate
            print(f"{pair:28s} DataLoader alone: {rate:.0f} clips/s", flush=True)
    if args.json:
        write_json_atomic(args.json, results)
    return 1 if any("error" in r or not r["loss_finite"] for r in results["rows"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
