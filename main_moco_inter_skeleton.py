#!/usr/bin/env python
"""Self-supervised pretraining: inter-skeleton contrast (two representations, the paper's method) or
intra-skeleton contrast (one representation, its baseline) with MoCo.

The paper's recipe (NTU 60 cross-view; see script_pretrain.sh for the others):

    python main_moco_inter_skeleton.py --lr 0.01 --batch-size 64 --mlp --moco-t 0.07 --moco-k 16384 \\
        --checkpoint-path ./checkpoints/ntu_60_cross_view/interskeleton_seq_based_graph_based \\
        --schedule 351 --epochs 451 --pre-dataset ntu60 --protocol cross_view \\
        --skeleton-representation seq-based_and_graph-based

Devices: the CPU; one GPU; every visible GPU of one machine through nn.DataParallel (what a plain
``python`` launch does when several GPUs are visible, as the reference's scripts run it); or
``torchrun --nproc_per_node=N [--nnodes=M ...]`` (DistributedDataParallel, one process per GPU).
``--batch-size`` is always the total over all GPUs and processes.

Outputs in --checkpoint-path: ``checkpoint_{epoch:04d}.pth.tar`` when epoch % --save-freq == 0 and at the
last epoch (0-based, as the reference numbers them: 451 epochs end with checkpoint_0450),
``checkpoint_last.pth.tar`` after every epoch and on SIGINT/SIGTERM, TensorBoard scalars.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.args import (
    WINDOW_SIZE,
    add_data_args,
    add_model_size_args,
    add_optim_args,
    add_runtime_args,
    check_window_size,
    encoder_kwargs,
)
from common.checkpoints import read_checkpoint, recorded_window_size
from common.distributed import (
    DistContext,
    ResumableSampler,
    all_reduce_,
    barrier,
    broadcast_int,
    broadcast_module_state,
    cleanup,
    env_is_main_process,
    env_world_size,
    setup,
)
from common.representations import REPRESENTATION_CHOICES, parse_representation
from common.training import (
    AverageMeter,
    accuracy,
    args_to_dict,
    atomic_torch_save,
    capture_rng_state,
    learning_rate_at,
    restore_rng_state,
    seed_everything,
    set_learning_rate,
    summary_writer,
    write_json_atomic,
)
from feeders import SPATIAL_AUGMENTS, PretrainDataset, check_split, split_paths
from moco.builder import MoCo, build_moco, checkpoint_state_dict, load_checkpoint_state_dict
from moco.step import contrastive_step

# The reference's pretraining feeder: crops of 10-100% of the valid frames, resized to --window-size (64).
CROP_RATIO = (0.1, 1.0)
CHECKPOINT_FORMAT = "skeleton-contrast-moco/1"
LAST_CHECKPOINT = "checkpoint_last.pth.tar"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main_moco_inter_skeleton.py",
        description="Inter-skeleton (pair of representations) or intra-skeleton (one) MoCo pretraining.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--skeleton-representation", required=True, choices=REPRESENTATION_CHOICES,
                     help="a pair (inter-skeleton contrast; the first is encoder_q, the second encoder_r) or one "
                          "representation (intra-skeleton contrast)")
    run.add_argument("--checkpoint-path", default="./checkpoints",
                     help="folder for checkpoints and TensorBoard logs (default ./checkpoints)")
    run.add_argument("--resume", default="", metavar="PATH",
                     help="continue exactly from a checkpoint of this script (e.g. checkpoint_last.pth.tar)")
    run.add_argument("--save-freq", type=int, default=10, metavar="N",
                     help="write checkpoint_{epoch:04d} when epoch %% N == 0 and at the last epoch (default 10)")
    run.add_argument("--metrics-json", default=None, metavar="PATH",
                     help="write the final loss and accuracies, per-epoch history and arguments here")

    add_optim_args(parser, epochs=200, batch_size=256, lr=0.001, schedule=[100, 160], weight_decay=1e-4, cos=True)

    moco = parser.add_argument_group("MoCo")
    moco.add_argument("--moco-dim", type=int, default=128, help="feature dimension (default 128)")
    moco.add_argument("--moco-k", type=int, default=16384, help="queue size; number of negative keys (default 16384)")
    moco.add_argument("--moco-m", type=float, default=0.999, help="momentum of the key encoders (default 0.999)")
    moco.add_argument("--moco-t", type=float, default=0.07, help="softmax temperature (default 0.07)")
    moco.add_argument("--mlp", action="store_true", help="2-layer MLP projection head on every encoder")
    moco.add_argument("--shuffle-bn", action="store_true",
                      help="shuffle the key batch across GPUs/processes so BatchNorm cannot leak the positive "
                           "(MoCo's shuffling BN; only matters with several GPUs)")
    moco.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on the CPU)")
    moco.add_argument("--spatial-augment", default="shear_or_corruption", choices=SPATIAL_AUGMENTS,
                      help="what follows each view's crop-resize: the paper's shear or joint corruption "
                           "(p = 0.5 each, the default), always one of them, or none (crop-resize only; "
                           "the demo's choice for a few hundred steps on tiny data)")

    add_data_args(parser, "--pre-dataset")
    add_model_size_args(parser)
    add_runtime_args(parser, print_freq=10, workers=32,
                     workers_help="data loading workers, capped at the CPUs available to each process")
    parser.set_defaults(protocol="cross_subject")  # the reference's pretraining default
    return parser


class SetupError(Exception):
    """A problem found before training starts: reported as one line and a non-zero exit."""


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_arguments(args: argparse.Namespace, representations: tuple[str, ...], world_size: int) -> None:
    """Option combinations that cannot work, before anything is built."""
    positive = {"--batch-size": args.batch_size, "--epochs": args.epochs, "--moco-k": args.moco_k,
                "--moco-dim": args.moco_dim, "--save-freq": args.save_freq, "--print-freq": args.print_freq}
    for flag, value in positive.items():
        if value <= 0:
            raise SetupError(f"{flag} must be positive, got {value}")
    if args.workers < 0:
        raise SetupError(f"--workers must be >= 0, got {args.workers}")
    if not 0.0 <= args.moco_m <= 1.0:
        raise SetupError(f"--moco-m must lie in [0, 1], got {args.moco_m}")
    if args.moco_t <= 0:
        raise SetupError(f"--moco-t must be positive, got {args.moco_t}")
    if args.start_epoch < 0:
        raise SetupError(f"--start-epoch must be >= 0, got {args.start_epoch}")
    if args.batch_size % world_size:
        raise SetupError(f"--batch-size {args.batch_size} must be divisible by the {world_size} processes")
    if args.moco_k % args.batch_size:
        raise SetupError(f"--moco-k {args.moco_k} must be divisible by --batch-size {args.batch_size} "
                         "(each step replaces one whole block of the queue)")
    try:
        check_window_size(args.window_size, representations)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def load_resume_checkpoint(path: str, args: argparse.Namespace) -> dict[str, Any]:
    try:
        checkpoint = read_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise SetupError(f"--resume: {exc}") from None
    for field in ("epoch", "state_dict", "optimizer"):
        if field not in checkpoint:
            raise SetupError(f"--resume {path}: not a pretraining checkpoint (no {field!r} entry)")
    saved = checkpoint.get("args", {}).get("skeleton_representation")
    if saved is not None and saved != args.skeleton_representation:
        raise SetupError(f"--resume {path} was pretrained as {saved!r}, "
                         f"not --skeleton-representation {args.skeleton_representation!r}")
    window = recorded_window_size(checkpoint)
    window = WINDOW_SIZE if window is None else window
    if window != args.window_size:
        raise SetupError(f"--resume {path} was pretrained with --window-size {window}, "
                         f"not {args.window_size}: the views would change mid-run")
    return checkpoint


# ---------------------------------------------------------------------------------------------------
# Stopping: signals and non-finite losses
# ---------------------------------------------------------------------------------------------------


class StopRequest:
    """SIGINT/SIGTERM set a flag; training stops at the next step boundary, saves checkpoint_last and
    exits with 128 + signal number. A second signal stops at once (no save)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: saving {LAST_CHECKPOINT} at the next step boundary "
              "(send it again to quit without saving)", file=sys.stderr, flush=True)


