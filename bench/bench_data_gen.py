"""Speed and memory of data_gen/ntu_gendata.py against the reference pipeline, side by side.

    python bench/bench_data_gen.py [--samples 400] [--workers 1 2] [--memory-samples 10000]

Both run on the same synthetic NTU-format files (data_gen/synthetic.py) and prepare both NTU 60
benchmarks (xsub, xview). The baseline is bench/literal_data_gen.py, a literal re-implementation
of the reference (fmthoker/skeleton-contrast data_gen, i.e. the 2s-AGCN preprocessing): each file parsed
into per-joint dicts once per benchmark, normalisation in Python loops over samples, persons, frames
and joints, the whole (N, 3, 300, 25, 2) part held in RAM.

Each run happens in a fresh subprocess that reports its own wall and CPU time (without interpreter
start-up; CPU time is the steadier figure on a busy machine) and its peak resident memory (VmHWM;
for --workers > 1 also the largest worker, from getrusage). The outputs of both are compared (max
abs difference, names, labels, frame counts).
``--memory-samples 10000`` generates that set (a few minutes, ~3.5 GB of text plus ~3.6 GB of output
in the work folder, removed afterwards unless --keep).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

BENCHMARKS = ("xsub", "xview")


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM of its own address space (ru_maxrss would
    include the parent's memory inherited across fork + exec); elsewhere ru_maxrss."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _child(kind: str, data: str, out: str, workers: int) -> None:
    """Run one pipeline in this (fresh) process and print its time and peak memory as JSON."""
    import resource

    from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS

    ignored = str(DEFAULT_IGNORED_LISTS["ntu60"])
    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "reference":
        from bench.literal_data_gen import literal_main

        literal_main(data, out, ignored, BENCHMARKS)
    else:
        from data_gen.ntu_gendata import generate

        generate(data, out, ignored, BENCHMARKS, workers=workers, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    workers_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu + workers_usage.ru_utime + workers_usage.ru_stime,
                "peak_rss_mb": _peak_rss_mb(),
                "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def run_child(kind: str, data: Path, out: Path, workers: int = 1) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--data", str(data), "--out", str(out)]
    command += ["--workers", str(workers)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours: Path, reference: Path) -> float:
    """Max abs difference of the data arrays; names, labels and frame counts must be equal."""
    worst = 0.0
    for benchmark in BENCHMARKS:
        for part in ("train", "val"):
            a, b = ours / benchmark, reference / benchmark
            with open(a / f"{part}_label.pkl", "rb") as f, open(b / f"{part}_label.pkl", "rb") as g:
                if pickle.load(f) != pickle.load(g):
                    raise SystemExit(f"{benchmark}/{part}: names or labels differ")
            if not np.array_equal(np.load(a / f"{part}_num_frame.npy"), np.load(b / f"{part}_num_frame.npy")):
                raise SystemExit(f"{benchmark}/{part}: frame counts differ")
            x = np.load(a / f"{part}_data_joint.npy", mmap_mode="r")
            y = np.load(b / f"{part}_data_joint.npy", mmap_mode="r")
            for start in range(0, len(x), 256):
                worst = max(worst, float(np.abs(x[start : start + 256] - y[start : start + 256]).max(initial=0.0)))
    return worst


def write_set(folder: Path, samples: int, num_classes: int) -> tuple[int, float]:
    from data_gen.synthetic import write_synthetic_ntu

    start = time.perf_counter()
    paths = write_synthetic_ntu(
        folder, num_classes=num_classes, samples_per_class=math.ceil(samples / num_classes), seed=0
    )
    return len(paths), time.perf_counter() - start


def side_by_side(work: Path, samples: int, worker_counts: Sequence[int]) -> None:
    """The reference and ours on the same files: time, memory, and the largest difference of the outputs."""
    count, gen_seconds = write_set(work / "raw", samples, num_classes=20)
    print(f"synthetic set: {count} files ({gen_seconds:.1f} s to write), benchmarks {' '.join(BENCHMARKS)}; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    ref = run_child("reference", work / "raw", work / "reference")
    ref_rate = count / ref["seconds"]
    print(
        f"reference (literal)   : {ref['seconds']:8.2f} s wall {ref['cpu_seconds']:8.2f} s CPU  "
        f"{ref_rate:7.1f} samples/s  peak RSS {ref['peak_rss_mb']:5.0f} MB"
    )
    for workers in worker_counts:
        out = work / f"ours_w{workers}"
        ours = run_child("ours", work / "raw", out, workers)
        rate = count / ours["seconds"]
        extra = f" (+ largest worker {ours['peak_worker_rss_mb']:.0f} MB)" if workers > 1 else ""
        print(
            f"ntu_gendata workers={workers}: {ours['seconds']:8.2f} s wall {ours['cpu_seconds']:8.2f} s CPU  "
            f"{rate:7.1f} samples/s  peak RSS {ours['peak_rss_mb']:5.0f} MB{extra}"
        )
        print(
            f"    {rate / ref_rate:5.1f}x the reference's samples/s (wall); "
            f"{ref['cpu_seconds'] / ours['cpu_seconds']:5.1f}x less CPU time"
        )
        worst = compare(out, work / "reference")
        print(f"    same names, labels and frame counts; max |ours - reference| = {worst:.2e}")
        shutil.rmtree(out)
    shutil.rmtree(work / "reference")


def memory_run(work: Path, samples: int, worker_counts: Sequence[int]) -> None:
    """Ours alone on a large set: peak memory (the reference would hold each part in RAM)."""
    big = work / "raw_big"
    count, gen_seconds = write_set(big, samples, num_classes=60)
    print(f"memory run: {count} files ({gen_seconds:.0f} s to write)")
    for workers in worker_counts:
        out = work / f"ours_big_w{workers}"
        ours = run_child("ours", big, out, workers)
        extra = f" (+ largest worker {ours['peak_worker_rss_mb']:.0f} MB)" if workers > 1 else ""
        print(
            f"ntu_gendata workers={workers} on {count} samples: {ours['seconds']:.1f} s "
            f"({count / ours['seconds']:.1f} samples/s), peak RSS {ours['peak_rss_mb']:.0f} MB{extra}"
        )
        sizes = sum(p.stat().st_size for p in out.rglob("*.npy"))
        shutil.rmtree(out)
    print(
        f"    outputs on disk: {sizes / 2**30:.2f} GiB; the reference holds each part in RAM "
        f"(N x 180 kB: ~6.8 GB for NTU 60 x-view train)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=400, help="files in the side-by-side run (default 400)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    parser.add_argument(
        "--memory-samples",
        type=int,
        default=0,
        help="also run ours alone on a set this large for peak memory, e.g. 10000 (default: skip)",
    )
    parser.add_argument("--work-dir", help="where to write the files (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--child", choices=("reference", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.data, args.out, args.workers[0])
        return 0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_data_gen_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        side_by_side(work, args.samples, args.workers)
        if args.memory_samples:
            memory_run(work, args.memory_samples, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
