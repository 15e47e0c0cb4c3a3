#!/usr/bin/env python
"""Pretraining step time at the paper's sizes, every figure from one run on one device.

Each measurement times the full MoCo step (momentum update, forward, InfoNCE, backward, SGD, enqueue) of one
representation pair under one *variant* of the training loop, in one or more modes:
  * compute: one batch kept on the device (what the step itself costs);
  * loader:  memory-mapped clips through PretrainDataset and a DataLoader, copied to the device every step,
             with the per-step meter updates of the training loop (what training costs);
  * data:    the DataLoader alone, batches copied to the device (how fast the data path could feed a step).
A variant is a comma-separated list of changes to the default loop, so one run reports each change's effect:

  precision  default (torch's flags: cuDNN in TF32, matrix products in fp32), fp32 (TF32 off), tf32, bf16
             (autocast; TF32 for what stays in fp32)
  BiGRU      per-frame (the reference's loop: one GRU call per frame), bptt (the hand-written whole-sequence
             backward, the CPU's path), native (one cuDNN call per layer and direction, the GPU's default),
             gru-fp32 (with bf16: the BiGRU outside autocast; CUDA autocast runs cuDNN RNNs in fp16),
             gru-streams (each layer's two directions on two CUDA streams)
  SGD        for-loop, foreach, fused (default: torch's choice, foreach on CUDA)
  host       sync (read the loss every step, as a naive loop does)
  data       pageable (no pinned memory), blocking (blocking copies), no-persist (workers restart every
             epoch; the cost shows in epoch_start_s), workers=N
  capture    graph (the whole step captured once as a CUDA graph and replayed), compile (torch.compile of the
             model's forward)
  cuDNN      no-benchmark (no algorithm search), deterministic (what --seed asks of the training script)

    python bench/bench_pretrain.py                                   # 3 pairs, default variants, auto device
    python bench/bench_pretrain.py --pairs seq-based_and_graph-based --variants bf16 bf16,fused bf16,graph
    python bench/bench_pretrain.py --amp --json bench.json           # bf16 wherever a variant names no precision

Projected hours are those of the NTU 60 x-view recipe (451 epochs of 588 steps of 64 clips) at the measured
rate. Goal: 27 ms per step with data loading for seq-based + graph-based on one H100/H200 (milestone: 55 ms,
the recipe in 4 h).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.precision import PRECISIONS, float32_mode, precision_setup  # noqa: E402
from common.constants import (  # noqa: E402
    PAIR_REPRESENTATIONS,
    REPRESENTATION_CHOICES,
    SAMPLE_SHAPE,
)
from common.representations import parse_representation  # noqa: E402
from common.split_folder import part_paths  # noqa: E402
from engine.args import add_model_size_args, encoder_kwargs  # noqa: E402
from engine.training import AverageMeter, accuracy, select_device  # noqa: E402
from feeders import PretrainDataset, SplitPaths  # noqa: E402
from moco.builder import MoCo, build_moco  # noqa: E402
from moco.step import StepOutput, contrastive_step  # noqa: E402

RECIPE_EPOCHS = 451
RECIPE_STEPS_PER_EPOCH = 588  # NTU 60 x-view: 37,646 training clips // 64
GOAL_MS = 27.0
MILESTONE_MS = 55.0
CROP_RATIO = (0.1, 1.0)  # the pretraining crops of main_moco_inter_skeleton.py

GRU_MODES = ("native", "bptt", "per-frame", "gru-fp32")
OPTIMIZERS = ("for-loop", "foreach", "fused")
FLAGS = {
    "sync": ("sync", True),
    "pageable": ("pinned", False),
    "blocking": ("non_blocking", False),
    "no-persist": ("persistent", False),
    "graph": ("graph", True),
    "compile": ("compile", True),
    "no-benchmark": ("benchmark", False),
    "deterministic": ("deterministic", True),
    "gru-streams": ("gru_streams", True),
}


@dataclass(frozen=True)
class Variant:
    """One way of running the training loop (see the module docstring for each field's token)."""

    name: str
    precision: str = "default"
    gru: str = "auto"
    optimizer: str = "default"
    sync: bool = False
    pinned: bool = True
    non_blocking: bool = True
    persistent: bool = True
    workers: int | None = None
    graph: bool = False
    compile: bool = False
    benchmark: bool = True
    deterministic: bool = False
    gru_streams: bool = False
    tokens: tuple[str, ...] = field(default=(), compare=False)


def variant_tokens() -> list[str]:
    return [*PRECISIONS, *GRU_MODES, *OPTIMIZERS, *FLAGS, "workers=N"]


def parse_variant(spec: str, precision: str = "default") -> Variant:
    """'bf16,fused,graph' -> Variant; ValueError naming the bad token and the valid ones."""
    tokens = tuple(t.strip() for t in spec.split(",") if t.strip())
    if not tokens:
        raise ValueError("an empty variant")
    changes: dict[str, Any] = {"precision": precision}
    for token in tokens:
        if token in PRECISIONS:
            changes["precision"] = token
        elif token in GRU_MODES:
            changes["gru"] = token
        elif token in OPTIMIZERS:
            changes["optimizer"] = token
        elif token in FLAGS:
            key, value = FLAGS[token]
            changes[key] = value
        elif token.startswith("workers=") and token[8:].isdigit():
            changes["workers"] = int(token[8:])
        else:
            raise ValueError(f"unknown variant token {token!r} in {spec!r}; expected: {', '.join(variant_tokens())}")
    if changes.get("gru") == "gru-fp32" and changes["precision"] != "bf16":
        raise ValueError(f"{spec!r}: gru-fp32 only changes a bf16 variant")
    if changes.get("gru_streams") and changes.get("gru", "auto") not in ("auto", "native", "gru-fp32"):
        raise ValueError(f"{spec!r}: gru-streams runs the native (cuDNN) BiGRU")
    return Variant(name=",".join(tokens), tokens=tokens, **changes)


# ------------------------------------------------------------------------------------------------- data


def write_clips(folder: Path, num_clips: int, seed: int = 0) -> SplitPaths:
    """data_gen's layout with random-walk joints, written through a memory map (no big RAM copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = part_paths(folder, "train")
    rng = np.random.default_rng(seed)
    data = np.lib.format.open_memmap(paths.data, mode="w+", dtype=np.float32, shape=(num_clips, *SAMPLE_SHAPE))
    frames = rng.integers(60, 301, size=num_clips)
    for i, n in enumerate(frames):
        data[i, :, :n] = np.cumsum(rng.normal(0, 0.01, size=(3, n, 25, 2)), axis=1, dtype=np.float32)
    data.flush()
    del data
    np.save(paths.num_frame, frames.astype(np.int64))
    with open(paths.label, "wb") as f:
        pickle.dump(
            (
                [f"S001C001P001R001A{i % 60 + 1:03d}.skeleton" for i in range(num_clips)],
                [i % 60 for i in range(num_clips)],
            ),
            f,
        )
    return paths


def split_in(folder: Path) -> SplitPaths:
    """The training part of a prepared split folder (e.g. data/NTU-RGB-D-60-AGCN/xview)."""
    return part_paths(folder, "train")


def make_loader(
    paths: SplitPaths, pair: str, batch: int, steps: int, variant: Variant, workers: int, device: torch.device
) -> DataLoader:
    """The training loop's DataLoader over exactly ``steps`` batches (clips drawn with replacement)."""
    dataset = PretrainDataset(paths, parse_representation(pair), l_ratio=CROP_RATIO, seed=0)
    dataset.set_epoch(0)
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=batch * steps, generator=torch.Generator().manual_seed(0)
    )
    workers = variant.workers if variant.workers is not None else workers
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=variant.pinned and device.type == "cuda",
        drop_last=True,
        persistent_workers=variant.persistent and workers > 0,
    )


