"""action_classification.py end to end on tiny synthetic NTU-layout data, and its frozen-encoder guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import action_classification
from common.io import UsageError
from engine import evaluation
from engine.checkpoints import CLASSIFIER_FORMAT, PRETRAIN_FORMAT
from engine.evaluation import check_encoder_unchanged, freeze_encoder, label_subset
from engine.launch import DistContext
from models import build_encoder
from tests.helpers import (
    PNG_MAGIC,
    TINY,
    TINY_ARGS,
    assert_strays_removed,
    eval_argv,
    lock_held_elsewhere,
    plant_stray_temporaries,
    reference_checkpoint,
    write_out_of_range_label,
    write_synthetic_split,
)


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root)
    return root


def _common(data_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        *eval_argv(data_root, batch=4, seed=1),
        "--finetune-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--lr",
        "0.1",
        "--checkpoint-path",
        str(out / "ckpt"),
        *extra,
    ]


def classify(argv: list[str]) -> dict:
    """The script's results (what ``--metrics-json`` receives) for a command line."""
    return action_classification.run(action_classification.build_parser().parse_args(argv))


def _encoder_tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_linear_evaluation_end_to_end(data_root, tmp_path, capsys):
    pretrained = tmp_path / "checkpoint_0450.pth.tar"
    encoders = reference_checkpoint(pretrained, "seq-based_and_graph-based")
    metrics_path = tmp_path / "out" / "metrics.json"
    metrics = classify(
        _common(
            data_root,
            tmp_path,
            "--epochs",
            "2",
            "--pretrained",
            str(pretrained),
            "--pretrain-skeleton-representation",
            "seq-based_and_graph-based",
            "--finetune-skeleton-representation",
            "graph-based",
            "--metrics-json",
            str(metrics_path),
            "--plot-dir",
            str(tmp_path / "plots"),
        )
    )

    saved = json.loads(metrics_path.read_text())
    assert saved["top1"] == pytest.approx(metrics["top1"])
    assert set(saved) >= {"top1", "top5", "best_epoch", "history", "args"}
    assert saved["protocol"] == "linear"
    assert saved["best_epoch"] in (1, 2)
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    best = saved["history"][saved["best_epoch"] - 1]
    assert saved["top1"] == pytest.approx(best["val_top1"]) and saved["top5"] == pytest.approx(best["val_top5"])
    # 6 evaluation clips: accuracies are multiples of 100/6
    assert (saved["top1"] * 6 / 100) == pytest.approx(round(saved["top1"] * 6 / 100))
    assert saved["top1"] <= saved["top5"] <= 100.0
    assert saved["num_train"] == 12 and saved["num_val"] == 6
    assert saved["args"]["finetune_skeleton_representation"] == "graph-based"
    assert saved["seed"] == 1 and saved["final_top1"] == saved["history"][-1]["val_top1"]
    provenance = saved["provenance"]
    assert provenance["world_size"] == 1 and provenance["device"] == "cpu"
    assert list(provenance["data"]) == [str(data_root / "NTU-RGB-D-60-AGCN" / "xview")]
    assert provenance["checkpoints"]["--pretrained"] == {
        "path": str(pretrained),
        "sha256": hashlib.sha256(pretrained.read_bytes()).hexdigest(),
    }
    assert "--resume" not in provenance["checkpoints"]

    # frozen: every encoder tensor (BatchNorm statistics included) equals encoder_r of the checkpoint
    checkpoint = torch.load(tmp_path / "ckpt" / "graph-based_checkpoint.pth.tar", weights_only=True)
    assert checkpoint["epoch"] == saved["best_epoch"]
    want = _encoder_tensors(encoders["encoder_r"])
    got = _encoder_tensors(checkpoint["state_dict"])
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert checkpoint["state_dict"]["fc.weight"].shape[0] == 60
    assert (tmp_path / "ckpt" / "last_checkpoint.pth.tar").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "ckpt").iterdir())
    assert (tmp_path / "plots" / "confusion_matrix.png").read_bytes()[:8] == PNG_MAGIC

    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-1].startswith("linear graph-based on ntu60 cross_view: best top-1 ")
    assert f"at epoch {saved['best_epoch']}/2" in lines[-1]


