#!/usr/bin/env python
"""Pretraining throughput at the paper's sizes, every figure from one run on one device.

For each representation pair: ms per step and clips/s of the full MoCo step (momentum update, forward,
InfoNCE, backward, SGD, enqueue)
  * compute only: one batch kept on the device;
  * with data loading: memory-mapped synthetic clips through PretrainDataset and a DataLoader
    (pinned memory, persistent workers), as training runs;
  * baseline, for pairs with a sequence encoder: the same compute-only step with the reference's
    per-frame GRU loop (one GRU call per frame) in place of the whole-sequence BiGRU.
Also the DataLoader alone (clips/s it can feed). Ratios are printed against the baselines.

    python bench/bench_pretrain.py                       # all pairs, batch 64, 20 steps, auto device
    python bench/bench_pretrain.py --iters 2 --warmup 1  # on a CPU
    python bench/bench_pretrain.py --pairs seq-based_and_graph-based --amp --json bench.json

Goal (issue 4): the NTU 60 recipe (451 epochs x 588 steps of 64) in under 4 h on one H100, i.e. under
55 ms per step with data loading.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.args import add_model_size_args, encoder_kwargs  # noqa: E402
from common.representations import PAIR_REPRESENTATIONS, REPRESENTATION_CHOICES, parse_representation  # noqa: E402
from common.training import select_device  # noqa: E402
from feeders import PretrainDataset, SplitPaths  # noqa: E402
from moco.builder import MoCo, build_moco  # noqa: E402
from moco.step import contrastive_step  # noqa: E402

NTU60_XVIEW_TRAIN_CLIPS = 37646
RECIPE_EPOCHS = 451


def write_clips(folder: Path, num_clips: int, seed: int = 0) -> SplitPaths:
    """data_gen's layout with random-walk joints, written through a memory map (no big RAM copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = np.lib.format.open_memmap(folder / "train_data_joint.npy", mode="w+", dtype=np.float32,
                                     shape=(num_clips, 3, 300, 25, 2))
    frames = rng.integers(60, 301, size=num_clips)
    for i, n in enumerate(frames):
        data[i, :, :n] = np.cumsum(rng.normal(0, 0.01, size=(3, n, 25, 2)), axis=1, dtype=np.float32)
    data.flush()
    del data
    np.save(folder / "train_num_frame.npy", frames.astype(np.int64))
    import pickle

    with open(folder / "train_label.pkl", "wb") as f:
        pickle.dump(([f"S001C001P001R001A{i % 60 + 1:03d}.skeleton" for i in range(num_clips)],
                     [i % 60 for i in range(num_clips)]), f)
    return SplitPaths(folder / "train_data_joint.npy", folder / "train_label.pkl", folder / "train_num_frame.npy")


class PerFrameSequenceEncoder(nn.Module):
    """The reference's EncoderRNN: the bidirectional GRU called once per frame with the carried hidden
    state; the last frame's output is the feature. Shares ``gru`` with the encoder it replaces."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.gru = gru

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, I) -> (N, 2H)
        hidden, out = None, None
        for t in range(x.shape[1]):
            out, hidden = self.gru(x[:, t:t + 1], hidden)
        return out[:, 0]


def use_per_frame_gru(model: MoCo) -> int:
    """Swap every BiGRU's sequence encoder of ``model`` for the per-frame loop; returns how many."""
    swapped = 0
    for enc in model.query_encoders() + model.key_encoders():
        inner = getattr(enc, "encoder", None)
        if inner is not None and isinstance(getattr(inner, "gru", None), nn.GRU):
            enc.encoder = PerFrameSequenceEncoder(inner.gru)
            swapped += 1
    return swapped


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (the device is synchronised around the timing)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return (time.perf_counter() - start) / iters


def make_loader(paths: SplitPaths, representation: str, batch: int, steps: int, workers: int,
                device: torch.device) -> DataLoader:
    dataset = PretrainDataset(paths, parse_representation(representation), seed=0)
    dataset.set_epoch(0)
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * steps,
                            generator=torch.Generator().manual_seed(0))
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)


