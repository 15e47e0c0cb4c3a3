"""bench/device_check.sh --cpu: every stage of the device check at tiny sizes on the CPU (the CUDA tests, the
benchmark and its JSON, the torchrun stop and resume), so the GPU run cannot rot; and the pieces it judges by."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import main_moco_inter_skeleton
from bench import bench_pretrain, device_check

ROOT = Path(__file__).resolve().parents[1]
SEQ_GRAPH, GRAPH_IMAGE = "seq-based_and_graph-based", "graph-based_and_image-based"


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("device_check")
    command = ["bash", str(ROOT / "bench" / "device_check.sh"), "--cpu", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600), out


def test_cpu_mode_passes_every_stage(cpu_check):
    done, out = cpu_check
    summary = json.loads((out / "device_check.json").read_text())
    stages = summary["stages"]
    assert done.returncode == 0 and summary["status"] == "passed", f"{stages}\n{done.stdout[-2000:]}"
    assert sorted(stages) == ["bench", "cuda_tests", "resume"] and {s["status"] for s in stages.values()} == {"passed"}
    logs = ["bench", "cuda_tests", "device_check", "pretrain_A", "pretrain_B", "pretrain_B_resumed"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["bench_pretrain.json", "device_check.json"] + [f"{n}.log" for n in logs]
    )
    assert summary["mode"] == "cpu" and summary["environment"]["torch"] == torch.__version__
    if not torch.cuda.is_available():
        assert stages["cuda_tests"]["skipped"] >= 13 and "passed" not in stages["cuda_tests"]
    resume = stages["resume"]
    assert resume["a_exit"] == resume["resumed_exit"] == 0 and 1 <= resume["stopped_at_epoch"] < 3
    assert resume["resumed_vs_uninterrupted"]["identical"] and resume["resumed_vs_uninterrupted"]["entries"] > 100
    assert [line.split()[:2] for line in (out / "device_check.log").read_text().splitlines()] == [
        ["cuda_tests", "passed"],
        ["bench", "passed"],
        ["resume", "passed"],
    ]


def test_benchmark_rows_are_ratios_to_a_baseline_of_the_same_run(cpu_check):
    _, out = cpu_check
    report = json.loads((out / "bench_pretrain.json").read_text())
    assert report["device"] == "cpu" and report["torch"] == torch.__version__ and report["args"]["batch"] == 4
    rows = report["rows"]
    assert [(r["pair"], r["bigru"], r["precision"]) for r in rows] == [
        (SEQ_GRAPH, "per-frame", "fp32"),
        (SEQ_GRAPH, "per-frame", "bf16"),
        (SEQ_GRAPH, "fused", "fp32"),
        (SEQ_GRAPH, "fused", "bf16"),
        (GRAPH_IMAGE, "fused", "fp32"),
        (GRAPH_IMAGE, "fused", "bf16"),
    ]
    baselines = {SEQ_GRAPH: rows[0], GRAPH_IMAGE: rows[4]}
    for row in rows:
        base = baselines[row["pair"]]
        assert row["baseline"] == f"fp32 {base['bigru']}" and row["loss_finite"]
        assert row["ms_per_step"] == pytest.approx(sorted(row["windows_ms"])[len(row["windows_ms"]) // 2])
        assert row["speedup"] == pytest.approx(base["ms_per_step"] / row["ms_per_step"])
        assert row["clips_per_s"] == pytest.approx(4e3 / row["ms_per_step"]) and row["first_step_s"] > 0
    assert all(r["max_abs_feature_diff"] < 1e-5 for r in rows if r["bigru"] == "per-frame")
    assert sorted(report["loader_only_clips_per_s"]) == [GRAPH_IMAGE, SEQ_GRAPH]
    assert min(report["loader_only_clips_per_s"].values()) > 0


def test_compare_checkpoints_finds_any_difference(tmp_path):
    state = {"epoch": 2, "state_dict": {"w": torch.arange(4.0)}, "optimizer": {"state": {0: {"m": torch.ones(2)}}}}
    torch.save({**state, "args": {"checkpoint_path": "A"}}, tmp_path / "a.pth")
    torch.save({**state, "args": {"checkpoint_path": "B"}}, tmp_path / "b.pth")
    same = device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "b.pth")
    assert same == {"entries": 3, "identical": True, "differing": [], "max_abs_diff": 0.0}
    torch.save({**state, "optimizer": {"state": {0: {"m": torch.tensor([1.0, 1.5])}}}}, tmp_path / "c.pth")
    moved = device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "c.pth")
    assert not moved["identical"] and moved["differing"] == ["/optimizer/state/0/m"] and moved["max_abs_diff"] == 0.5
    torch.save({**state, "epoch": 3, "state_dict": {"w": torch.arange(4)}}, tmp_path / "d.pth")
    other = device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "d.pth")
    assert other["differing"] == ["/epoch", "/state_dict/w"] and other["max_abs_diff"] == float("inf")


def test_gpu_mode_commands_parse(tmp_path):
    """The GPU mode's commands never run in CI: their flags are checked against the scripts' parsers here."""
    check = device_check.Check(tmp_path, tmp_path, "gpu")
    bench = bench_pretrain.build_parser().parse_args(check.sizes["bench"])
    assert (bench.batch, bench.moco_k, bench.gru_hidden_size, bench.agcn_base_channels) == (64, 16384, 1024, 64)
    command = device_check.pretrain(check, tmp_path / "A", "--resume", "x.pth")
    args = main_moco_inter_skeleton.build_parser().parse_args(
        command[command.index("main_moco_inter_skeleton.py") + 1 :]
    )
    assert args.device == "cuda" and args.epochs == 3 and args.moco_k % args.batch_size == 0 and args.resume == "x.pth"


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert device_check.main([str(tmp_path / "file")]) == 2
    assert f"device_check.sh: error: OUT {tmp_path / 'file'} is a file, expected a folder" in capsys.readouterr().err
    assert bench_pretrain.main(["--batch", "64", "--moco-k", "100"]) == 2
    assert "bench_pretrain.py: error: --moco-k 100 must be a multiple of --batch 64" in capsys.readouterr().err
    assert bench_pretrain.main(["--true-bidirectional-gru"]) == 2
    assert "another function than the per-frame loop" in capsys.readouterr().err.strip().splitlines()[-1]