def test_frozen_check_catches_a_changed_weight():
    model = build_encoder("graph-based", 60, **TINY)
    reference = {k: v.clone() for k, v in _encoder_tensors(model.state_dict()).items()}
    check_encoder_unchanged(model, reference, epoch=1)  # untouched: passes
    model.fc.weight.data.add_(1.0)
    check_encoder_unchanged(model, reference, epoch=1)  # fc may change
    bn_key = next(k for k in reference if k.endswith("running_mean"))
    model.state_dict()[bn_key].add_(0.25)
    message = rf"changed frozen encoder weights during epoch 1: {bn_key} \(max change 0.25\)"
    with pytest.raises(RuntimeError, match=message):
        check_encoder_unchanged(model, reference, epoch=1)


def test_broken_freezing_is_caught_during_training(data_root, tmp_path, monkeypatch):
    """Were freezing forgotten, SGD would move encoder weights: the run must stop after epoch 1."""
    pretrained = tmp_path / "intra.pth.tar"
    reference_checkpoint(pretrained, "image-based")
    monkeypatch.setattr(evaluation, "freeze_encoder", lambda model: None)
    with pytest.raises(RuntimeError, match="changed frozen encoder weights during epoch 1"):
        classify(
            _common(
                data_root,
                tmp_path,
                "--epochs",
                "1",
                "--pretrained",
                str(pretrained),
                "--pretrain-skeleton-representation",
                "image-based",
                "--finetune-skeleton-representation",
                "image-based",
            )
        )
    assert not (tmp_path / "ckpt" / "image-based_checkpoint.pth.tar").exists()


def test_frozen_check_runs_on_the_first_epoch_of_a_resumed_run(data_root, tmp_path, monkeypatch):
    pretrained = tmp_path / "intra.pth.tar"
    reference_checkpoint(pretrained, "image-based")
    args = _common(
        data_root,
        tmp_path,
        "--pretrained",
        str(pretrained),
        "--pretrain-skeleton-representation",
        "image-based",
        "--finetune-skeleton-representation",
        "image-based",
    )
    checked = []
    real_check = evaluation.check_encoder_unchanged
    monkeypatch.setattr(
        evaluation,
        "check_encoder_unchanged",
        lambda model, reference, epoch: (checked.append(epoch), real_check(model, reference, epoch)),
    )
    classify([*args, "--epochs", "1"])
    classify([*args, "--epochs", "3", "--resume", str(tmp_path / "ckpt" / "last_checkpoint.pth.tar")])
    assert checked == [1, 2]


def test_the_linear_head_starts_at_normal_0_001_with_zero_bias(tmp_path):
    pretrained = tmp_path / "intra.pth.tar"
    reference_checkpoint(pretrained, "image-based")
    argv = ["--pretrained", str(pretrained), "--pretrain-skeleton-representation", "image-based", *TINY_ARGS]
    args = action_classification.build_parser().parse_args([*argv, "--finetune-skeleton-representation", "image-based"])
    model = action_classification.build_classifier(args, DistContext(), 60).model
    assert model.fc.bias.abs().max().item() == 0.0
    assert 0.008 < model.fc.weight.std().item() < 0.012 and abs(model.fc.weight.mean().item()) < 0.002


def test_freeze_encoder_keeps_eval_mode_and_only_fc_trainable():
    model = build_encoder("image-based", 60, **TINY)
    freeze_encoder(model)
    model.train()
    assert not any(m.training for m in model.modules())
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["fc.bias", "fc.weight"]


