#!/usr/bin/env python
"""The GPU path proven and timed in one command: ``bash bench/device_check.sh OUT_DIR`` (``--cpu``: the smoke
mode, the same stages at tiny sizes on the CPU in about a minute).

Stages, in order (each one's figures go to ``OUT_DIR/device_check.json``, all output to ``device_check.log``):
  environment     torch, CUDA, cuDNN, the GPU; CUDA must be there unless --cpu
  cuda_tests      pytest tests/test_cuda.py: CUDA against the CPU, the per-frame BiGRU, DataParallel, bf16, no
                  host sync in a step (all skipped with --cpu)
  data            synthetic NTU-format skeletons (data_gen.synthetic) prepared by data_gen/ntu_gendata.py, and
                  a memory-mapped random-walk split for the speed runs
  resume          main_moco_inter_skeleton.py under a one-process torchrun (NCCL on CUDA, gloo on the CPU):
                  one run uninterrupted; one stopped by SIGTERM to torchrun mid-run, then resumed; the final
                  checkpoints' tensors must be equal
  evaluation      action_classification.py (linear, one epoch) and action_retrieval.py (KNN) on the device,
                  from the uninterrupted run's checkpoint
  pretrain_speed  the real training loop at the paper's sizes (batch 64, K 16384, MLP heads), as is and --amp:
                  ms per step of the second epoch, and the NTU 60 recipe's projected hours
  bench           bench/bench_pretrain.py: every pair, fp32 / TF32 / bf16, compute-only and with data
                  loading, and the reference's per-frame GRU loop timed in the same run
  ablation        bench/bench_pretrain.py on seq-based + graph-based with data loading: one change at a time,
                  CUDA graphs among them (a variant that cannot be captured is reported, not failed)
  compile         torch.compile variants (only with 2 minutes left; skipped with --cpu)

Everything runs inside a time budget (default 460 s on a GPU); a stage that cannot finish in what is left
fails with a timeout. The summary is rewritten after every stage, so an interrupted check still leaves one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUMMARY = "device_check.json"
LOG = "device_check.log"
FORMAT = "skeleton-contrast-device-check/1"
PAIR = "seq-based_and_graph-based"
RECIPE_EPOCHS, RECIPE_STEPS_PER_EPOCH = 451, 588


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and the CPU smoke mode."""

    budget_s: float
    classes: int  # synthetic NTU classes; x-view keeps 2 of every 3 clips for training
    clips_per_class: int
    small_encoders: tuple[str, ...]  # encoder sizes of the resume and evaluation runs
    small_moco: tuple[str, ...]  # and their MoCo flags
    small_batch: int
    small_epochs: int
    speed_model: tuple[str, ...]  # the speed runs' flags (empty: the paper's sizes)
    speed_batch: int
    speed_clips: int  # random-walk clips of the speed split (speed_batch x steps per epoch)
    workers: int
    bench: tuple[str, ...]  # bench_pretrain.py flags of the bench stage
    ablation: tuple[str, ...]  # and of the ablation stage
    compile_variants: tuple[str, ...]
    test_timeout_s: float


TINY = ("--gru-hidden-size", "8", "--gru-layers", "1", "--agcn-base-channels", "4", "--hcn-out-channels", "4")
ALL_PAIRS = ("--pairs", "seq-based_and_graph-based", "seq-based_and_image-based", "graph-based_and_image-based")
# How bench_pretrain.py times each variant: enough repeats for a median on the GPU; once, on a tiny batch,
# in the CPU smoke mode (which checks that every stage runs, not how fast).
GPU_TIMING = ("--iters", "6", "--repeats", "3", "--warmup", "2")
CPU_TIMING = ("--batch", "4", "--moco-k", "16", "--iters", "1", "--repeats", "1", "--warmup", "1")