def _ignore_sigint_in_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the workers must keep feeding the main process until it
    # has reached a step boundary and saved.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class NonFiniteLoss(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------------


class Meters:
    """Epoch averages of the loss and each stream's contrast accuracy, kept on the device."""

    def __init__(self, streams: int) -> None:
        self.loss = AverageMeter("loss")
        self.acc = [AverageMeter(f"acc_s{i + 1}") for i in range(streams)]

    def update(self, loss: torch.Tensor, logits: Sequence[torch.Tensor]) -> None:
        n = logits[0].shape[0]
        self.loss.update(loss, n)
        for meter, lg in zip(self.acc, logits):
            target = torch.zeros(lg.shape[0], dtype=torch.long, device=lg.device)
            meter.update(accuracy(lg, target, topk=(1,))[0], n)

    def state(self) -> dict[str, Any]:
        """Sums and count as plain floats (a host sync): for checkpoints of an interrupted epoch."""
        def f(value: Any) -> float:
            return float(value.item() if isinstance(value, torch.Tensor) else value)

        return {"loss_sum": f(self.loss.sum), "acc_sums": [f(m.sum) for m in self.acc], "count": self.loss.count}

    def load_state(self, state: dict[str, Any]) -> None:
        self.loss.sum, self.loss.count = float(state["loss_sum"]), int(state["count"])
        for meter, value in zip(self.acc, state["acc_sums"]):
            meter.sum, meter.count = float(value), int(state["count"])

    def global_averages(self, device: torch.device) -> dict[str, float]:
        """Averages over all ranks (one small all-reduce)."""
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64

        def t(value: Any) -> torch.Tensor:
            return torch.as_tensor(value, dtype=dtype, device=device).reshape(())

        totals = torch.stack([t(self.loss.sum)] + [t(m.sum) for m in self.acc] + [t(self.loss.count)])
        totals = all_reduce_(totals, "sum").tolist()
        count = max(totals[-1], 1.0)
        out = {"train_loss": totals[0] / count}
        for i, value in enumerate(totals[1:-1]):
            out[f"acc_s{i + 1}"] = value / count
        return out