def test_supervised_semi_supervised_and_resume(data_root, tmp_path):
    args = _common(data_root, tmp_path, "--finetune-skeleton-representation", "image-based", "--label-fraction", "0.5")
    first = classify([*args, "--epochs", "1"])
    assert first["protocol"] == "supervised_semi0.5"
    assert first["num_train"] == 6  # int(12 * 0.5) clips drawn from all 12
    first_events = sorted(p.name for p in (tmp_path / "ckpt").glob("events.*"))
    plots = ["--plot-dir", str(tmp_path / "plots")]  # the best epoch's predictions come with the checkpoint
    last = tmp_path / "ckpt" / "last_checkpoint.pth.tar"
    started_from = hashlib.sha256(last.read_bytes()).hexdigest()
    resumed = classify([*args, "--epochs", "2", *plots, "--resume", str(last)])
    assert resumed["plots"] == [str(tmp_path / "plots" / "confusion_matrix.png")]
    # the provenance names the checkpoint as the run started from it, not as the run rewrote it
    assert resumed["provenance"]["checkpoints"]["--resume"] == {"path": str(last), "sha256": started_from}
    assert hashlib.sha256(last.read_bytes()).hexdigest() != started_from
    # continuing a run in its own folder keeps what the run wrote so far
    assert set(first_events) < {p.name for p in (tmp_path / "ckpt").glob("events.*")}
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == first["history"][0]
    # an uninterrupted run reaches the same second epoch
    straight = classify([*args, "--epochs", "2", "--checkpoint-path", str(tmp_path / "straight")])
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
        assert resumed["history"][1][key] == pytest.approx(straight["history"][1][key], rel=1e-5), key
    last = torch.load(tmp_path / "ckpt" / "last_checkpoint.pth.tar", weights_only=True)
    assert last["epoch"] == 2


def _cmd_subset(num_clips: int, ratio: float, seed: int) -> np.ndarray:
    """The lineage's semi-supervised draw (maoyunyao/CMD feeder/feeder_downstream_semi_supervised.py,
    random_select_data), literally, with NumPy's global generator seeded first."""
    np.random.seed(seed)
    idx = np.arange(num_clips)
    np.random.shuffle(idx)
    n_used = int(num_clips * ratio)
    return idx[:n_used]


@pytest.mark.parametrize("num_clips, ratio", [(40320, 0.01), (40320, 0.05), (37646, 0.1), (12, 0.5), (1000, 0.2)])
def test_global_label_subset_is_the_lineages_draw(num_clips, ratio):
    labels = np.arange(num_clips) % 60
    for seed in (0, 3):
        expected = np.sort(_cmd_subset(num_clips, ratio, seed))
        np.testing.assert_array_equal(label_subset(labels, ratio, seed), expected)
    drawn = label_subset(labels, ratio, 0)
    assert len(drawn) == int(num_clips * ratio) and drawn.dtype == np.int64
    assert not np.array_equal(drawn, label_subset(labels, ratio, 1))


def test_per_class_label_subset():
    labels = np.array([0] * 1 + [1] * 5 + [2] * 100 + [3] * 20)
    idx = label_subset(labels, 0.1, 0, "per-class")
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [1, 1, 10, 2])
    np.testing.assert_array_equal(idx, label_subset(labels, 0.1, 0, "per-class"))
    assert not np.array_equal(idx, label_subset(labels, 0.1, 1, "per-class"))
    np.testing.assert_array_equal(label_subset(labels, 1.0, 3, "per-class"), np.arange(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[label_subset(labels, 0.01, 0, "per-class")]), [1, 1, 1, 1])
    assert np.bincount(labels[label_subset(labels, 0.1, 0)], minlength=4)[0] == 0  # global: no share per class


def test_label_fraction_draws_globally_or_per_class(data_root, tmp_path, capsys):
    args = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    per_class = classify([*args, "--label-fraction", "0.01", "--label-sampling", "per-class"])
    assert per_class["num_train"] == len((0, 3, 7)) and per_class["protocol"] == "supervised_semi0.01_per-class"
    assert action_classification.main([*args, "--label-fraction", "0.01", "--overwrite"]) == 2
    assert _error_lines(capsys)[-1] == (
        "action_classification.py: error: --label-fraction 0.01 of the 12 training clips selects none"
    )