GPU_SIZES = Sizes(
    budget_s=460,
    classes=10,
    clips_per_class=30,
    small_encoders=(
        "--gru-hidden-size",
        "256",
        "--gru-layers",
        "2",
        "--agcn-base-channels",
        "16",
        "--hcn-out-channels",
        "16",
    ),
    small_moco=("--moco-k", "512"),
    small_batch=32,
    small_epochs=3,
    speed_model=(),
    speed_batch=64,
    speed_clips=64 * 24,
    workers=8,
    bench=(
        *ALL_PAIRS,
        "--variants",
        "fp32",
        "tf32",
        "bf16",
        "fp32,per-frame",
        *GPU_TIMING,
    ),
    # Most telling first: a run cut short by the budget loses the least.
    ablation=(
        "--pairs",
        PAIR,
        "--modes",
        "loader",
        "data",
        *GPU_TIMING,
        "--variants",
        "bf16",
        "tf32",
        "default",
        "bf16,graph",
        "bf16,gru-streams",
        "bf16,gru-streams,graph",
        "bf16,fused",
        "bf16,gru-fp32",
        "bf16,sync",
        "bf16,no-persist",
        "bf16,pageable,blocking",
        "bf16,workers=4",
        "bf16,workers=12",
        "tf32,graph",
        "bf16,for-loop",
        "bf16,no-benchmark",
        "bf16,deterministic",
        "bf16,bptt",
    ),
    compile_variants=("bf16,compile", "bf16,compile,graph"),
    test_timeout_s=240,
)
CPU_SIZES = Sizes(
    budget_s=150,
    classes=10,
    clips_per_class=6,
    small_encoders=TINY,
    small_moco=("--moco-dim", "8", "--moco-k", "16"),
    small_batch=4,
    small_epochs=3,
    speed_model=(*TINY, "--moco-dim", "8", "--moco-k", "16"),
    speed_batch=4,
    speed_clips=4 * 8,
    workers=1,
    bench=(
        *TINY,
        *ALL_PAIRS,
        "--variants",
        "fp32",
        "fp32,per-frame",
        *CPU_TIMING,
    ),
    ablation=(
        *TINY,
        "--pairs",
        PAIR,
        "--modes",
        "loader",
        *CPU_TIMING,
        "--variants",
        "fp32",
        "fp32,sync",
        "fp32,for-loop",
        "fp32,no-persist",
    ),
    compile_variants=(),
    test_timeout_s=120,
)


class StageFailure(Exception):
    """A stage ran but did not prove what it should; ``detail`` keeps what it found."""

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


@dataclass
class Run:
    """One finished subprocess."""

    name: str
    command: list[str]
    returncode: int | None
    output: str
    seconds: float
    timed_out: bool = False

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


@dataclass
class Check:
    """The state of one device check: where it writes, its deadline, its summary."""

    out: Path
    work: Path
    cpu: bool
    sizes: Sizes
    deadline: float
    summary: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- output --------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        with self.lock, open(self.out / LOG, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log(text)

    def save(self) -> None:
        path = self.out / SUMMARY
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.summary, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # -- subprocesses --------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.cpu:
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def run(
        self,
        name: str,
        command: Sequence[str],
        timeout: float,
        on_line: Callable[[str, subprocess.Popen], None] | None = None,
    ) -> Run:
        """Run ``command`` in the repository root (its own process group), output captured and logged."""
        timeout = max(1.0, min(timeout, self.remaining()))
        command = [str(c) for c in command]
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        lines: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line, proc)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_process_group(proc)
        reader.join(timeout=10)
        run = Run(name, command, proc.returncode, "".join(lines), time.monotonic() - start, timed_out)
        status = "timed out" if timed_out else f"exit {run.returncode}"
        self.log(f"\n===== {name}: {' '.join(command)}\n{run.output}===== {name}: {status} after {run.seconds:.1f} s")
        return run


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group we started (torchrun passes it on to its workers), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def python(*args: Any) -> list[str]:
    return [sys.executable, *map(str, args)]


def torchrun(*args: Any) -> list[str]:
    return python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args)


