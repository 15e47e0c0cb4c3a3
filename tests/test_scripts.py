"""The recipe scripts: every configuration expands to a command line the Python scripts accept, with
the paper's hyper-parameters, one run folder per seed under RUNS_ROOT (the ledger's layout) and extra
arguments passed verbatim; the README's test command is the one CI runs; the demo runs end to end."""

import json
import math
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

import action_classification
import action_retrieval
import demo
import main_moco_inter_skeleton

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {
    "main_moco_inter_skeleton.py": main_moco_inter_skeleton.build_parser,
    "action_classification.py": action_classification.build_parser,
    "action_retrieval.py": action_retrieval.build_parser,
}


RECIPE_ENV = (
    "SEEDS",
    "SEMI_SEEDS",
    "LABEL_FRACTIONS",
    "EXTRA_ARGS",
    "RUNS_ROOT",
    "CHECKPOINT_ROOT",
    "DATA_ROOT",
    "REPRESENTATION",
    "PRETRAIN_REPRESENTATION",
    "LAUNCHER",
    "GPUS",
    "NPROC",
)


def dry_run(script: str, config: str, *extra: str, **env: str) -> list[list[str]]:
    clean = {k: v for k, v in os.environ.items() if k not in RECIPE_ENV}
    result = subprocess.run(
        ["bash", script, config, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, "DRY_RUN": "1", **env},
        check=True,
    )
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def parsed(cmd: list[str]):
    script = next(arg for arg in cmd if arg.endswith(".py"))
    return PARSERS[script]().parse_args(cmd[cmd.index(script) + 1 :])


SCRIPTS = ("script_pretrain.sh", "script_action_classification.sh", "script_action_retrieval.sh", "script_demo.sh")


@pytest.mark.parametrize("script", [*SCRIPTS, "scripts/common.sh"])
def test_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# classification: 11 linear and 1 fine-tuning configurations (one seed each) and 4 semi-supervised ones
# (4 fractions x 5 seeds)
@pytest.mark.parametrize(
    "script,count",
    [("script_pretrain.sh", 6), ("script_action_classification.sh", 12 + 80), ("script_action_retrieval.sh", 8)],
)
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
        "ntu60",
        "cross_view",
        "seq-based_and_graph-based",
    )
    assert args.checkpoint_path == "/c/ntu_60_cross_view/interskeleton_seq_based_graph_based"
    assert args.data_root == "/d"
    assert args.metrics_json == "./runs/ntu60_cross_view/seq-based_and_graph-based/pretrain/metrics.json"
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
    assert parsed(lin).lr == 0.1 and parsed(knn).knn_neighbours == 1
    assert parsed(lin).finetune is False and parsed(lin).label_fraction is None


def test_each_run_gets_its_own_folder_per_seed():
    lin = dry_run("script_action_classification.sh", "ntu60_xsub_seq", RUNS_ROOT="/r", SEEDS="0 3")
    assert [parsed(cmd).seed for cmd in lin] == [0, 3]
    for cmd, seed in zip(lin, (0, 3), strict=True):
        args = parsed(cmd)
        run = f"/r/ntu60_cross_subject/seq-based_and_graph-based/linear/seq-based/seed{seed}"
        assert (args.checkpoint_path, args.metrics_json) == (run, f"{run}/metrics.json")
    (knn,) = dry_run("script_action_retrieval.sh", "ntu120_xsetup_graph", RUNS_ROOT="/r")
    assert (
        parsed(knn).metrics_json == "/r/ntu120_cross_setup/seq-based_and_graph-based/knn/graph-based/seed0/metrics.json"
    )


def test_transfer_fine_tunes_an_ntu60_encoder_on_pku2_or_trains_a_linear_classifier():
    ntu60 = "/c/ntu_60_cross_subject/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar"
    setting = "/r/pku2_cross_subject_from_ntu60_cross_subject/seq-based_and_graph-based"
    for config, protocol, lr, finetune in (("", "finetune", 0.01, True), ("_linear", "linear", 0.1, False)):
        (cmd,) = dry_run(
            "script_action_classification.sh", f"ntu60_to_pku2_seq{config}", RUNS_ROOT="/r", CHECKPOINT_ROOT="/c"
        )
        args = parsed(cmd)
        assert (args.finetune_dataset, args.protocol, args.pretrained) == ("pku2", "cross_subject", ntu60)
        assert (args.lr, args.finetune, args.label_fraction, args.eval_mode_training) == (lr, finetune, None, False)
        assert args.metrics_json == f"{setting}/{protocol}/seq-based/seed0/metrics.json"


def test_semi_supervised_recipe_is_the_lineages_fine_tuning_over_four_label_fractions_and_five_seeds():
    commands = dry_run("script_action_classification.sh", "ntu60_xview_seq_semi", RUNS_ROOT="/r")
    commands = [parsed(cmd) for cmd in commands]
    assert sorted((a.label_fraction, a.seed) for a in commands) == [
        (f, s) for f in (0.01, 0.05, 0.1, 0.2) for s in range(5)
    ]
    # maoyunyao/CMD's script_action_classification_cmd_semi.sh: the whole network in train mode, SGD lr 0.01,
    # momentum 0.9, no weight decay, batch 64, 80 epochs, x0.1 at 50 and 70.
    for a in commands:
        assert (a.finetune, a.eval_mode_training, a.finetune_skeleton_representation) == (True, False, "seq-based")
        assert (a.lr, a.momentum, a.weight_decay, a.batch_size, a.epochs, a.schedule) == (
            0.01,
            0.9,
            0,
            64,
            80,
            [50, 70],
        )
    assert {a.metrics_json.split("/")[-4] for a in commands} == {"semi_1pct", "semi_5pct", "semi_10pct", "semi_20pct"}
    assert len({a.checkpoint_path for a in commands}) == 20