def test_finetune_trains_the_encoder(data_root, tmp_path):
    pretrained = tmp_path / "intra.pth.tar"
    encoders = reference_checkpoint(pretrained, "seq-based")
    metrics = classify(
        _common(
            data_root,
            tmp_path,
            "--epochs",
            "1",
            "--pretrained",
            str(pretrained),
            "--finetune",
            "--pretrain-skeleton-representation",
            "seq-based",
            "--finetune-skeleton-representation",
            "seq-based",
        )
    )
    assert metrics["protocol"] == "finetune"
    state = torch.load(tmp_path / "ckpt" / "last_checkpoint.pth.tar", weights_only=True)["state_dict"]
    want = _encoder_tensors(encoders["encoder_q"])
    assert any(not torch.equal(state[k], want[k]) for k in want)


def test_error_cases(data_root, tmp_path):
    pretrained = tmp_path / "pair.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_graph-based")
    with pytest.raises(UsageError, match=r"val_data_joint\.npy not found"):
        (data_root / "NTU-RGB-D-60-AGCN" / "xview" / "val_data_joint.npy").rename(tmp_path / "moved.npy")
        classify(_common(data_root, tmp_path, "--epochs", "1"))
    (tmp_path / "moved.npy").rename(data_root / "NTU-RGB-D-60-AGCN" / "xview" / "val_data_joint.npy")
    with pytest.raises(UsageError, match=r"missing\.pth\.tar"):
        classify(_common(data_root, tmp_path, "--pretrained", str(tmp_path / "missing.pth.tar")))
    with pytest.raises(UsageError, match=r"holds encoders for seq-based and graph-based only, not 'image-based'"):
        classify(
            _common(
                data_root,
                tmp_path,
                "--pretrained",
                str(pretrained),
                "--pretrain-skeleton-representation",
                "seq-based_and_graph-based",
                "--finetune-skeleton-representation",
                "image-based",
            )
        )
    with pytest.raises(ValueError, match=r"--window-size 8: the image-based encoder needs at least 16 frames"):
        classify(
            _common(data_root, tmp_path, "--finetune-skeleton-representation", "image-based", "--window-size", "8")
        )
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(ValueError, match="--finetune needs --pretrained"):
        classify(_common(data_root, tmp_path, "--finetune"))
    with pytest.raises(SystemExit):  # argparse: unknown representation
        classify(_common(data_root, tmp_path, "--finetune-skeleton-representation", "pixel-based"))


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_main_returns_exit_codes_and_guards_the_checkpoint_folder(data_root, tmp_path, capsys):
    args = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    assert action_classification.main(args) == 0
    ckpt = tmp_path / "ckpt"
    written = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert sorted(n for n in written if not n.startswith("events.")) == [
        "image-based_checkpoint.pth.tar",
        "last_checkpoint.pth.tar",
    ]
    assert torch.load(ckpt / "last_checkpoint.pth.tar", weights_only=True)["format"] == CLASSIFIER_FORMAT
    capsys.readouterr()

    # the same folder again without --resume: one line, exit 2, nothing touched
    assert action_classification.main(args) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: --checkpoint-path {ckpt} already holds the checkpoints of a run "
        f"(last_checkpoint.pth.tar: 1 of 1 epochs done); continue it with --resume {ckpt / 'last_checkpoint.pth.tar'}, "
        "or pass --overwrite to delete them and start again"
    ]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == written

    # --resume in its own folder continues the run: --overwrite has nothing to delete then
    last = ckpt / "last_checkpoint.pth.tar"
    assert action_classification.main([*args, "--epochs", "2", "--resume", str(last), "--overwrite"]) == 0
    assert "--overwrite: removed" not in capsys.readouterr().out
    assert (
        torch.load(last, weights_only=True)["history"][0]
        == torch.load(ckpt / "image-based_checkpoint.pth.tar", weights_only=True)["history"][0]
    )
    written = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    # --overwrite: the earlier run's checkpoints and TensorBoard events are replaced by the new run's
    assert action_classification.main([*args, "--epochs", "3", "--overwrite"]) == 0
    assert torch.load(ckpt / "last_checkpoint.pth.tar", weights_only=True)["epoch"] == 3
    events = [p.name for p in ckpt.iterdir() if p.name.startswith("events.")]
    assert len(events) == 1 and events[0] not in written