def require(run: Run, what: str) -> None:
    if run.timed_out:
        raise StageFailure(f"{what} timed out after {run.seconds:.0f} s", {"output_tail": run.tail()})
    if run.returncode != 0:
        raise StageFailure(f"{what} exited with {run.returncode}", {"output_tail": run.tail()})


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageFailure(f"{what}: no readable {path.name} ({exc})") from None


# ------------------------------------------------------------------------------------------------ stages


def stage_environment(check: Check) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_count=torch.cuda.device_count(),
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
        )
    if shutil.which("nvidia-smi"):
        smi = check.run(
            "nvidia-smi",
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,memory.used",
                "--format=csv",
            ],
            timeout=30,
        )
        info["nvidia_smi"] = smi.output.strip().splitlines()[-1] if smi.returncode == 0 else smi.tail(2)
    check.summary["environment"] = info
    if not check.cpu and not torch.cuda.is_available():
        raise StageFailure("torch sees no CUDA GPU: run this on a GPU machine, or with --cpu for the smoke mode", info)
    where = info.get("gpu", f"CPU ({info['cpus']} cores)")
    return {"summary": f"{where}, torch {info['torch']}" + (f", CUDA {info['cuda']}" if "cuda" in info else "")}


def junit_counts(path: Path) -> dict[str, Any]:
    """Test counts and failure messages of a pytest JUnit XML report."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise StageFailure(f"no readable JUnit report {path.name} ({exc})") from None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise StageFailure(f"{path.name} holds no testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            failed.append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:300]}")
    counts["failed_tests"] = failed
    counts["durations_s"] = {case.get("name"): round(float(case.get("time", 0)), 2) for case in suite.iter("testcase")}
    return counts


def stage_cuda_tests(check: Check) -> dict[str, Any]:
    report = check.out / "pytest_cuda.xml"
    run = check.run(
        "pytest tests/test_cuda.py",
        python("-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests/test_cuda.py", f"--junitxml={report}"),
        timeout=check.sizes.test_timeout_s,
    )
    if run.timed_out:
        raise StageFailure(f"the CUDA tests timed out after {run.seconds:.0f} s", {"output_tail": run.tail()})
    counts = junit_counts(report)
    detail = {**counts, "report": report.name}
    bad = counts["failures"] + counts["errors"]
    if bad or run.returncode != 0:
        raise StageFailure(f"{bad} of {counts['tests']} CUDA tests failed (pytest exit {run.returncode})", detail)
    ran = counts["tests"] - counts["skipped"]
    if not check.cpu and counts["skipped"]:
        raise StageFailure(f"{counts['skipped']} CUDA tests were skipped on a GPU machine", detail)
    return {**detail, "summary": f"{ran} passed, {counts['skipped']} skipped"}


def stage_data(check: Check) -> dict[str, Any]:
    from bench.bench_pretrain import write_clips
    from data_gen.synthetic import write_synthetic_ntu

    sizes = check.sizes
    raw = check.work / "raw"
    start = time.monotonic()
    files = write_synthetic_ntu(raw, num_classes=sizes.classes, samples_per_class=sizes.clips_per_class, seed=0)
    synthetic_s = time.monotonic() - start
    out = check.work / "data" / "NTU-RGB-D-60-AGCN"
    run = check.run(
        "ntu_gendata",
        python(
            "data_gen/ntu_gendata.py",
            "--data-path",
            raw,
            "--dataset",
            "ntu60",
            "--out-folder",
            out,
            "--benchmarks",
            "xview",
            "--workers",
            sizes.workers,
            "--no-progress",
        ),
        timeout=180,
    )
    require(run, "data_gen/ntu_gendata.py")
    shutil.rmtree(raw, ignore_errors=True)
    import numpy as np

    parts = {part: int(np.load(out / "xview" / f"{part}_num_frame.npy").shape[0]) for part in ("train", "val")}
    start = time.monotonic()
    write_clips(check.work / "speed" / "NTU-RGB-D-60-AGCN" / "xview", sizes.speed_clips, seed=1)
    return {
        "synthetic_files": len(files),
        "synthetic_s": round(synthetic_s, 1),
        "data_gen_s": round(run.seconds, 1),
        "xview": parts,
        "speed_clips": sizes.speed_clips,
        "speed_split_s": round(time.monotonic() - start, 1),
        "summary": f"{len(files)} synthetic files -> x-view {parts['train']} train / {parts['val']} val; "
        f"{sizes.speed_clips} random-walk clips for the speed runs",
    }


def device_flag(check: Check) -> str:
    return "cpu" if check.cpu else "cuda"


# ------------------------------------------------------------------------------------------------ resume


def pretrain_command(check: Check, folder: Path, *extra: Any) -> list[str]:
    """The small pretraining run of the resume stage (a seed: deterministic cuDNN, reproducible data)."""
    sizes = check.sizes
    return torchrun(
        "main_moco_inter_skeleton.py",
        "--skeleton-representation",
        PAIR,
        "--data-root",
        check.work / "data",
        "--pre-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--epochs",
        sizes.small_epochs,
        "--batch-size",
        sizes.small_batch,
        "--lr",
        "0.01",
        "--mlp",
        "--seed",
        "0",
        "-j",
        min(sizes.workers, 4),
        "-p",
        "1",
        "--save-freq",
        "1000",
        *sizes.small_encoders,
        *sizes.small_moco,
        "--checkpoint-path",
        folder,
        "--device",
        device_flag(check),
        *extra,
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists of a checkpoint as {path: leaf}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}/").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): value}


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    """Every tensor and number of two pretraining checkpoints (their arguments aside, which name folders,
    and their history, which holds each epoch's duration)."""
    import torch

    left, right = (
        flatten(
            {
                k: v
                for k, v in torch.load(p, map_location="cpu", weights_only=True).items()
                if k not in ("args", "history")
            }
        )
        for p in (a, b)
    )
    mismatched, worst, tensors = [], 0.0, 0
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            tensors += 1
            if x.shape != y.shape or x.dtype != y.dtype:
                mismatched.append(key)
                worst = math.inf
            elif not torch.equal(x, y):
                mismatched.append(key)
                if x.is_floating_point():
                    worst = max(worst, (x.double() - y.double()).abs().max().item())
                else:
                    worst = math.inf
        elif x != y:
            mismatched.append(key)
            worst = math.inf
    return {
        "tensors": tensors,
        "entries": len(left),
        "identical": not mismatched,
        "mismatched": mismatched[:8],
        "mismatched_count": len(mismatched),
        "max_abs_diff": worst,
    }


def signal_after_first_epoch(sent: list[float]) -> Callable[[str, subprocess.Popen], None]:
    """SIGTERM to the launcher as soon as the first epoch's line appears: the second epoch has just begun."""

    def on_line(line: str, proc: subprocess.Popen) -> None:
        if not sent and line.startswith("epoch    0 "):
            sent.append(time.monotonic())
            proc.send_signal(signal.SIGTERM)

    return on_line


def stage_resume(check: Check) -> dict[str, Any]:
    import torch

    folder = check.work / "resume"
    sent: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(check.run, "pretrain A (uninterrupted)", pretrain_command(check, folder / "A"), 240)
        stopped = pool.submit(
            check.run,
            "pretrain B (SIGTERM after epoch 0)",
            pretrain_command(check, folder / "B"),
            240,
            signal_after_first_epoch(sent),
        )
        plain_run, stopped_run = plain.result(), stopped.result()
    require(plain_run, "the uninterrupted torchrun pretraining")
    expected = f"on {'cpu' if check.cpu else 'cuda:0'}, DistributedDataParallel over 1 processes"
    if expected not in plain_run.output:
        raise StageFailure(f"the pretraining did not report '{expected}'", {"output_tail": plain_run.tail()})
    last = folder / "B" / "checkpoint_last.pth.tar"
    if not sent or "stopped in epoch" not in stopped_run.output or not last.is_file():
        why = ""
        if "killed by signal: Terminated" in stopped_run.output:
            why = (
                ": a DataLoader worker died of the SIGTERM (torchrun signals the worker's whole process group, "
                "so DataLoader workers must ignore SIGTERM as they ignore SIGINT)"
            )
        raise StageFailure(
            "the SIGTERM run did not stop with a checkpoint" + why,
            {"signal_sent": bool(sent), "output_tail": stopped_run.tail()},
        )
    state = torch.load(last, map_location="cpu", weights_only=True)
    stopped_at = {"epoch": int(state["epoch"]), "step": int(state.get("step", 0))}
    del state
    resumed = check.run("pretrain B resumed", pretrain_command(check, folder / "B", "--resume", last), 240)
    require(resumed, "the resumed torchrun pretraining")
    final = "checkpoint_last.pth.tar"
    comparison = compare_checkpoints(folder / "A" / final, folder / "B" / final)
    detail: dict[str, Any] = {
        "stopped_at": stopped_at,
        "mid_epoch": stopped_at["step"] > 0,
        "stopped_run_exit": stopped_run.returncode,
        "backend": "gloo" if check.cpu else "nccl",
        "resumed_vs_uninterrupted": comparison,
    }
    if not comparison["identical"]:
        # Is it the resume, or does this device not repeat itself? A second uninterrupted run tells.
        again = check.run("pretrain C (uninterrupted again)", pretrain_command(check, folder / "C"), 240)
        require(again, "the second uninterrupted torchrun pretraining")
        control = compare_checkpoints(folder / "A" / final, folder / "C" / final)
        detail["uninterrupted_vs_uninterrupted"] = control
        if control["identical"] or comparison["max_abs_diff"] > 10 * control["max_abs_diff"]:
            raise StageFailure(
                f"the resumed run differs from the uninterrupted one in "
                f"{comparison['mismatched_count']} entries "
                f"(max |diff| {comparison['max_abs_diff']:.2e})",
                detail,
            )
    where = f"epoch {stopped_at['epoch']}, step {stopped_at['step']}"
    verdict = "identical" if comparison["identical"] else "equal up to run-to-run differences"
    return {
        **detail,
        "summary": f"stopped at {where}; resumed run {verdict} to the uninterrupted one "
        f"({comparison['tensors']} tensors)",
    }


# -------------------------------------------------------------------------------------- evaluation, speed


def evaluation_commands(check: Check, checkpoint: Path) -> tuple[list[str], list[str]]:
    """Linear classification of the seq-based encoder (one epoch) and KNN retrieval with the graph-based one."""
    sizes = check.sizes
    common = [
        "--pretrained",
        checkpoint,
        "--pretrain-skeleton-representation",
        PAIR,
        "--finetune-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--data-root",
        check.work / "data",
        "--seed",
        "0",
        "-j",
        min(sizes.workers, 4),
        *sizes.small_encoders,
        "--device",
        device_flag(check),
    ]
    linear = python(
        "action_classification.py",
        *common,
        "--finetune-skeleton-representation",
        "seq-based",
        "--epochs",
        "1",
        "--lr",
        "0.1",
        "-b",
        sizes.small_batch,
        "--checkpoint-path",
        check.work / "linear",
        "--metrics-json",
        check.work / "linear.json",
    )
    knn = python(
        "action_retrieval.py",
        *common,
        "--finetune-skeleton-representation",
        "graph-based",
        "--knn-neighbours",
        "1",
        "--metrics-json",
        check.work / "knn.json",
    )
    return linear, knn


def stage_evaluation(check: Check) -> dict[str, Any]:
    checkpoint = check.work / "resume" / "A" / "checkpoint_last.pth.tar"
    if not checkpoint.is_file():
        raise StageFailure(f"no pretraining checkpoint to evaluate ({checkpoint.name} of the resume stage)")
    linear, knn = evaluation_commands(check, checkpoint)
    linear_json, knn_json = check.work / "linear.json", check.work / "knn.json"
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(lambda job: check.run(*job), [("linear classification", linear, 180), ("KNN retrieval", knn, 180)])
        )
    for run in runs:
        require(run, run.name)
        if f"device {device_flag(check)}" not in run.output:
            raise StageFailure(f"{run.name} did not run on {device_flag(check)}", {"output_tail": run.tail()})
    top1 = float(read_json(linear_json, "linear classification")["top1"])
    knn_top1 = float(read_json(knn_json, "KNN retrieval")["knn_top1"])
    if not (0.0 <= top1 <= 100.0 and 0.0 <= knn_top1 <= 100.0):
        raise StageFailure(f"accuracies out of range: linear {top1}, KNN {knn_top1}")
    return {
        "linear_seq_based_top1": top1,
        "knn_graph_based_top1": knn_top1,
        "summary": f"linear (seq-based, 1 epoch) top-1 {top1:.1f} %, KNN (graph-based) top-1 {knn_top1:.1f} % "
        "(tiny synthetic set: proves the path, not the method)",
    }