# ----------------------------------------------------------------------------------------------- models


class PerFrameSequenceEncoder(nn.Module):
    """The reference's EncoderRNN: the bidirectional GRU called once per frame with the carried hidden
    state; the last frame's output is the feature. Shares ``gru`` with the encoder it replaces."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.gru = gru

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, I) -> (N, 2H)
        hidden, out = None, None
        for t in range(x.shape[1]):
            out, hidden = self.gru(x[:, t : t + 1], hidden)
        return out[:, 0]


class Float32Island(nn.Module):
    """Runs ``inner`` outside autocast, in float32 (TF32 where enabled)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.inner(x.float())


def sequence_encoders(model: MoCo) -> list[nn.Module]:
    """The BiGRU encoders (query and key) of ``model``."""
    return [
        enc
        for enc in model.query_encoders() + model.key_encoders()
        if isinstance(getattr(getattr(enc, "encoder", None), "gru", None), nn.GRU)
    ]


class TwoStreamBiGRU(nn.Module):
    """The whole-sequence BiGRU (native cuDNN calls) with each layer's two directions on two CUDA streams: both
    run forwards in time over the same input, so they are independent, and at batch 64 each recurrence is
    latency-bound. Shares ``gru`` with the encoder it replaces."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.gru = gru
        self._side: torch.cuda.Stream | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, I) -> (N, 2H)
        from models.bigru import _CUDNN_CHUNK_WARNING, _direction_weights, _native_forward_gru

        gru, main = self.gru, torch.cuda.current_stream(x.device)
        if self._side is None:
            self._side = torch.cuda.Stream(x.device)
        layer_input = x
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CUDNN_CHUNK_WARNING)
            for layer in range(gru.num_layers):
                self._side.wait_stream(main)
                with torch.cuda.stream(self._side):
                    rev = _native_forward_gru(layer_input, _direction_weights(gru, layer, True), gru.training)
                layer_input.record_stream(self._side)
                fwd = _native_forward_gru(layer_input, _direction_weights(gru, layer, False), gru.training)
                main.wait_stream(self._side)
                rev.record_stream(main)
                layer_input = torch.cat((fwd, rev), dim=-1)
        return layer_input[:, -1]


def apply_gru_mode(model: MoCo, mode: str, streams: bool = False) -> int:
    """Switch every BiGRU of ``model`` to ``mode`` (one of GRU_MODES or 'auto'), its two directions on two
    CUDA streams if ``streams``; returns how many BiGRUs there are."""
    encoders = sequence_encoders(model)
    for enc in encoders:
        if streams:
            enc.encoder = TwoStreamBiGRU(enc.encoder.gru)
        if mode == "per-frame":
            enc.encoder = PerFrameSequenceEncoder(enc.encoder.gru)
        elif mode == "gru-fp32":
            enc.encoder = Float32Island(enc.encoder)
        elif mode in ("native", "bptt"):
            enc.encoder.causal_impl = mode
    return len(encoders)


def build_model(pair: str, args: argparse.Namespace, device: torch.device) -> MoCo:
    torch.manual_seed(0)
    return build_moco(pair, dim=128, K=args.moco_k, m=0.999, T=0.07, mlp=True, **encoder_kwargs(args)).to(device)


def make_optimizer(model: MoCo, kind: str) -> torch.optim.Optimizer:
    """The training script's SGD (lr 0.01, momentum 0.9, weight decay 1e-4) with the chosen implementation."""
    impl = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    return torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4, **impl[kind])