def bench_pair(representation: str, args: argparse.Namespace, paths: SplitPaths, device: torch.device,
               autocast_dtype: torch.dtype | None) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    base = build_moco(representation, dim=128, K=args.moco_k, mlp=True, **encoder_kwargs(args)).to(device)
    loader = make_loader(paths, representation, args.batch, args.iters + args.warmup, args.workers, device)
    batch = [v.to(device) for v in next(iter(loader))]
    rows = []

    def measure(mode: str, model: MoCo, data: str) -> dict[str, Any]:
        optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)
        if data == "device":
            def step() -> None:
                contrastive_step(model, model, batch, optimizer, autocast_dtype=autocast_dtype)
            seconds = time_steps(step, args.iters, args.warmup, device)
        else:
            it = iter(loader)

            def step() -> None:
                views = [v.to(device, non_blocking=True) for v in next(it)]
                contrastive_step(model, model, views, optimizer, autocast_dtype=autocast_dtype)
            seconds = time_steps(step, args.iters, args.warmup, device)
        row = {"pair": representation, "mode": mode, "ms_per_step": seconds * 1e3, "steps_per_s": 1 / seconds,
               "clips_per_s": args.batch / seconds}
        print(f"{representation:28s} {mode:26s} {row['ms_per_step']:10.1f} {row['steps_per_s']:9.3f} "
              f"{row['clips_per_s']:9.1f}", flush=True)
        return row

    rows.append(measure("compute only", base, "device"))
    if not args.no_loader:
        rows.append(measure("with data loading", copy.deepcopy(base), "loader"))
        rows[-1]["vs_compute_only"] = rows[0]["ms_per_step"] / rows[-1]["ms_per_step"]
    if not args.no_per_frame and "seq-based" in parse_representation(representation):
        slow = copy.deepcopy(base)
        use_per_frame_gru(slow)
        with torch.no_grad():  # same function: the features agree
            fast_q = base.encoder_q(batch[0])
            slow_q = slow.encoder_q(batch[0])
        diff = (fast_q - slow_q).abs().max().item()
        rows.append(measure("compute, per-frame GRU", slow, "device"))
        rows[-1]["max_abs_feature_diff"] = diff
        rows[-1]["speedup_of_whole_sequence_gru"] = rows[-1]["ms_per_step"] / rows[0]["ms_per_step"]
    del base
    return rows


def bench_loader(paths: SplitPaths, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    # Enough batches that the ones prefetched while the workers start do not flatter the rate.
    steps = args.loader_batches + 1
    loader = make_loader(paths, "seq-based_and_graph-based", args.batch, steps, args.workers, device)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    count = 0
    for views in it:
        count += views[0].shape[0]
    seconds = time.perf_counter() - start
    rate = count / seconds if seconds > 0 else float("nan")
    print(f"{'DataLoader alone':28s} {'seq+graph views':26s} {'':10s} {'':9s} {rate:9.1f}", flush=True)
    return {"mode": "loader alone", "clips_per_s": rate, "workers": args.workers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIR_REPRESENTATIONS), choices=REPRESENTATION_CHOICES)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--moco-k", type=int, default=16384)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--no-loader", action="store_true", help="skip the data-loading measurements")
    parser.add_argument("--no-per-frame", action="store_true", help="skip the per-frame GRU baseline")
    parser.add_argument("--loader-batches", type=int, default=50, help="batches timed for the DataLoader alone")
    parser.add_argument("--clips", type=int, default=1024, help="synthetic clips written (sampled with replacement)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    add_model_size_args(parser)
    args = parser.parse_args(argv)
    device = select_device(args.device)
    autocast_dtype = torch.bfloat16 if args.amp and device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}) | torch {torch.__version__} | batch {args.batch} | K {args.moco_k} | "
          f"GRU {args.gru_hidden_size}x{args.gru_layers}, AGCN {args.agcn_base_channels}, HCN {args.hcn_out_channels}"
          f" | amp {autocast_dtype is not None} | {args.iters} timed steps after {args.warmup}", flush=True)
    print(f"{'pair':28s} {'mode':26s} {'ms/step':>10s} {'steps/s':>9s} {'clips/s':>9s}", flush=True)
    results: dict[str, Any] = {"device": str(device), "device_name": name, "torch": torch.__version__,
                               "args": vars(args), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp) / "xview", args.clips)
        for pair in args.pairs:
            results["rows"] += bench_pair(pair, args, paths, device, autocast_dtype)
        if not args.no_loader:
            results["rows"].append(bench_loader(paths, args, device))

    print("\nratios (same run, same device):")
    steps_per_epoch = NTU60_XVIEW_TRAIN_CLIPS // args.batch
    for row in results["rows"]:
        if "speedup_of_whole_sequence_gru" in row:
            print(f"  {row['pair']}: the step with the reference's per-frame GRU takes "
                  f"{row['speedup_of_whole_sequence_gru']:.2f}x as long as with the whole-sequence BiGRU "
                  f"(features agree to {row['max_abs_feature_diff']:.1e})")
        if "vs_compute_only" in row:
            print(f"  {row['pair']}: data loading keeps {row['vs_compute_only']:.2f} of compute-only throughput")
        if row.get("mode") == "with data loading":
            hours = row["ms_per_step"] / 1e3 * steps_per_epoch * RECIPE_EPOCHS / 3600
            print(f"  {row['pair']}: NTU 60 recipe ({RECIPE_EPOCHS} epochs x {steps_per_epoch} steps) "
                  f"would take {hours:.1f} h at this rate (goal: < 4 h on one H100, 55 ms/step)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