def speed_command(check: Check, folder: Path, *extra: str) -> list[str]:
    """The paper's recipe (NTU 60 x-view flags of script_pretrain.sh) for 2 epochs on the speed split."""
    sizes = check.sizes
    return python(
        "main_moco_inter_skeleton.py",
        "--skeleton-representation",
        PAIR,
        "--data-root",
        check.work / "speed",
        "--pre-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--epochs",
        "2",
        "--batch-size",
        sizes.speed_batch,
        "--lr",
        "0.01",
        "--mlp",
        "--moco-t",
        "0.07",
        "--moco-k",
        "16384",
        *sizes.speed_model,
        "--save-freq",
        "1000",
        "-j",
        sizes.workers,
        "-p",
        "10",
        "--checkpoint-path",
        folder,
        "--metrics-json",
        folder / "metrics.json",
        "--device",
        device_flag(check),
        *extra,
    )


def stage_pretrain_speed(check: Check) -> dict[str, Any]:
    """The training script itself at the paper's sizes: ms per step of its second epoch."""
    sizes = check.sizes
    results: dict[str, Any] = {}
    # "default": the script with torch's own flags (cuDNN in TF32, matrix products in fp32)
    for name, extra in [("default", [])] + ([] if check.cpu else [("amp", ["--amp"])]):
        folder = check.work / "speed_runs" / name
        metrics = folder / "metrics.json"
        command = speed_command(check, folder, *extra)
        require(check.run(f"pretraining speed ({name})", command, 300), f"the {name} pretraining run")
        record = read_json(metrics, f"the {name} pretraining run")
        steps, history = int(record["steps_per_epoch"]), record["history"]
        loss = float(history[-1]["train_loss"])
        if len(history) != 2 or not math.isfinite(loss):
            raise StageFailure(f"the {name} run finished {len(history)} epochs with loss {loss}", record)
        ms = [1e3 * float(h["seconds"]) / steps for h in history]
        results[name] = {
            "steps_per_epoch": steps,
            "ms_per_step_epoch0": ms[0],
            "ms_per_step": ms[1],
            "clips_per_s": sizes.speed_batch / ms[1] * 1e3,
            "train_loss": loss,
            "recipe_hours": ms[1] / 1e3 * RECIPE_STEPS_PER_EPOCH * RECIPE_EPOCHS / 3600,
        }
        shutil.rmtree(folder, ignore_errors=True)  # the paper-size checkpoints are large
    text = "; ".join(
        f"{k} {v['ms_per_step']:.1f} ms/step ({v['recipe_hours']:.1f} h for the recipe)" for k, v in results.items()
    )
    return {"runs": results, "summary": f"the training script, epoch 2: {text}"}