def test_a_checkpoint_path_another_live_run_holds_is_refused_naming_its_pid(data_root, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    args = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    with lock_held_elsewhere(ckpt, "classification") as holder:
        assert action_classification.main(args) == 2
        assert _error_lines(capsys) == [
            f"action_classification.py: error: --checkpoint-path {ckpt}: in use by PID {holder.pid} (classification); "
            "wait for it to finish or stop it, or choose another folder"
        ]
        assert [p.name for p in ckpt.iterdir()] == [".skeleton-contrast.lock"]  # the holder's, untouched
    assert action_classification.main(args) == 0  # free again once the holder has gone
    assert not (ckpt / ".skeleton-contrast.lock").exists()  # released at the end
    assert (ckpt / "last_checkpoint.pth.tar").is_file()


def test_stale_temporaries_in_the_checkpoint_path_are_removed_at_start(data_root, tmp_path, capsys):
    args = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    assert action_classification.main(args) == 0
    ckpt = tmp_path / "ckpt"
    strays = plant_stray_temporaries(ckpt, "last_checkpoint.pth.tar", "image-based_checkpoint.pth.tar")
    capsys.readouterr()
    assert action_classification.main([*args, "--epochs", "2", "--resume", str(ckpt / "last_checkpoint.pth.tar")]) == 0
    assert_strays_removed(strays, capsys.readouterr().out)
    assert torch.load(ckpt / "last_checkpoint.pth.tar", weights_only=True)["epoch"] == 2


def test_resume_refuses_what_is_not_this_classifier(data_root, tmp_path, capsys):
    args = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    ours = tmp_path / "pretraining.pth.tar"
    torch.save({"format": PRETRAIN_FORMAT, "epoch": 3, "state_dict": {"w": torch.zeros(1)}, "optimizer": {}}, ours)
    assert action_classification.main([*args, "--resume", str(ours)]) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: --resume {ours} is a pretraining checkpoint, not a classification checkpoint"
    ]
    reference = tmp_path / "reference.pth.tar"  # no format entry: read by its keys, then it does not fit
    reference_checkpoint(reference, "image-based")
    assert action_classification.main([*args, "--resume", str(reference)]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith(
        f"action_classification.py: error: --resume {reference} does not fit this model and "
        "protocol: Error(s) in loading state_dict for HCN: Missing key(s) in state_dict: "
    )
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--lr", "-1", "argument --lr/--learning-rate: expected a positive number, got -1"),
        ("--lr", "0", "argument --lr/--learning-rate: expected a positive number, got 0"),
        ("--epochs", "0", "argument --epochs: expected a positive integer, got 0"),
        ("-b", "0", "argument -b/--batch-size: expected a positive integer, got 0"),
        ("-j", "-1", "argument -j/--workers: expected an integer >= 0, got -1"),
        ("--label-fraction", "0", "argument --label-fraction: expected a fraction in (0, 1], got 0"),
        ("--label-fraction", "1.5", "argument --label-fraction: expected a fraction in (0, 1], got 1.5"),
    ],
)
def test_impossible_numbers_are_refused(data_root, tmp_path, capsys, flag, value, message):
    assert action_classification.main(_common(data_root, tmp_path, flag, value)) == 2
    assert _error_lines(capsys)[-1] == f"action_classification.py: error: {message}"
    assert not (tmp_path / "ckpt").exists()