def step_seed(data_seed: int, epoch: int, step: int) -> int:
    """A seed for the randomness of one step (shuffling BN), independent of where a run was resumed."""
    return int(np.random.SeedSequence((data_seed, epoch, step)).generate_state(1, np.uint64)[0] >> 1)


class EpochResult(NamedTuple):
    averages: dict[str, float]
    steps_done: int  # steps of this epoch completed, counting those before a resume
    stop: bool  # a signal asked to stop (agreed by all ranks); steps_done < steps_per_epoch if mid-epoch


def train_one_epoch(
    model: nn.Module,
    base: MoCo,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    ctx: DistContext,
    args: argparse.Namespace,
    steps_per_epoch: int,
    start_step: int,
    meters: Meters,
    stop: StopRequest,
    autocast_dtype: torch.dtype | None,
    data_seed: int,
) -> EpochResult:
    """Train until the epoch ends or a stop is agreed on. The host waits for the device only every
    --print-freq steps, where it reads the loss, checks it is finite and (under torchrun) agrees with
    the other ranks on stopping."""
    model.train()
    device = ctx.device
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    # In a log file (not a terminal) the bar redraws rarely, so logs stay readable.
    bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch}", leave=False,
               disable=not ctx.is_main, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 60.0)
    step = start_step
    stopping = False
    try:
        for views in loader:
            views = [v.to(device, non_blocking=True) for v in views]
            out = contrastive_step(model, base, views, optimizer, rank=ctx.rank, world_size=ctx.world_size,
                                   shuffle_bn=args.shuffle_bn, shuffle_seed=step_seed(data_seed, epoch, step),
                                   autocast_dtype=autocast_dtype)
            nonfinite |= ~torch.isfinite(out.loss)
            meters.update(out.loss, out.logits)
            step += 1
            bar.update(1)
            sync_point = (step - 1) % args.print_freq == 0 or step == steps_per_epoch
            if ctx.distributed:
                # Ranks must stop at the same step, so they agree only where they synchronise anyway.
                if not sync_point:
                    continue
                flags = torch.stack([nonfinite.to(torch.float32),
                                     torch.tensor(float(stop.signum is not None), device=device)])
                bad, stopping = (all_reduce_(flags, "max") > 0).tolist()
            else:
                stopping = stop.signum is not None
                if not (sync_point or stopping):
                    continue
                bad = bool(nonfinite)
            if bad:
                raise NonFiniteLoss(f"non-finite loss (nan or inf) at epoch {epoch}, step {step}")
            postfix = {"loss": f"{meters.loss.avg:.4f}"}
            postfix.update({m.name: f"{m.avg:.2f}" for m in meters.acc})
            bar.set_postfix(postfix, refresh=False)
            if stopping:
                break
    finally:
        bar.close()
    return EpochResult(meters.global_averages(device), step, stopping)


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def make_checkpoint(base: MoCo, optimizer: torch.optim.Optimizer, args: argparse.Namespace, *, epoch: int,
                    step: int, data_seed: int, meters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything --resume needs, readable with ``torch.load(weights_only=True)``.

    epoch: the epoch to run next (the reference's epoch + 1 convention); step: how many steps of that
    epoch are already done (0 except after a signal).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "arch": args.skeleton_representation,
        "state_dict": checkpoint_state_dict(base),
        "optimizer": optimizer.state_dict(),
        "args": args_to_dict(args),
        "data_seed": int(data_seed),
        "world_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
        "rng": capture_rng_state(),
        "meters": meters or {},
    }


def numbered_name(epoch: int) -> str:
    """The reference's name for the checkpoint written after (0-based) ``epoch``."""
    return f"checkpoint_{epoch:04d}.pth.tar"


def save_checkpoint(state: dict[str, Any], folder: Path, numbered_epoch: int | None) -> Path:
    """Write checkpoint_last (and checkpoint_{numbered_epoch:04d}), each atomically; the numbered file
    is written once and hard-linked (or copied) to checkpoint_last."""
    last = folder / LAST_CHECKPOINT
    if numbered_epoch is None:
        return atomic_torch_save(state, last)
    numbered = atomic_torch_save(state, folder / numbered_name(numbered_epoch))
    tmp = folder / f".{LAST_CHECKPOINT}.{os.getpid()}.link"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(numbered, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(numbered, tmp)
    os.replace(tmp, last)
    return numbered


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def wrap_model(base: MoCo, ctx: DistContext, requested_device: str) -> tuple[nn.Module, str]:
    """DDP under torchrun, DataParallel when one process sees several GPUs, else the model itself."""
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # Queues and BatchNorm statistics are not broadcast each step: queues are kept identical by
        # gathering keys, and only rank 0's statistics are ever saved.
        ddp = nn.parallel.DistributedDataParallel(base, device_ids=ids, broadcast_buffers=False)
        return ddp, f"DistributedDataParallel over {ctx.world_size} processes"
    if ctx.device.type == "cuda" and requested_device in ("auto", "cuda") and torch.cuda.device_count() > 1:
        return nn.DataParallel(base), f"DataParallel over {torch.cuda.device_count()} GPUs"
    return base, "single device"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_rank = env_is_main_process()
    try:
        representations = parse_representation(args.skeleton_representation)
        check_arguments(args, representations, env_world_size())
        try:
            paths = split_paths(args.data_root, args.pre_dataset, args.protocol, "train")
            num_clips = check_split(paths, need_labels=False)
        except (FileNotFoundError, ValueError) as exc:
            raise SetupError(str(exc)) from None
        if num_clips < args.batch_size:
            raise SetupError(f"{paths.data} holds {num_clips} clips, fewer than one batch of {args.batch_size}")
        checkpoint = load_resume_checkpoint(args.resume, args) if args.resume else None
    except SetupError as exc:
        # One line; only rank 0 says it under torchrun.
        raise SystemExit(f"{parser.prog}: error: {exc}" if main_rank else 2) from None

    ctx = setup(args.device)
    try:
        return _train(args, ctx, representations, paths, checkpoint)
    except SetupError as exc:
        raise SystemExit(f"{parser.prog}: error: {exc}" if ctx.is_main else 2) from None
    except NonFiniteLoss as exc:
        last = Path(args.checkpoint_path) / LAST_CHECKPOINT
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"
        raise SystemExit(f"{parser.prog}: error: {exc}; stopped without saving ({kept}). "
                         "Try a lower --lr, or run without --amp." if ctx.is_main else 1) from None
    finally:
        cleanup()


def _train(args: argparse.Namespace, ctx: DistContext, representations: tuple[str, ...], paths: Any,
           checkpoint: dict[str, Any] | None) -> int:
    device = ctx.device
    if args.seed is not None:
        seed_everything(args.seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    autocast_dtype = None
    if args.amp:
        if device.type == "cuda":
            autocast_dtype = torch.bfloat16
        else:
            warnings.warn("--amp applies to CUDA only; training in float32 on the CPU")

    # Augmentations and sampling order are functions of (data_seed, epoch, index): a resumed run draws
    # the same clips and crops as an uninterrupted one.
    if checkpoint is not None and "data_seed" in checkpoint:
        data_seed = int(checkpoint["data_seed"])
    else:
        data_seed = args.seed if args.seed is not None else secrets.randbits(62)
    data_seed = broadcast_int(data_seed, device)  # each rank must shuffle and augment alike

    base = build_moco(args.skeleton_representation, dim=args.moco_dim, K=args.moco_k, m=args.moco_m,
                      T=args.moco_t, mlp=args.mlp, **encoder_kwargs(args)).to(device)
    # All parameters, in the reference's order, so optimizer states match its checkpoints; the key
    # encoders never get gradients, so SGD leaves them to the momentum update.
    optimizer = torch.optim.SGD(base.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay)

    start_epoch, start_step = args.start_epoch, 0
    resumed_layout: tuple[Any, Any] = (None, None)
    meters_state: dict[str, Any] = {}
    if checkpoint is not None:
        try:
            load_checkpoint_state_dict(base, checkpoint["state_dict"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise SetupError(f"--resume {args.resume} does not fit the model built from these options "
                             f"(representation and encoder sizes must match): {str(exc).splitlines()[0]}") from None
        start_epoch, start_step = int(checkpoint["epoch"]), int(checkpoint.get("step", 0))
        saved_args = checkpoint.get("args", {})
        resumed_layout = (saved_args.get("batch_size"), checkpoint.get("world_size", 1))
        meters_state = checkpoint.get("meters", {}) if start_step else {}
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])
        del checkpoint
    broadcast_module_state(base)
    model, mode = wrap_model(base, ctx, args.device)

    dataset = PretrainDataset(paths, representations, l_ratio=CROP_RATIO, input_size=args.window_size, seed=data_seed,
                              spatial_augment=args.spatial_augment)
    sampler = ResumableSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=data_seed)
    local_batch = args.batch_size // ctx.world_size
    steps_per_epoch = sampler.num_samples // local_batch
    if start_step and not (start_step < steps_per_epoch and resumed_layout == (args.batch_size, ctx.world_size)):
        raise SetupError(f"--resume {args.resume} stopped at step {start_step} of an epoch with batch size and "
                         f"process count {resumed_layout}; finishing that epoch needs the same --batch-size and "
                         "number of processes")
    # Processes on one machine share its CPUs (torchrun tells how many processes run here).
    per_process_cpus = max(1, _available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = min(args.workers, per_process_cpus)
    loader = DataLoader(
        dataset, batch_size=local_batch, sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        drop_last=True, persistent_workers=workers > 0, worker_init_fn=_ignore_sigint_in_worker if workers else None,
        # Its own generator for the workers' base seed: the global one then only serves the model
        # (dropout), whose state checkpoints carry, so resumed runs draw what uninterrupted ones do.
        generator=torch.Generator().manual_seed(data_seed),
    )
    folder = Path(args.checkpoint_path)
    writer = summary_writer(folder if ctx.is_main else None)
    if ctx.is_main:
        params = sum(p.numel() for p in base.parameters() if p.requires_grad)
        print(f"=> {args.skeleton_representation} MoCo ({params / 1e6:.2f}M trainable parameters) on {device}, "
              f"{mode}; {len(dataset)} clips, {steps_per_epoch} steps of {args.batch_size} per epoch; "
              f"epochs {start_epoch}..{args.epochs - 1}" + (f" (resuming at step {start_step})" if start_step else ""),
              flush=True)

    history: list[dict[str, Any]] = []
    status = "completed"
    stop = StopRequest()
    started = time.time()
    try:
        with stop:
            for epoch in range(start_epoch, args.epochs):
                lr = learning_rate_at(epoch, args.lr, args.epochs, args.schedule, args.cos)
                set_learning_rate(optimizer, lr)
                first = start_step if epoch == start_epoch else 0
                sampler.set_epoch(epoch, start=first * local_batch)
                dataset.set_epoch(epoch)
                meters = Meters(base.num_streams)
                if first and meters_state:
                    meters.load_state(meters_state)
                t0 = time.time()
                result = train_one_epoch(model, base, loader, optimizer, epoch, ctx=ctx, args=args,
                                         steps_per_epoch=steps_per_epoch, start_step=first, meters=meters,
                                         stop=stop, autocast_dtype=autocast_dtype, data_seed=data_seed)
                if result.stop and result.steps_done < steps_per_epoch:
                    status = "interrupted"
                    if ctx.is_main:
                        state = make_checkpoint(base, optimizer, args, epoch=epoch, step=result.steps_done,
                                                data_seed=data_seed, meters=meters.state())
                        path = save_checkpoint(state, folder, None)
                        print(f"=> stopped at epoch {epoch}, step {result.steps_done}/{steps_per_epoch}; "
                              f"saved {path}; continue with --resume {path}", flush=True)
                    break
                elapsed = time.time() - t0
                record = {"epoch": epoch, "lr": lr, **result.averages, "seconds": elapsed}
                history.append(record)
                if ctx.is_main:
                    numbered = epoch % args.save_freq == 0 or epoch == args.epochs - 1
                    state = make_checkpoint(base, optimizer, args, epoch=epoch + 1, step=0, data_seed=data_seed)
                    save_checkpoint(state, folder, epoch if numbered else None)
                    _log_epoch(writer, {**record, "numbered": numbered}, args, steps_per_epoch - first,
                               base.num_streams)
                if result.stop:  # a signal during the epoch's last step: saved above
                    status = "interrupted"
                    break
    finally:
        if writer is not None:
            writer.close()
    barrier()
    if ctx.is_main and args.metrics_json:
        final = history[-1] if history else {}
        write_json_atomic(args.metrics_json, {
            "status": status,
            "skeleton_representation": args.skeleton_representation,
            "final": {k: final[k] for k in final if k == "train_loss" or k.startswith("acc_s")},
            "epochs_completed": history[-1]["epoch"] + 1 if history else start_epoch,
            "history": history,
            "steps_per_epoch": steps_per_epoch,
            "world_size": ctx.world_size,
            "device": str(device),
            "mode": mode,
            "data_seed": data_seed,
            "wall_seconds": time.time() - started,
            "args": args_to_dict(args),
        })
    if status == "interrupted" and stop.signum is not None:
        return 128 + int(stop.signum)
    return 0


def _log_epoch(writer: Any, record: dict[str, Any], args: argparse.Namespace, steps: int, streams: int) -> None:
    epoch = record["epoch"]
    if writer is not None:
        writer.add_scalar("train_loss", record["train_loss"], global_step=epoch)
        for i in range(streams):
            writer.add_scalar(f"acc_s{i + 1}", record[f"acc_s{i + 1}"], global_step=epoch)
        if streams == 1:
            writer.add_scalar("acc", record["acc_s1"], global_step=epoch)  # the reference's intra name
        writer.add_scalar("lr", record["lr"], global_step=epoch)
        writer.flush()
    accs = "  ".join(f"acc_s{i + 1} {record[f'acc_s{i + 1}']:6.2f}" for i in range(streams))
    per_step = record["seconds"] / max(steps, 1)
    saved = f"  -> {numbered_name(epoch)}" if record.get("numbered") else ""
    print(f"epoch {epoch:4d} ({epoch + 1}/{args.epochs})  loss {record['train_loss']:.4f}  {accs}  "
          f"lr {record['lr']:.3g}  {record['seconds']:.1f}s ({per_step * 1e3:.0f} ms/step, "
          f"{args.batch_size / per_step:.0f} clips/s){saved}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