EXPERIMENTAL = ("graph", "compile", "gru-streams")  # tokens whose failure is a finding, not a failed check


def bench_stage(check: Check, name: str, flags: Sequence[str], json_name: str, timeout: float) -> dict[str, Any]:
    """bench_pretrain.py with ``flags``; its table is echoed, its rows kept in ``json_name``. Fails when the run
    did not finish or a row other than an experimental variant's (CUDA graphs, torch.compile) failed."""
    report = check.out / json_name
    command = python(
        "bench/bench_pretrain.py",
        *flags,
        "--data",
        check.work / "data" / "NTU-RGB-D-60-AGCN" / "xview",
        "--workers",
        check.sizes.workers,
        "--device",
        device_flag(check),
        "--json",
        report,
    )
    run = check.run(name, command, timeout)
    print(run.output.rstrip(), flush=True)
    rows = json.loads(report.read_text(encoding="utf-8"))["rows"] if report.is_file() else []
    failed = [r for r in rows if "error" in r]
    experimental = [r for r in failed if set(r["variant"].split(",")) & set(EXPERIMENTAL)]
    timed = [r for r in rows if "ms_per_step" in r]
    detail: dict[str, Any] = {
        "report": json_name,
        "rows": len(rows),
        "errors": [f"{r['pair']} {r['variant']} {r['mode']}: {r['error']}" for r in failed if r not in experimental],
        "experimental_errors": [f"{r['variant']} {r['mode']}: {r['error']}" for r in experimental],
        "per_row_ms": {f"{r['pair']} {r['variant']} {r['mode']}": round(r["ms_per_step"], 2) for r in timed},
    }
    key = [r for r in timed if r["pair"] == PAIR and r["mode"] == "loader"]
    if key:
        best = min(key, key=lambda r: r["ms_per_step"])
        detail["best_seq_graph_with_loading"] = {
            "variant": best["variant"],
            "ms_per_step": best["ms_per_step"],
            "recipe_hours": best["recipe_hours"],
        }
        detail["summary"] = (
            f"{len(timed)} measurements; seq+graph with data loading best {best['ms_per_step']:.1f} "
            f"ms/step ({best['variant']})"
        )
    if run.timed_out or run.returncode not in (0, 1) or not report.is_file():
        status = "timed out" if run.timed_out else f"exit {run.returncode}"
        raise StageFailure(f"{name} did not finish ({status})", {**detail, "output_tail": run.tail()})
    if detail["errors"]:
        raise StageFailure(f"{len(detail['errors'])} benchmark rows failed: {detail['errors'][0]}", detail)
    return detail