def test_label_out_of_range_is_one_line(data_root, tmp_path, capsys):
    path, name = write_out_of_range_label(data_root)
    assert action_classification.main(_common(data_root, tmp_path, "--epochs", "1")) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: {path}: label 60 of sample {name} is out of "
        "range; ntu60 has 60 classes, labels 0 to 59"
    ]
    assert not (tmp_path / "ckpt").exists()


# -------------------------------------------------------------------------------------------------
# Nothing deleted that another flag reads; one folder per configuration; checkpoints that cannot be used
# -------------------------------------------------------------------------------------------------


def _linear(data_root: Path, tmp_path: Path, pretrained: Path, finetune: str = "seq-based", *extra: str) -> list[str]:
    argv = _common(data_root, tmp_path, "--epochs", "1", "--pretrained", str(pretrained), *extra)
    return [*argv, "--pretrain-skeleton-representation", "seq-based_and_graph-based"] + [
        "--finetune-skeleton-representation",
        finetune,
    ]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_overwrite_never_deletes_a_pretraining_run_or_the_pretrained_file(data_root, tmp_path, capsys):
    pre = tmp_path / "pre"
    pre.mkdir()
    reference_checkpoint(pre / "checkpoint_0000.pth.tar", "seq-based_and_graph-based")
    reference_checkpoint(pre / "checkpoint_last.pth.tar", "seq-based_and_graph-based")
    before = _snapshot(pre)
    argv = [*_linear(data_root, tmp_path, pre / "checkpoint_0000.pth.tar"), "--checkpoint-path", str(pre)]
    for extra in (["--overwrite"], []):
        assert action_classification.main([*argv, *extra]) == 2
        assert _error_lines(capsys) == [
            f"action_classification.py: error: --checkpoint-path {pre} holds checkpoint_0000.pth.tar, which this "
            "command does not write (another kind of run's checkpoint, or an input): choose another --checkpoint-path"
        ]
        assert _snapshot(pre) == before
    # a classifier folder whose own file another flag reads: --overwrite would delete it
    ckpt = tmp_path / "ckpt"
    argv = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    assert action_classification.main(argv) == 0
    before = _snapshot(ckpt)
    assert (
        action_classification.main([*argv, "--overwrite", "--pretrained", str(ckpt / "last_checkpoint.pth.tar")]) == 2
    )
    assert _error_lines(capsys)[-1] == (  # the best checkpoint: the last one is a hard link of it
        f"action_classification.py: error: --overwrite would delete {ckpt / 'image-based_checkpoint.pth.tar'}, "
        "which this run reads: choose another --checkpoint-path"
    )
    assert _snapshot(ckpt) == before


