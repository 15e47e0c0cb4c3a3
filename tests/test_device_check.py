"""bench/device_check.sh in its CPU smoke mode (every stage at tiny sizes, ~1 minute), so the GPU check cannot rot;
and the pieces it judges by: checkpoint comparison, JUnit counts, variant parsing, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import bench_pretrain, device_check

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["environment", "cuda_tests", "data", "resume", "evaluation", "pretrain_speed", "bench", "ablation", "compile"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("device_check")
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--cpu", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, out


def test_cpu_smoke_mode_passes_every_stage(smoke):
    done, out = smoke
    summary = json.loads((out / "device_check.json").read_text())
    failed = {name: stage.get("error") for name, stage in summary["stages"].items() if stage["status"] == "failed"}
    assert done.returncode == 0 and not failed, f"{failed}\n{done.stdout[-3000:]}"
    assert summary["format"] == device_check.FORMAT and summary["mode"] == "cpu" and summary["status"] == "passed"
    assert list(summary["stages"]) == STAGES and summary["failed_stages"] == []
    for name in STAGES[:-1]:
        assert summary["stages"][name]["status"] == "passed" and summary["stages"][name]["required"]
    assert summary["stages"]["compile"] == {
        "required": False,
        "status": "skipped",
        "reason": "CUDA only",
        "seconds": 0.0,
    }
    assert summary["optional_not_passed"] == ["compile"]
    assert summary["environment"]["torch"] == torch.__version__
    assert 0 < summary["wall_seconds"] <= summary["budget_s"]
    # OUT_DIR holds only these flat files (docs/device-check.md lists them).
    assert sorted(p.name for p in out.iterdir()) == [
        "bench_ablation.json",
        "bench_pretrain.json",
        "device_check.json",
        "device_check.log",
        "pytest_cuda.xml",
    ]


def test_cpu_smoke_mode_figures(smoke):
    _, out = smoke
    stages = json.loads((out / "device_check.json").read_text())["stages"]
    tests = stages["cuda_tests"]
    assert tests["tests"] >= 14 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"]
    assert stages["data"]["xview"] == {"train": 40, "val": 20} and stages["data"]["synthetic_files"] == 60
    resume = stages["resume"]
    assert resume["backend"] == "gloo" and resume["stopped_at"]["epoch"] >= 1
    assert resume["resumed_vs_uninterrupted"]["identical"] and resume["resumed_vs_uninterrupted"]["tensors"] > 100
    assert 0 <= stages["evaluation"]["linear_seq_based_top1"] <= 100
    assert 0 <= stages["evaluation"]["knn_graph_based_top1"] <= 100
    speed = stages["pretrain_speed"]["runs"]
    assert list(speed) == ["default"] and speed["default"]["steps_per_epoch"] == 8
    assert speed["default"]["ms_per_step"] > 0 and speed["default"]["train_loss"] > 0
    rows = json.loads((out / "bench_pretrain.json").read_text())["rows"]
    # 3 pairs x 3 modes (compute, loader, DataLoader alone), and the per-frame baseline of the 2 pairs with a
    # BiGRU (compute only)
    assert len(rows) == 11 and stages["bench"]["errors"] == []
    assert sorted(r["pair"] for r in rows if r["mode"] == "data") == sorted(bench_pretrain.PAIR_REPRESENTATIONS)
    per_frame = [r for r in rows if r["variant"] == "fp32,per-frame"]
    assert len(per_frame) == 2 and all(
        r["max_abs_feature_diff"] < 1e-5 and r["whole_sequence_speedup"] > 0 for r in per_frame
    )
    ablation = json.loads((out / "bench_ablation.json").read_text())["rows"]
    assert [r["variant"] for r in ablation] == ["fp32", "fp32,sync", "fp32,for-loop", "fp32,no-persist"]
    assert all(r["mode"] == "loader" and r["epoch_start_s"] > 0 for r in ablation)


# ------------------------------------------------------------------------------------------------- pieces


def test_compare_checkpoints_finds_any_difference(tmp_path):
    state = {
        "epoch": 2,
        "step": 0,
        "state_dict": {"w": torch.arange(4.0)},
        "args": {"checkpoint_path": "A"},
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}},
    }
    torch.save(state, tmp_path / "a.pth")
    torch.save({**state, "args": {"checkpoint_path": "B"}}, tmp_path / "b.pth")
    same = device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "b.pth")
    assert same["identical"] and same["tensors"] == 2 and same["max_abs_diff"] == 0.0
    moved = {**state, "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([1.0, 1.5])}}}}
    torch.save(moved, tmp_path / "c.pth")
    diff = device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "c.pth")
    assert not diff["identical"] and diff["mismatched"] == ["optimizer/state/0/momentum_buffer"]
    assert diff["max_abs_diff"] == 0.5
    torch.save({**state, "step": 3}, tmp_path / "d.pth")
    assert device_check.compare_checkpoints(tmp_path / "a.pth", tmp_path / "d.pth")["mismatched"] == ["step"]


def test_junit_counts_reads_failures(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="test_a" time="0.5"/><testcase name="test_b" time="1.25">'
        '<failure message="assert 2e-3 &lt; 1e-5&#10;more">trace</failure></testcase>'
        '<testcase name="test_c" time="0"><skipped message="needs a CUDA GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts = device_check.junit_counts(report)
    assert {k: counts[k] for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": 3,
        "failures": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert counts["failed_tests"] == ["test_b: assert 2e-3 < 1e-5"]
    assert counts["durations_s"] == {"test_a": 0.5, "test_b": 1.25, "test_c": 0.0}


def test_variants_parse_and_bad_tokens_name_the_valid_ones():
    v = bench_pretrain.parse_variant("bf16,fused,graph,workers=4")
    assert (v.precision, v.optimizer, v.graph, v.workers, v.pinned) == ("bf16", "fused", True, 4, True)
    assert bench_pretrain.parse_variant("pageable,blocking", "tf32").precision == "tf32"
    with pytest.raises(ValueError, match=r"unknown variant token 'fp8'.*expected: default, fp32"):
        bench_pretrain.parse_variant("bf16,fp8")
    with pytest.raises(ValueError, match="gru-fp32 only changes a bf16 variant"):
        bench_pretrain.parse_variant("fp32,gru-fp32")


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--cpu", str(not_a_folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"OUT_DIR {not_a_folder} is a file, expected a folder" in done.stderr
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_pretrain.py"), "--variants", "bf16,fp8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown variant token 'fp8'" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("sizes", ["GPU_SIZES", "CPU_SIZES"])
def test_every_command_of_both_modes_parses(tmp_path, sizes):
    """The GPU mode's commands never run in CI: their flags are checked against the scripts' parsers here."""
    import action_classification
    import action_retrieval
    import main_moco_inter_skeleton

    gpu = sizes == "GPU_SIZES"
    check = device_check.Check(
        out=tmp_path, work=tmp_path, cpu=not gpu, sizes=getattr(device_check, sizes), deadline=0.0
    )

    def after(command: list[str], script: str) -> list[str]:
        return command[command.index(script) + 1 :]

    pretrain = main_moco_inter_skeleton.build_parser()
    resume = pretrain.parse_args(
        after(device_check.pretrain_command(check, tmp_path / "A"), "main_moco_inter_skeleton.py")
    )
    speed = pretrain.parse_args(
        after(device_check.speed_command(check, tmp_path / "S", "--amp"), "main_moco_inter_skeleton.py")
    )
    for args in (resume, speed):
        assert args.device == ("cuda" if gpu else "cpu") and args.mlp and args.moco_k % args.batch_size == 0
    if gpu:  # the speed runs are the paper's recipe
        paper = (speed.batch_size, speed.moco_k, speed.gru_hidden_size, speed.agcn_base_channels, speed.lr)
        assert paper == (64, 16384, 1024, 64, 0.01)
        assert resume.gru_hidden_size == 256 and resume.workers == 4
    linear, knn = device_check.evaluation_commands(check, tmp_path / "A" / "checkpoint_last.pth.tar")
    linear_args = action_classification.build_parser().parse_args(after(linear, "action_classification.py"))
    knn_args = action_retrieval.build_parser().parse_args(after(knn, "action_retrieval.py"))
    assert linear_args.gru_hidden_size == knn_args.gru_hidden_size == resume.gru_hidden_size
    assert linear_args.agcn_base_channels == knn_args.agcn_base_channels == resume.agcn_base_channels
    split = tmp_path / "split"
    bench_pretrain.write_clips(split, 2)
    flag_sets = [check.sizes.bench, check.sizes.ablation] + ([device_check.compile_flags(check.sizes)] if gpu else [])
    for flags in flag_sets:
        args = bench_pretrain.parse_args([*flags, "--data", str(split)])
        assert args.moco_k % args.batch == 0 and args.variant_list
