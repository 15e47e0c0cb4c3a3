"""Forward+backward time of the BiGRU encoder vs the reference's frame-by-frame loop, same run.

Both compute the same function (the reference's causal "bidirectional" GRU, last frame's feature,
then ``fc``) with the same weights and input; runs alternate so load changes hit both alike.

    python bench/bench_bigru.py                       # paper size: batch 64, T 64, input 150, hidden 1024, 3 layers
    python bench/bench_bigru.py --hidden 256 --iters 5
    python bench/bench_bigru.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.bigru import BIGRU, CAUSAL_IMPLS, reference_loop_features


def _timed(step: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Seconds for one forward+backward of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def gemm_gflop(batch: int, frames: int, input_size: int, hidden: int, layers: int) -> float:
    """GFLOP of one forward+backward's GEMMs: per layer and direction, the input and recurrent
    projections to 3 gates over batch x frames rows; the backward does twice the forward's work."""
    rows = batch * frames
    forward = sum(
        2 * 2 * rows * 3 * hidden * ((input_size if layer == 0 else 2 * hidden) + hidden) for layer in range(layers)
    )
    return 3 * forward / 1e9


def gemm_peak_gflops(rows: int, inner: int, cols: int, device: torch.device, repeats: int = 5) -> float:
    """This device's fp32 throughput on one large GEMM of the encoder's shape: what no implementation
    of the same arithmetic can beat."""
    a = torch.randn(rows, inner, device=device)
    b = torch.randn(inner, cols, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best / 1e9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--input", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations of each (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--impl", default="auto", choices=CAUSAL_IMPLS, help="our implementation (see causal_bigru)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = BIGRU(args.input, args.hidden, args.layers, num_class=128).to(device)
    model.encoder.causal_impl = args.impl
    x = torch.randn(args.batch, args.frames, args.input, device=device)

    def ours() -> torch.Tensor:
        return model(x)

    def per_frame() -> torch.Tensor:
        return model.fc(reference_loop_features(model.encoder.gru, x))

    with torch.no_grad():
        max_diff = (ours() - per_frame()).abs().max().item()

    for _ in range(args.warmup):
        _timed(ours, device)
        _timed(per_frame, device)
    times: dict[str, list[float]] = {"ours": [], "per-frame loop": []}
    for _ in range(args.iters):
        times["ours"].append(_timed(ours, device))
        times["per-frame loop"].append(_timed(per_frame, device))
    model.zero_grad(set_to_none=True)

    threads = torch.get_num_threads() if device.type == "cpu" else None
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {threads} threads"
    print(
        f"BiGRU forward+backward: batch {args.batch}, T {args.frames}, input {args.input}, "
        f"hidden {args.hidden}, {args.layers} layers, fp32, {where}, impl {args.impl}, "
        f"{args.iters} timed iterations after {args.warmup} warm-up"
    )
    print(f"max |ours - per-frame| on the logits: {max_diff:.2e}")
    if hasattr(os, "getloadavg"):
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(f"{name:>15}: median {medians[name] * 1e3:9.1f} ms/iter  (min {min(values) * 1e3:9.1f})")
    print(f"speed-up (median per-frame / median ours): {medians['per-frame loop'] / medians['ours']:.2f}x")
    # Both versions do the same arithmetic, so the GEMM throughput of this device bounds the speed-up.
    work = gemm_gflop(args.batch, args.frames, args.input, args.hidden, args.layers)
    peak = gemm_peak_gflops(args.batch * args.frames, 2 * args.hidden, 3 * args.hidden, device)
    rates = ", ".join(f"{name} {work / medians[name]:.0f}" for name in medians)
    print(f"GEMM work {work:.0f} GFLOP per iteration; GFLOP/s: {rates}; one large GEMM on this device: {peak:.0f}")
    print(
        f"best possible speed-up over the per-frame loop here (its time / the GEMM work at that rate): "
        f"{medians['per-frame loop'] * peak / work:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