@pytest.mark.parametrize("how", ["environment", "after --"])
def test_extra_arguments_are_passed_verbatim_never_glob_expanded(how):
    # '*' would match the repository's files if the scripts let the shell expand it.
    extra = ["--plot-dir", "*", "-j", "3"]
    if how == "environment":
        (cmd,) = dry_run("script_action_retrieval.sh", "ntu60_xview_seq", EXTRA_ARGS=" ".join(extra))
    else:
        (cmd,) = dry_run("script_action_retrieval.sh", "ntu60_xview_seq", "--", *extra)
    assert cmd[-4:] == extra
    args = parsed(cmd)
    assert (args.plot_dir, args.workers) == ("*", 3)


@pytest.mark.parametrize(
    "env,extra,message",
    [
        ({"SEEDS": "0 x"}, [], "SEEDS: expected non-negative integers, got 'x'"),
        ({"LABEL_FRACTIONS": "0.1 1.5"}, [], "LABEL_FRACTIONS: expected fractions in (0, 1], got '1.5'"),
        ({"SEMI_SEEDS": " "}, [], "SEMI_SEEDS is empty; expected non-negative integers"),
        ({}, ["--amp"], "unexpected argument '--amp'; put extra arguments for the Python scripts after --"),
        ({"LAUNCHER": "mpirun"}, [], "LAUNCHER must be python or torchrun, not 'mpirun'"),
    ],
)
def test_bad_settings_stop_with_one_line(env, extra, message):
    result = subprocess.run(
        ["bash", "script_action_classification.sh", "ntu60_xview_seq_semi", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", **env},
    )
    assert result.returncode == 2
    assert result.stderr == f"script_action_classification.sh: {message}\n"
    assert result.stdout == ""


def test_torchrun_launcher_and_gpus():
    (cmd,) = dry_run(
        "script_pretrain.sh",
        "ntu60_xsub",
        LAUNCHER="torchrun",
        GPUS="0,1",
        NNODES="2",
        NODE_RANK="1",
        MASTER_ADDR="10.0.0.1",
    )
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


def test_demo_refuses_an_output_folder_that_is_a_file_with_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert demo.main(["--smallest", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"demo.py: error: --out {tmp_path / 'file'} is a file, not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert demo.main(["--smallest", "--out", str(tmp_path / "out"), "--seed", "-1"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == "demo.py: error: argument --seed: expected an integer >= 0, got -1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_demo_smallest_end_to_end(tmp_path):
    """The demo's plumbing at its smallest sizes: each column of its table is the evaluation of the
    checkpoint it names, the pretrained encoders are the trained ones (query and momentum encoders moved
    away from the random init the other column uses), and the printed Markdown table holds the JSON's
    figures. Whether pretraining learns is tests/test_learning.py's question: at these sizes (4 steps)
    no downstream figure can tell, and the contrastive accuracy climbs far above chance even with a
    shuffled positive key (the current batch's keys stand out from the queue's older ones)."""
    out = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "script_demo.sh", "--smallest", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "demo_results.json").read_text())
    checkpoints = {
        "pretrained": out / "pretrain" / "checkpoint_last.pth.tar",
        "random": out / "random_init" / "checkpoint_random.pth.tar",
    }
    table = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in table[0]] == ["encoder", "evaluation", "random init", "pretrained", "margin"]
    printed = {(row[0].strip(), row[1].strip()): [float(c) for c in row[2:]] for row in table[2:]}
    for rep in ("seq-based", "graph-based"):
        for protocol, key, label in (("linear", "top1", "linear top-1 (%)"), ("knn", "knn_top1", "KNN k=1 top-1 (%)")):
            figures = {}
            for tag, checkpoint in checkpoints.items():
                metrics = json.loads((out / "metrics" / f"{protocol}_{tag}_{rep}.json").read_text())
                assert metrics["args"]["pretrained"] == str(checkpoint)
                figures[tag] = summary["results"][tag][rep][f"{protocol}_top1"]
                assert figures[tag] == metrics[key]
            rand, pre = round(figures["random"], 1), round(figures["pretrained"], 1)
            assert printed[(rep, label)] == [rand, pre, round(pre - rand, 1)]
    trained, random = (torch.load(path, weights_only=True)["state_dict"] for path in checkpoints.values())
    for encoder in ("encoder_q", "encoder_k", "encoder_r", "encoder_l"):
        moved = [k for k in random if k.startswith(f"module.{encoder}.") and not torch.equal(trained[k], random[k])]
        assert moved, f"{encoder} is still its random init after pretraining"
    assert [h["epoch"] for h in summary["pretraining"]["history"]] == [0]
    assert all(math.isfinite(h["train_loss"]) for h in summary["pretraining"]["history"])
    assert (out / "data" / "NTU-RGB-D-60-AGCN" / "xview" / "val_data_joint.npy").exists()
    assert (out / "plots" / "pretrained_seq-based" / "confusion_matrix.png").exists()
    assert (out / "plots" / "random_graph-based" / "tsne.png").exists()