def stage_bench(check: Check) -> dict[str, Any]:
    return bench_stage(check, "bench_pretrain (all pairs)", check.sizes.bench, "bench_pretrain.json", 300)


def stage_ablation(check: Check) -> dict[str, Any]:
    return bench_stage(check, "bench_pretrain (one change at a time)", check.sizes.ablation, "bench_ablation.json", 300)


def compile_flags(sizes: Sizes) -> tuple[str, ...]:
    return (
        "--pairs",
        PAIR,
        "--modes",
        "loader",
        *GPU_TIMING,
        "--variants",
        *sizes.compile_variants,
    )


def stage_compile(check: Check) -> dict[str, Any]:
    """torch.compile, which may take minutes to compile: only with time left, never a reason to fail the check."""
    return bench_stage(
        check,
        "bench_pretrain (torch.compile)",
        compile_flags(check.sizes),
        "bench_compile.json",
        check.remaining() - 10,
    )


# -------------------------------------------------------------------------------------------------- main

# (name, function, required, needs CUDA, seconds that must be left to start it)
STAGES: tuple[tuple[str, Callable[[Check], dict[str, Any]], bool, bool, float], ...] = (
    ("environment", stage_environment, True, False, 0),
    ("cuda_tests", stage_cuda_tests, True, False, 0),
    ("data", stage_data, True, False, 0),
    ("resume", stage_resume, True, False, 0),
    ("evaluation", stage_evaluation, True, False, 0),
    ("pretrain_speed", stage_pretrain_speed, True, False, 0),
    ("bench", stage_bench, True, False, 0),
    ("ablation", stage_ablation, True, False, 0),
    ("compile", stage_compile, False, True, 120),
)