# ------------------------------------------------------------------------------------------------ steps


class GraphedStep:
    """The whole step captured once as a CUDA graph: inputs are copied into static tensors, then replayed."""

    def __init__(
        self, step: Callable[[Sequence[torch.Tensor]], StepOutput], example: Sequence[torch.Tensor], warmup: int = 3
    ) -> None:
        self.static = [v.clone() for v in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up away from the default stream, as capture requires
            for _ in range(warmup):
                step(self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        cache = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)  # cached weight casts would not survive outside the capture
        try:
            # thread_local: the DataLoader's pinning thread may touch CUDA while the step is captured
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.out = step(self.static)
        finally:
            torch.set_autocast_cache_enabled(cache)

    def __call__(self, views: Sequence[torch.Tensor]) -> StepOutput:
        for static, view in zip(self.static, views):
            static.copy_(view, non_blocking=True)
        self.graph.replay()
        return self.out


def build_step(
    base: MoCo, variant: Variant, example: Sequence[torch.Tensor]
) -> Callable[[Sequence[torch.Tensor]], StepOutput]:
    """The step of ``variant`` as a function of the views on the device."""
    _, autocast_dtype = precision_setup(variant.precision)
    optimizer = make_optimizer(base, variant.optimizer)
    model = torch.compile(base) if variant.compile else base

    def step(views: Sequence[torch.Tensor]) -> StepOutput:
        return contrastive_step(model, base, views, optimizer, autocast_dtype=autocast_dtype)

    if variant.graph:
        if example[0].device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        return GraphedStep(step, example)
    return step


class StepMeters:
    """The training loop's per-step bookkeeping: loss and per-stream accuracy, kept on the device."""

    def __init__(self) -> None:
        self.loss = AverageMeter("loss")
        self.acc: list[AverageMeter] = []

    def update(self, out: StepOutput, sync: bool) -> None:
        n = out.logits[0].shape[0]
        self.loss.update(out.loss, n)
        self.acc = self.acc or [AverageMeter(f"acc_s{i + 1}") for i in range(len(out.logits))]
        for meter, logits in zip(self.acc, out.logits):
            target = torch.zeros(n, dtype=torch.long, device=logits.device)
            meter.update(accuracy(logits, target)[0], n)
        if sync:
            float(out.loss)  # what a loop that prints or checks the loss every step does


# ----------------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_windows(
    step: Callable[[], Any], warmup: int, iters: int, repeats: int, device: torch.device
) -> tuple[list[float], float]:
    """Seconds per step of ``repeats`` windows of ``iters`` steps after ``warmup`` steps, and the first step's
    seconds (compilation, capture and algorithm search show there). The device is synchronised only between
    windows, as the training loop synchronises only every few steps."""
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    windows = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        windows.append((time.perf_counter() - start) / iters)
    return windows, first