def test_default_folders_are_per_configuration_and_a_resume_of_another_is_refused(
    data_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "a.pth.tar", tmp_path / "b.pth.tar"
    reference_checkpoint(first, "seq-based_and_graph-based", seed=0)
    reference_checkpoint(second, "seq-based_and_graph-based", seed=1)
    argv = [a for a in _linear(data_root, tmp_path, first, "graph-based") if a != str(tmp_path / "ckpt")]
    argv.remove("--checkpoint-path")
    metrics = {}
    for representation in ("graph-based", "seq-based"):  # encoder A, then encoder B, with the defaults
        argv[argv.index("--finetune-skeleton-representation") + 1] = representation
        metrics[representation] = classify([*argv, "--metrics-json", f"{representation}.json"])
        folder = Path("runs/action_classification/ntu60_cross_view/seq-based_and_graph-based", representation, "linear")
        assert metrics[representation]["checkpoint"] == str(folder / f"{representation}_checkpoint.pth.tar")
        assert json.loads(Path(f"{representation}.json").read_text())["top1"] == metrics[representation]["top1"]
    capsys.readouterr()
    other = [str(second) if a == str(first) else a for a in argv]
    folder = Path("runs/action_classification/ntu60_cross_view/seq-based_and_graph-based/seq-based/linear")
    assert action_classification.main(other) == 2
    assert _error_lines(capsys)[-1] == (
        f"action_classification.py: error: --checkpoint-path {folder} already holds the checkpoints of a run of "
        "other --pretrained (last_checkpoint.pth.tar: 1 of 1 epochs done): choose another --checkpoint-path, "
        "or pass --overwrite to delete them"
    )
    last = folder / "last_checkpoint.pth.tar"
    for extra, flags in (
        ([], "--pretrained"),
        (["--gru-hidden-size", "12", "--true-bidirectional-gru"], "--gru-hidden-size, --true-bidirectional-gru"),
    ):
        resumed = [*(other if extra == [] else argv), *extra, "--epochs", "2", "--resume", str(last)]
        assert action_classification.main(resumed) == 2
        assert _error_lines(capsys)[-1] == (
            f"action_classification.py: error: --resume {last} continues a run of other {flags}: resume it "
            "with that run's flags, or start afresh without --resume"
        )
    assert torch.load(last, weights_only=True)["epoch"] == 1


def _poisoned(path: Path, key: str) -> None:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"][key][0] = float("nan")
    torch.save(checkpoint, path)


def test_non_finite_weights_are_one_line_naming_the_file_and_tensor(data_root, tmp_path, capsys):
    pretrained = tmp_path / "pair.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_graph-based")
    argv = _linear(data_root, tmp_path, pretrained)
    assert action_classification.main(argv) == 0
    last = tmp_path / "ckpt" / "last_checkpoint.pth.tar"
    (tmp_path / "ckpt" / "seq-based_checkpoint.pth.tar").unlink()  # the last checkpoint alone, as before
    last.write_bytes(last.read_bytes())  # no longer a link to the best one
    _poisoned(last, "fc.bias")
    capsys.readouterr()
    assert action_classification.main([*argv, "--epochs", "2", "--resume", str(last)]) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: --resume {last}: fc.bias holds non-finite values (NaN or infinity); "
        "the weights are unusable"
    ]
    key = "module.encoder_r.l1.gcn1.PA"
    _poisoned(pretrained, key)
    assert action_classification.main([*argv, "--checkpoint-path", str(tmp_path / "other")]) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: --pretrained {pretrained}: {key} holds non-finite values (NaN or "
        "infinity); the weights are unusable"
    ]


def test_a_bigru_of_the_other_function_is_refused(data_root, tmp_path, capsys):
    pretrained = tmp_path / "ours.pth.tar"
    sizes = dict(gru_hidden_size=8, gru_layers=1, agcn_base_channels=4, hcn_out_channels=4)
    recorded = {"skeleton_representation": "seq-based", "true_bidirectional_gru": False, **sizes}
    reference_checkpoint(pretrained, "seq-based", extra={"args": recorded})
    argv = _common(data_root, tmp_path, "--epochs", "1", "--pretrained", str(pretrained), "--true-bidirectional-gru")
    assert action_classification.main(argv) == 2
    assert _error_lines(capsys) == [
        f"action_classification.py: error: --pretrained {pretrained} was pretrained with "
        "--true-bidirectional-gru off (here on): pass its own options"
    ]


def test_output_paths_are_checked_before_the_run(data_root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    argv = _common(data_root, tmp_path, "--epochs", "1", "--finetune-skeleton-representation", "image-based")
    for extra, message in (
        (
            ["--metrics-json", str(tmp_path / "folder")],
            f"--metrics-json {tmp_path / 'folder'} is a folder; give a file name",
        ),
        (
            ["--metrics-json", str(tmp_path / "file" / "m.json")],
            f"--metrics-json {tmp_path / 'file' / 'm.json'} cannot be created: {tmp_path / 'file'} is a file",
        ),
        (["--plot-dir", str(tmp_path / "file")], f"--plot-dir {tmp_path / 'file'} is a file, not a folder"),
    ):
        assert action_classification.main([*argv, *extra]) == 2
        assert _error_lines(capsys) == [f"action_classification.py: error: {message}"]
    assert not (tmp_path / "ckpt").exists()