def run_stage(
    check: Check,
    name: str,
    function: Callable[[Check], dict[str, Any]],
    required: bool,
    needs_cuda: bool,
    needs_s: float,
) -> bool:
    """Run one stage, record it in the summary (rewritten at once); False if a required stage failed."""
    record: dict[str, Any] = {"required": required}
    started = time.monotonic()
    if needs_cuda and check.cpu:
        record.update(status="skipped", reason="CUDA only")
    elif check.remaining() < max(needs_s, 1.0):
        record.update(
            status="skipped" if not required else "failed",
            reason=f"{check.remaining():.0f} s of the time budget left, {needs_s:.0f} s needed",
        )
    else:
        check.log(f"\n##### stage {name}")
        try:
            record.update(status="passed", **function(check))
        except StageFailure as exc:
            record.update(status="failed", error=str(exc), **exc.detail)
        except Exception as exc:  # a bug or an unexpected environment: recorded, and the check goes on
            import traceback

            check.log(traceback.format_exc())
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.monotonic() - started, 1)
    check.summary["stages"][name] = record
    check.save()
    elapsed = time.monotonic() - (check.deadline - check.summary["budget_s"])
    text = record.get("summary") or record.get("error") or record.get("reason", "")
    check.say(f"[{elapsed:5.0f} s] {name:15s} {record['status']:7s} {record['seconds']:6.1f} s  {text}")
    return record["status"] == "passed" or not required