def recipe_hours(ms_per_step: float, epoch_start_s: float = 0.0) -> float:
    return (ms_per_step / 1e3 * RECIPE_STEPS_PER_EPOCH + epoch_start_s) * RECIPE_EPOCHS / 3600


def measure_compute(
    step: Callable, batch: list[torch.Tensor], variant: Variant, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    meters = StepMeters()
    windows, first = time_windows(
        lambda: meters.update(step(batch), variant.sync), args.warmup, args.iters, args.repeats, device
    )
    return {"windows_ms": [w * 1e3 for w in windows], "first_step_s": first}


def measure_loader(
    step: Callable, pair: str, variant: Variant, args: argparse.Namespace, paths: SplitPaths, device: torch.device
) -> dict[str, Any]:
    """Steps fed by the DataLoader; then the first batch of a new epoch (workers restarted unless persistent)."""
    steps = args.warmup + args.iters * args.repeats
    loader = make_loader(paths, pair, args.batch, steps, variant, args.workers, device)
    meters = StepMeters()
    it = iter(loader)

    def one() -> None:
        views = [v.to(device, non_blocking=variant.non_blocking) for v in next(it)]
        meters.update(step(views), variant.sync)

    windows, first = time_windows(one, args.warmup, args.iters, args.repeats, device)
    if next(it, None) is not None:
        raise RuntimeError("the loader holds more batches than were timed")
    start = time.perf_counter()
    next(iter(loader))
    epoch_start = time.perf_counter() - start
    return {"windows_ms": [w * 1e3 for w in windows], "first_step_s": first, "epoch_start_s": epoch_start}


# ------------------------------------------------------------------------------------------------- runs


def measure_data(
    pair: str, variant: Variant, args: argparse.Namespace, paths: SplitPaths, device: torch.device
) -> dict[str, Any]:
    """The DataLoader alone (batches copied to the device): how fast the data path could feed a step. The
    batches the workers prefetch (2 each) are drained first and every window is long against them, so the
    rate is the workers' own."""
    workers = variant.workers if variant.workers is not None else args.workers
    warmup, iters = 2 * workers + 1, max(args.iters, 4 * workers)
    it = iter(make_loader(paths, pair, args.batch, warmup + iters * args.repeats, variant, args.workers, device))

    def one() -> None:
        for view in next(it):
            view.to(device, non_blocking=variant.non_blocking)

    windows, first = time_windows(one, warmup, iters, args.repeats, device)
    return {"windows_ms": [w * 1e3 for w in windows], "first_step_s": first, "workers": workers}


def feature_difference(base: MoCo, batch: Sequence[torch.Tensor], variant: Variant) -> float:
    """Max |default - variant| of the first query encoder's features with the variant's BiGRU (in float32:
    every BiGRU path computes the same function)."""
    other = copy.deepcopy(base)
    apply_gru_mode(other, variant.gru, variant.gru_streams)
    with torch.no_grad():
        return (base.encoder_q(batch[0]) - other.encoder_q(batch[0])).abs().max().item()


def modes_of(pair: str, variant: Variant, args: argparse.Namespace, measured_data: set[tuple]) -> list[str]:
    """The modes to measure: the per-frame loop is a baseline of the step alone; the DataLoader alone ('data')
    depends only on the pair and the data settings, so it is measured once for each."""
    if variant.gru == "per-frame":
        return ["compute"]
    modes = []
    for mode in args.modes:
        if mode == "data":
            key = (pair, variant.pinned, variant.non_blocking, variant.persistent, variant.workers)
            if key in measured_data:
                continue
            measured_data.add(key)
        modes.append(mode)
    return modes


def run_variant(
    pair: str,
    variant: Variant,
    args: argparse.Namespace,
    paths: SplitPaths,
    device: torch.device,
    measured_data: set[tuple],
) -> list[dict[str, Any]]:
    """Every requested mode of one (pair, variant); a failure becomes a row with its error."""
    if variant.gru != "auto" and "seq-based" not in parse_representation(pair):
        return []
    modes = modes_of(pair, variant, args, measured_data)
    if (variant.graph or variant.gru_streams) and device.type != "cuda":
        return [skipped_row(pair, variant, mode, "CUDA streams and graphs need a CUDA device") for mode in modes]
    tf32, _ = precision_setup(variant.precision)
    rows = []
    benchmark = variant.benchmark and not variant.deterministic
    with float32_mode(
        tf32 if device.type == "cuda" else None, benchmark=benchmark, deterministic=variant.deterministic or None
    ):
        base = build_model(pair, args, device)
        example = make_loader(paths, pair, args.batch, 1, replace(variant, workers=0), 0, device)
        batch = [v.to(device) for v in next(iter(example))]
        extra: dict[str, Any] = {}
        if (variant.gru != "auto" or variant.gru_streams) and pair.startswith("seq-based"):
            extra["max_abs_feature_diff"] = feature_difference(base, batch, variant)
        apply_gru_mode(base, variant.gru, variant.gru_streams)
        start = time.perf_counter()
        try:
            step = build_step(base, variant, batch)
        except Exception as exc:  # a variant this device or torch cannot run: reported, not fatal
            return [error_row(pair, variant, mode, exc) for mode in modes]
        extra["setup_s"] = time.perf_counter() - start
        for mode in modes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                if mode == "compute":
                    timing = measure_compute(step, batch, variant, args, device)
                elif mode == "loader":
                    timing = measure_loader(step, pair, variant, args, paths, device)
                else:
                    timing = measure_data(pair, variant, args, paths, device)
            except Exception as exc:
                rows.append(error_row(pair, variant, mode, exc))
                continue
            rows.append(result_row(pair, variant, mode, timing, args, device, extra))
        del step, base
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def error_row(pair: str, variant: Variant, mode: str, exc: BaseException) -> dict[str, Any]:
    message = (str(exc).strip().splitlines() or [""])[0][:300]
    row = {"pair": pair, "variant": variant.name, "mode": mode, "error": f"{type(exc).__name__}: {message}"}
    print(f"{short(pair):18s} {variant.name:24s} {mode:8s} failed: {row['error']}", flush=True)
    return row


def skipped_row(pair: str, variant: Variant, mode: str, reason: str) -> dict[str, Any]:
    print(f"{short(pair):18s} {variant.name:24s} {mode:8s} skipped: {reason}", flush=True)
    return {"pair": pair, "variant": variant.name, "mode": mode, "skipped": reason}


def result_row(
    pair: str,
    variant: Variant,
    mode: str,
    timing: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
    extra: dict[str, Any],
) -> dict[str, Any]:
    ms = statistics.median(timing["windows_ms"])
    row = {
        "pair": pair,
        "variant": variant.name,
        "mode": mode,
        "ms_per_step": ms,
        "clips_per_s": args.batch / ms * 1e3,
        **timing,
        **extra,
        "settings": asdict(variant),
    }
    if mode != "data":
        row["recipe_hours"] = recipe_hours(ms, timing.get("epoch_start_s", 0.0))
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    spread = f"{min(timing['windows_ms']):.1f}-{max(timing['windows_ms']):.1f}"
    start = f"{timing['epoch_start_s']:7.2f}" if "epoch_start_s" in timing else f"{'':7s}"
    hours = f"{row['recipe_hours']:8.1f}" if "recipe_hours" in row else f"{'':8s}"
    print(
        f"{short(pair):18s} {variant.name:24s} {mode:8s} {ms:9.1f} {spread:>13s} {row['clips_per_s']:8.0f} "
        f"{hours} {timing['first_step_s']:8.2f} {start}",
        flush=True,
    )
    return row


def short(pair: str) -> str:
    return "+".join(name.split("-")[0] for name in parse_representation(pair))


def compare_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Each row against the first variant's row of the same pair and mode, and the per-frame baselines
    against the same precision's whole-sequence BiGRU."""
    lines = []
    timed = [r for r in rows if "ms_per_step" in r]
    for row in timed:
        first = next(r for r in timed if r["pair"] == row["pair"] and r["mode"] == row["mode"])
        if row is not first:
            row["vs_first_variant"] = row["ms_per_step"] / first["ms_per_step"]
        if row["settings"]["gru"] == "per-frame":
            same = [
                r
                for r in timed
                if r["pair"] == row["pair"]
                and r["mode"] == "compute"
                and r["settings"]["gru"] == "auto"
                and r["settings"]["precision"] == row["settings"]["precision"]
            ]
            if same:
                row["whole_sequence_speedup"] = row["ms_per_step"] / same[0]["ms_per_step"]
                lines.append(
                    f"  {short(row['pair'])}: the reference's per-frame GRU loop takes "
                    f"{row['whole_sequence_speedup']:.1f}x as long per step ({row['variant']}; features "
                    f"agree to {row['max_abs_feature_diff']:.1e})"
                )
    goal = [r for r in timed if r["pair"] == "seq-based_and_graph-based" and r["mode"] == "loader"]
    if goal:
        best = min(goal, key=lambda r: r["ms_per_step"])
        verdict = (
            "meets the goal"
            if best["ms_per_step"] <= GOAL_MS
            else "meets the milestone"
            if best["ms_per_step"] <= MILESTONE_MS
            else "misses the milestone"
        )
        lines.append(
            f"  seq+graph with data loading: best {best['ms_per_step']:.1f} ms/step ({best['variant']}), "
            f"{verdict} (goal {GOAL_MS:.0f} ms, milestone {MILESTONE_MS:.0f} ms); recipe "
            f"{best['recipe_hours']:.1f} h"
        )
    return lines


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        info.update(
            device_name=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cpus=os.cpu_count(),
        )
    else:
        info.update(device_name=f"CPU, {torch.get_num_threads()} threads", cpus=os.cpu_count())
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIR_REPRESENTATIONS), choices=REPRESENTATION_CHOICES)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["default", "tf32", "bf16", "default,per-frame"],
        help="comma-separated tokens each (see the module docstring): " + ", ".join(variant_tokens()),
    )
    parser.add_argument(
        "--precision",
        default="default",
        choices=PRECISIONS,
        help="precision of the variants that name none (default: torch's own flags)",
    )
    parser.add_argument("--amp", action="store_true", help="same as --precision bf16")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["compute", "loader", "data"],
        choices=("compute", "loader", "data"),
        help="compute: one batch kept on the device; loader: fed by the DataLoader, as training is; "
        "data: the DataLoader alone (once per pair and data settings)",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--moco-k", type=int, default=16384)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a prepared split folder (train_data_joint.npy ...) to load from; default: "
        "--clips random-walk clips written to a temporary folder",
    )
    parser.add_argument("--clips", type=int, default=1024, help="clips written when --data is not given")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    add_model_size_args(parser)
    args = parser.parse_args(argv)
    for flag in ("batch", "iters", "repeats", "warmup", "moco_k", "clips"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.moco_k % args.batch:
        parser.error(f"--moco-k {args.moco_k} must be a multiple of --batch {args.batch}")
    try:
        args.variant_list = [parse_variant(v, "bf16" if args.amp else args.precision) for v in args.variants]
    except ValueError as exc:
        parser.error(str(exc))
    if args.data is not None and not split_in(args.data).data.is_file():
        parser.error(f"--data {args.data}: no train_data_joint.npy there (a folder data_gen wrote)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device)
    info = device_info(device)
    print(
        f"device: {device} ({info['device_name']}) | torch {torch.__version__} | batch {args.batch} | "
        f"K {args.moco_k} | GRU {args.gru_hidden_size}x{args.gru_layers}, AGCN {args.agcn_base_channels}, "
        f"HCN {args.hcn_out_channels} | {args.repeats} windows of {args.iters} steps after {args.warmup} | "
        f"{args.workers} workers",
        flush=True,
    )
    print(
        f"{'pair':18s} {'variant':24s} {'mode':8s} {'ms/step':>9s} {'windows':>13s} {'clips/s':>8s} "
        f"{'recipe h':>8s} {'first s':>8s} {'epoch s':>7s}",
        flush=True,
    )
    results: dict[str, Any] = {
        **info,
        "args": {k: v for k, v in vars(args).items() if k != "variant_list"},
        "recipe": {"epochs": RECIPE_EPOCHS, "steps_per_epoch": RECIPE_STEPS_PER_EPOCH},
        "goal_ms": GOAL_MS,
        "milestone_ms": MILESTONE_MS,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = split_in(args.data) if args.data is not None else write_clips(Path(tmp) / "xview", args.clips)
        measured_data: set[tuple] = set()
        for pair in args.pairs:
            for variant in args.variant_list:
                results["rows"] += run_variant(pair, variant, args, paths, device, measured_data)
                save_json(args.json, results)  # after every variant: a run cut short keeps what it measured
    lines = compare_rows(results["rows"])
    if lines:
        print("\nsame run, same device:\n" + "\n".join(lines), flush=True)
    save_json(args.json, results)
    return 1 if any("error" in row for row in results["rows"]) else 0


def save_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
