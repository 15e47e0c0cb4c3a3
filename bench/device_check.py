#!/usr/bin/env python
"""The GPU path checked and timed in one command: the CUDA tests, the pretraining benchmark, a torchrun resume.

``bash bench/device_check.sh OUT`` (``--cpu``: the same stages at tiny sizes on the CPU) runs, one after the
other:

  cuda_tests  pytest tests/test_cuda.py; on a GPU none may be skipped
  bench       bench/bench_pretrain.py: every pair, fp32 and bf16, fused BiGRU and per-frame loop, data loading
  resume      main_moco_inter_skeleton.py under a one-process torchrun: run A uninterrupted; run B stopped by
              SIGTERM once its first epoch's checkpoint_last.pth.tar exists, then resumed with --resume to the
              same --epochs; A's and B's final model and optimizer states must be equal, tensor for tensor

OUT receives device_check.json (the summary, rewritten after every stage), device_check.log (one line per
stage), NAME.log (the output of each command run) and bench_pretrain.json (the benchmark's rows). A stage that
fails, or is killed at its time limit, does not stop the next. Exit status: 0 every stage passed, 1 not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import write_clips  # noqa: E402
from common.io import write_json_atomic  # noqa: E402

PAIR = "seq-based_and_graph-based"
TINY = ["--gru-hidden-size", "8", "--gru-layers", "1", "--agcn-base-channels", "4", "--hcn-out-channels", "4"]
SMALL = ["--gru-hidden-size", "256", "--gru-layers", "2", "--agcn-base-channels", "16", "--hcn-out-channels", "16"]
# Per mode: each stage's time limit in seconds (on a GPU all three together stay within 8 minutes); the
# benchmark's flags; the resume runs' clips, flags and epochs.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "limits": {"cuda_tests": 150, "bench": 210, "resume": 120},
        "bench": ["--iters", "5", "--repeats", "3", "--warmup", "2", "--workers", "8"],
        "clips": 320,
        "pretrain": [*SMALL, "--moco-k", "512", "--batch-size", "32", "-j", "4"],
        "epochs": 3,
    },
    "cpu": {
        "limits": {"cuda_tests": 60, "bench": 90, "resume": 90},
        "bench": [*TINY, "--batch", "4", "--moco-k", "16", "--iters", "1", "--repeats", "1", "--warmup", "1"]
        + ["--workers", "0", "--clips", "16", "--pairs", PAIR, "graph-based_and_image-based"],
        "clips": 12,
        "pretrain": [*TINY, "--moco-dim", "8", "--moco-k", "16", "--batch-size", "4", "-j", "1"],
        "epochs": 3,
    },
}


class Check:
    """Where the check writes and its summary."""

    def __init__(self, out: Path, work: Path, mode: str) -> None:
        self.out, self.work, self.mode, self.sizes = out, work, mode, SIZES[mode]
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        if mode == "cpu":  # tiny models on a few shared cores: threads only contend
            self.env["OMP_NUM_THREADS"] = "1"
        info: dict[str, Any] = {"torch": torch.__version__, "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda)
        self.summary: dict[str, Any] = {"mode": mode, "environment": info, "stages": {}}

    def launch(self, name: str, command: list[str]) -> tuple[str, subprocess.Popen]:
        """Start ``command`` in the repository root, its own process group, output to OUT/NAME.log."""
        with open(self.out / f"{name}.log", "w") as output:
            kwargs: dict[str, Any] = dict(cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT)
            return name, subprocess.Popen(command, start_new_session=True, **kwargs)

    def finish(self, job: tuple[str, subprocess.Popen], limit: float) -> tuple[int | None, str]:
        """Wait, killing its process group after ``limit`` s; the exit status (None: killed) and the output."""
        name, proc = job
        try:
            code: int | None = proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        return code, (self.out / f"{name}.log").read_text(errors="replace")

    def run(self, name: str, command: list[str], limit: float) -> tuple[int | None, str]:
        return self.finish(self.launch(name, command), limit)


def stage_cuda_tests(check: Check, limit: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    code, text = check.run("cuda_tests", command, limit)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", text[-400:])}
    passed = code == 0 and (check.mode == "cpu" or not counts.get("skipped"))
    return {"passed": passed, "exit": code, **counts}


def stage_bench(check: Check, limit: float) -> dict[str, Any]:
    report = check.out / "bench_pretrain.json"
    device = ["--device", "cuda" if check.mode == "gpu" else "cpu"]
    command = [sys.executable, "bench/bench_pretrain.py", *check.sizes["bench"], *device, "--json", str(report)]
    code, _ = check.run("bench", command, limit)
    rows = json.loads(report.read_text())["rows"] if report.is_file() else []
    keys = ("pair", "precision", "bigru", "ms_per_step", "speedup", "error")
    return {"passed": code == 0, "exit": code, "rows": [{k: r[k] for k in keys if k in r} for r in rows]}


def pretrain(check: Check, folder: Path, *extra: str) -> list[str]:
    """The resume stage's pretraining command (a seed: the same clips, crops and initialisation every run)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] + [
        "main_moco_inter_skeleton.py", "--skeleton-representation", PAIR, "--data-root", str(check.work / "data"),
        "--pre-dataset", "ntu60", "--protocol", "cross_view", "--lr", "0.01", "--mlp", "--seed", "0",
        "--save-freq", "1000", "--device", "cuda" if check.mode == "gpu" else "cpu",
        "--epochs", str(check.sizes["epochs"]), *check.sizes["pretrain"], "--checkpoint-path", str(folder), *extra,
    ]  # fmt: skip


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as {path: leaf}."""
    if not isinstance(value, (dict, list, tuple)):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return {path: leaf for key, item in items for path, leaf in flatten(item, f"{prefix}/{key}").items()}


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    """The epoch, model and optimizer states of two pretraining checkpoints, entry by entry."""
    left, right = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    left, right = (flatten({k: c[k] for k in ("epoch", "state_dict", "optimizer")}) for c in (left, right))
    differ, worst = [], 0.0
    for key in sorted(left.keys() | right.keys()):
        x, y = left.get(key), right.get(key)
        tensors = (
            isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and (x.shape, x.dtype) == (y.shape, y.dtype)
        )
        if tensors and not torch.equal(x, y):
            differ.append(key)
            worst = max(worst, (x.double() - y.double()).abs().max().item())
        elif not tensors and (isinstance(x, torch.Tensor) or type(x) is not type(y) or x != y):
            differ.append(key)
            worst = math.inf
    return {"entries": len(left), "identical": not differ, "differing": differ[:5], "max_abs_diff": worst}


def stage_resume(check: Check, limit: float) -> dict[str, Any]:
    write_clips(check.work / "data" / "NTU-RGB-D-60-AGCN" / "xview", check.sizes["clips"])
    end = time.monotonic() + limit
    folder = check.work / "resume"
    plain, stopped = (check.launch(f"pretrain_{n}", pretrain(check, folder / n)) for n in ("A", "B"))
    last = folder / "B" / "checkpoint_last.pth.tar"
    while stopped[1].poll() is None and not last.is_file() and time.monotonic() < end:
        time.sleep(0.05)
    stopped[1].send_signal(signal.SIGTERM)  # to torchrun, which passes it to its worker
    result: dict[str, Any] = {"stopped_exit": check.finish(stopped, end - time.monotonic())[0]}
    result["a_exit"] = check.finish(plain, end - time.monotonic())[0]
    if not last.is_file() or result["a_exit"] != 0:
        return {"passed": False, **result, "error": "no checkpoint_last.pth.tar from B or A failed: see the log"}
    result["stopped_at_epoch"] = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
    resumed = pretrain(check, folder / "B", "--resume", str(last))
    result["resumed_exit"] = check.run("pretrain_B_resumed", resumed, end - time.monotonic())[0]
    if result["resumed_exit"] != 0:
        return {"passed": False, **result}
    final = "checkpoint_last.pth.tar"
    result["resumed_vs_uninterrupted"] = compare_checkpoints(folder / "A" / final, folder / "B" / final)
    if not result["resumed_vs_uninterrupted"]["identical"]:  # the resume, or a device that does not repeat itself?
        check.run("pretrain_C", pretrain(check, folder / "C"), end - time.monotonic())
        result["uninterrupted_vs_uninterrupted"] = compare_checkpoints(folder / "A" / final, folder / "C" / final)
    stopped_mid_run = 1 <= result["stopped_at_epoch"] < check.sizes["epochs"]
    return {"passed": stopped_mid_run and result["resumed_vs_uninterrupted"]["identical"], **result}


STAGES = {"cuda_tests": stage_cuda_tests, "bench": stage_bench, "resume": stage_resume}


def run_stage(check: Check, name: str) -> dict[str, Any]:
    """One stage within its time limit; a failure becomes its record."""
    start = time.monotonic()
    try:
        record = STAGES[name](check, check.sizes["limits"][name])
    except Exception as exc:  # this stage fails; the others still run
        record = {"passed": False, "error": repr(exc)[:500]}
    status = "passed" if record.pop("passed") else "failed"
    return {"status": status, "seconds": round(time.monotonic() - start, 1), **record}


def run_stages(check: Check) -> bool:
    """Every stage, one after the other; the summary is rewritten after each."""
    for name in STAGES:
        record = check.summary["stages"][name] = run_stage(check, name)
        write_json_atomic(check.out / "device_check.json", check.summary)
        line = f"{name:10s} {record['status']:6s} {record['seconds']:6.1f} s {record.get('error', '')}"
        print(line, flush=True)
        with open(check.out / "device_check.log", "a") as log:
            log.write(line + "\n")
    passed = all(r["status"] == "passed" for r in check.summary["stages"].values())
    check.summary["status"] = "passed" if passed else "failed"
    write_json_atomic(check.out / "device_check.json", check.summary)
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device_check.sh", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path, metavar="OUT", help="folder for the log and the JSON files")
    parser.add_argument("--cpu", action="store_true", help="the same stages at tiny sizes on the CPU")
    try:
        args = parser.parse_args(argv)
        if args.out.exists() and not args.out.is_dir():
            parser.error(f"OUT {args.out} is a file, expected a folder")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="device_check_"))
    try:
        passed = run_stages(Check(args.out.resolve(), work, "cpu" if args.cpu else "gpu"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"device check {'passed' if passed else 'failed'}: {args.out / 'device_check.json'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