def finish(check: Check, started: float) -> bool:
    stages = check.summary["stages"]
    failed = [name for name, rec in stages.items() if rec["required"] and rec["status"] != "passed"]
    check.summary.update(
        status="failed" if failed else "passed",
        failed_stages=failed,
        optional_not_passed=[n for n, r in stages.items() if not r["required"] and r["status"] != "passed"],
        wall_seconds=round(time.monotonic() - started, 1),
    )
    check.save()
    check.say(
        f"\ndevice check ({check.summary['mode']}) {check.summary['status']} in "
        f"{check.summary['wall_seconds']:.0f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + f"; summary {check.out / SUMMARY}, log {check.out / LOG}"
    )
    return not failed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="device_check.sh", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="folder for device_check.json, the log and reports")
    parser.add_argument("--cpu", action="store_true", help="smoke mode: the same stages at tiny sizes on the CPU")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="time budget in seconds (default 460 on a GPU, 150 with --cpu)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary data and checkpoints")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"OUT_DIR {args.out} is a file, expected a folder")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    budget = args.budget_s or sizes.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / LOG).write_text("", encoding="utf-8")
    work = Path(tempfile.mkdtemp(prefix="device_check_"))
    started = time.monotonic()
    check = Check(out=args.out.resolve(), work=work, cpu=args.cpu, sizes=sizes, deadline=started + budget)
    check.summary = {
        "format": FORMAT,
        "mode": "cpu" if args.cpu else "gpu",
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": budget,
        "wall_seconds": None,
        "sizes": asdict(sizes),
        "environment": {},
        "stages": {},
    }
    check.save()
    check.say(f"device check ({check.summary['mode']}), budget {budget:.0f} s, work folder {work}")
    try:
        for name, function, required, needs_cuda, needs_s in STAGES:
            ok = run_stage(check, name, function, required, needs_cuda, needs_s)
            if name == "environment" and not ok:
                break  # no GPU: nothing else can prove anything
    finally:
        passed = finish(check, started)
        if args.keep_work:
            check.say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
