"""The recipe scripts: every configuration expands to a command line the Python scripts accept, with
the paper's hyper-parameters; the README's test command is the one CI runs; the demo runs end to end."""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

import action_classification
import action_retrieval
import main_moco_inter_skeleton

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {
    "main_moco_inter_skeleton.py": main_moco_inter_skeleton.build_parser,
    "action_classification.py": action_classification.build_parser,
    "action_retrieval.py": action_retrieval.build_parser,
}


def dry_run(script: str, config: str, **env: str) -> list[list[str]]:
    result = subprocess.run(["bash", script, config], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "DRY_RUN": "1", **env}, check=True)
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def parsed(cmd: list[str]):
    script = next(arg for arg in cmd if arg.endswith(".py"))
    return PARSERS[script]().parse_args(cmd[cmd.index(script) + 1:])


@pytest.mark.parametrize("script,count", [("script_pretrain.sh", 6), ("script_action_classification.sh", 11),
                                          ("script_action_retrieval.sh", 8)])
def test_every_configuration_parses(script, count):
    commands = dry_run(script, "all")
    assert len(commands) == count
    for cmd in commands:
        parsed(cmd)  # argparse exits on an unknown flag or value


def test_pretraining_recipe_is_the_papers():
    (cmd,) = dry_run("script_pretrain.sh", "ntu60_xview", DATA_ROOT="/d", CHECKPOINT_ROOT="/c")
    args = parsed(cmd)
    assert (args.lr, args.batch_size, args.moco_k, args.moco_t, args.mlp) == (0.01, 64, 16384, 0.07, True)
    assert (args.epochs, args.schedule) == (451, [351])
    assert (args.pre_dataset, args.protocol, args.skeleton_representation) == (
        "ntu60", "cross_view", "seq-based_and_graph-based")
    assert args.checkpoint_path == "/c/ntu_60_cross_view/interskeleton_seq_based_graph_based"
    assert args.data_root == "/d"
    (cmd,) = dry_run("script_pretrain.sh", "ntu120_xsetup")
    args = parsed(cmd)
    assert (args.epochs, args.schedule, args.protocol) == (351, [251, 351], "cross_setup")


def test_evaluation_reads_the_checkpoint_pretraining_writes():
    (pre,) = dry_run("script_pretrain.sh", "ntu120_xsub", CHECKPOINT_ROOT="/c")
    (lin,) = dry_run("script_action_classification.sh", "ntu120_xsub_graph", CHECKPOINT_ROOT="/c")
    (knn,) = dry_run("script_action_retrieval.sh", "ntu120_xsub_graph", CHECKPOINT_ROOT="/c")
    folder = parsed(pre).checkpoint_path
    for cmd in (lin, knn):
        args = parsed(cmd)
        assert args.pretrained == f"{folder}/checkpoint_0350.pth.tar"  # 351 epochs, 0-based numbering
        assert args.finetune_skeleton_representation == "graph-based"
        assert args.metrics_json.endswith(".json")
    assert parsed(lin).lr == 0.1 and parsed(knn).knn_neighbours == 1


def test_torchrun_launcher_and_gpus():
    (cmd,) = dry_run("script_pretrain.sh", "ntu60_xsub", LAUNCHER="torchrun", GPUS="0,1", NNODES="2",
                     NODE_RANK="1", MASTER_ADDR="10.0.0.1")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in cmd and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert "--master_addr=10.0.0.1" in cmd


def test_unknown_configuration_lists_the_valid_ones():
    result = subprocess.run(["bash", "script_pretrain.sh", "ntu61"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "ntu60_xview" in result.stderr and "all" in result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^## Quick start.*?```bash\n(.*?)```", readme, re.S | re.M).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "bash script_demo.sh" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in [line.strip() for line in ci]


def test_demo_smallest_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(["bash", "script_demo.sh", "--smallest", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "demo_results.json").read_text())
    for tag in ("pretrained", "random"):
        for rep in ("seq-based", "graph-based"):
            figures = summary["results"][tag][rep]
            assert 0.0 <= figures["linear_top1"] <= 100.0 and 0.0 <= figures["knn_top1"] <= 100.0
    assert "random init" in result.stdout and "pretrained" in result.stdout
    assert (out / "pretrain" / "checkpoint_last.pth.tar").exists()
    assert (out / "data" / "NTU-RGB-D-60-AGCN" / "xview" / "val_data_joint.npy").exists()
    assert (out / "plots" / "pretrained_seq-based" / "confusion_matrix.png").exists()
    assert (out / "plots" / "random_graph-based" / "tsne.png").exists()
