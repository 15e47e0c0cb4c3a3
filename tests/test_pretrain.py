"""main_moco_inter_skeleton.py end to end on a few synthetic clips with tiny encoders: every
representation, checkpoints and their numbering, exact resume (epoch boundary and mid-epoch after a
signal), non-finite losses, start-up errors and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import main_moco_inter_skeleton as pretrain
from common.representations import REPRESENTATION_CHOICES
from tests.helpers import PRETRAIN_TINY, error_line, patch_step, pretrain_main, write_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded machine threads fight."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_split(root / "NTU-RGB-D-60-AGCN" / "xview", 12)
    write_split(root / "NTU-RGB-D-60-AGCN" / "xsub", 16, seed=1)
    return root


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("representation", REPRESENTATION_CHOICES)
def test_one_epoch_of_every_representation(data_root, tmp_path, representation):
    metrics = tmp_path / "metrics.json"
    pair = "_and_" in representation
    code = pretrain_main(
        data_root,
        tmp_path / "ckpt",
        representation,
        "--epochs",
        "1",
        "--seed",
        "0",
        "--metrics-json",
        str(metrics),
        *(["--mlp"] if pair else []),
    )
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "ckpt").glob("*.pth.tar"))
    assert files == ["checkpoint_0000.pth.tar", "checkpoint_last.pth.tar"]
    ckpt = load(tmp_path / "ckpt" / "checkpoint_0000.pth.tar")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 0 and ckpt["arch"] == representation
    assert ckpt["args"]["skeleton_representation"] == representation and ckpt["args"]["moco_k"] == 16
    state = ckpt["state_dict"]
    assert all(k.startswith("module.") for k in state)
    assert any(k.startswith("module.encoder_q.") for k in state)
    # 12 clips, batch 4: 3 steps, so every queue pointer moved by 12 (mod 16)
    ptrs = ["module.queue_ptr_S1", "module.queue_ptr_S2"] if pair else ["module.queue_ptr"]
    assert [int(state[p]) for p in ptrs] == [12] * len(ptrs)
    if pair:
        assert "module.encoder_r.fc.0.weight" in state and "module.encoder_l.fc.2.weight" in state
        assert state["module.Queue_S1"].shape == (8, 16)
    else:
        assert not any(k.startswith("module.encoder_r") for k in state)
    import json

    result = json.loads(metrics.read_text())
    assert result["status"] == "completed" and result["steps_per_epoch"] == 3
    accs = ["acc_s1", "acc_s2"] if pair else ["acc_s1"]
    assert sorted(result["final"]) == sorted(["train_loss", *accs])
    assert np.isfinite(result["final"]["train_loss"]) and result["final"]["train_loss"] > 0
    assert all(0.0 <= result["final"][a] <= 100.0 for a in accs)


def test_window_size_sets_the_views_and_the_image_encoder(data_root, tmp_path, capsys):
    """--window-size reaches the dataset (HCN refuses clips of another length) and the encoder built for it;
    evaluating with a different window then fails naming the flag the checkpoint was pretrained with."""
    assert (
        pretrain_main(
            data_root, tmp_path / "ckpt", "image-based", "--epochs", "1", "--seed", "0", "--window-size", "32"
        )
        == 0
    )
    ckpt = load(tmp_path / "ckpt" / "checkpoint_last.pth.tar")
    assert ckpt["args"]["window_size"] == 32
    state = ckpt["state_dict"]
    # conv2 has one output channel per frame of the window; fc sees 4 * 4 * (32 // 16) ** 2 features
    assert state["module.encoder_q.conv2.weight"].shape[0] == 32
    assert state["module.encoder_q.fc.weight"].shape == (8, 64)

    from engine.pretrained import load_pretrained_encoder
    from models import build_encoder

    model = build_encoder("image-based", 60, hcn_out_channels=4)  # the default 64-frame window
    with pytest.raises(ValueError, match=r"conv2\.weight: checkpoint \(32, .*--hcn-out-channels 4 --window-size 32\."):
        load_pretrained_encoder(model, tmp_path / "ckpt" / "checkpoint_last.pth.tar", "image-based", "image-based")
    capsys.readouterr()
    assert (
        pretrain_main(
            data_root,
            tmp_path / "ckpt",
            "image-based",
            "--epochs",
            "2",
            "--resume",
            str(tmp_path / "ckpt" / "checkpoint_last.pth.tar"),
        )
        == 2
    )
    assert re.search(r"pretrained with --window-size 32, not 64: the views would change", error_line(capsys))
    assert pretrain_main(data_root, tmp_path / "short", "seq-based_and_image-based", "--window-size", "8") == 2
    assert re.search(r"--window-size 8: the image-based encoder \(HCN\) needs at least 16", error_line(capsys))


@pytest.mark.parametrize(
    "value, message",
    [("1", "expected at least 2 frames, got 1"), ("3.5", "expected an integer number of frames, got '3.5'")],
)
def test_window_size_must_be_two_frames_or_more(capsys, value, message):
    with pytest.raises(SystemExit):
        pretrain.build_parser().parse_args(["--skeleton-representation", "seq-based", "--window-size", value])
    assert f"--window-size: {message}" in capsys.readouterr().err


def test_checkpoint_numbering_tensorboard_and_workers(data_root, tmp_path):
    out = tmp_path / "ckpt"
    code = pretrain_main(data_root, out, "seq-based_and_image-based", "--epochs", "4", "--save-freq", "2", "-j", "2")
    assert code == 0
    names = sorted(p.name for p in out.iterdir() if p.name.endswith(".pth.tar"))
    assert names == [
        "checkpoint_0000.pth.tar",
        "checkpoint_0002.pth.tar",
        "checkpoint_0003.pth.tar",
        "checkpoint_last.pth.tar",
    ]
    assert not list(out.glob(".*tmp")) and not list(out.glob(".*link"))
    last, final = load(out / "checkpoint_last.pth.tar"), load(out / "checkpoint_0003.pth.tar")
    assert last["epoch"] == final["epoch"] == 4
    assert all(torch.equal(last["state_dict"][k], v) for k, v in final["state_dict"].items())
    assert load(out / "checkpoint_0002.pth.tar")["epoch"] == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(out)).Reload()
    assert {"train_loss", "acc_s1", "acc_s2", "lr"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train_loss")] == [0, 1, 2, 3]


def final_state(out: Path) -> dict:
    ckpt = load(out / "checkpoint_last.pth.tar")
    return {"model": ckpt["state_dict"], "optimizer": ckpt["optimizer"]["state"], "epoch": ckpt["epoch"]}


def assert_same_state(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i in a["optimizer"]:
        assert torch.equal(a["optimizer"][i]["momentum_buffer"], b["optimizer"][i]["momentum_buffer"])


def test_resume_continues_exactly(data_root, tmp_path, monkeypatch):
    # AGCN's BatchNorm (with shuffled key batches) and HCN's dropout (global RNG) must both resume exactly
    rep, common = "graph-based_and_image-based", ["--seed", "3", "--mlp", "--shuffle-bn"]
    assert pretrain_main(data_root, tmp_path / "straight", rep, "--epochs", "2", *common) == 0
    straight = final_state(tmp_path / "straight")

    # one epoch, then a second one resumed from checkpoint_last
    assert pretrain_main(data_root, tmp_path / "split", rep, "--epochs", "1", *common) == 0
    assert (
        pretrain_main(
            data_root,
            tmp_path / "split",
            rep,
            "--epochs",
            "2",
            *common,
            "--resume",
            str(tmp_path / "split" / "checkpoint_last.pth.tar"),
        )
        == 0
    )
    assert_same_state(straight, final_state(tmp_path / "split"))

    # a checkpoint as the reference writes it (epoch, state_dict, optimizer only) resumes too
    first = load(tmp_path / "split" / "checkpoint_0000.pth.tar")
    reference_style = tmp_path / "reference" / "checkpoint_0000.pth.tar"
    reference_style.parent.mkdir()
    torch.save({k: first[k] for k in ("epoch", "state_dict", "optimizer")}, reference_style)
    assert (
        pretrain_main(
            data_root, tmp_path / "reference", rep, "--epochs", "2", *common, "--resume", str(reference_style)
        )
        == 0
    )
    assert load(tmp_path / "reference" / "checkpoint_last.pth.tar")["epoch"] == 2

    # SIGTERM in the middle of epoch 0: checkpoint_last at the step boundary, exit 128 + 15
    calls = patch_step(monkeypatch, 2, signals=(signal.SIGTERM,))
    assert pretrain_main(data_root, tmp_path / "signal", rep, "--epochs", "2", *common) == 128 + signal.SIGTERM
    assert calls["n"] == 2
    saved = load(tmp_path / "signal" / "checkpoint_last.pth.tar")
    assert (saved["epoch"], saved["step"]) == (0, 2) and saved["meters"]["count"] == 8
    assert not list((tmp_path / "signal").glob("checkpoint_0*"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    assert (
        pretrain_main(
            data_root,
            tmp_path / "signal",
            rep,
            "--epochs",
            "2",
            *common,
            "--resume",
            str(tmp_path / "signal" / "checkpoint_last.pth.tar"),
        )
        == 0
    )
    assert_same_state(straight, final_state(tmp_path / "signal"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    # epoch 1, step 2 (3 steps per epoch); not a print step (-p 2: steps 1 and 3)
    calls = patch_step(monkeypatch, 5, poison=True)
    out = tmp_path / "ckpt"
    assert pretrain_main(data_root, out, "image-based", "--epochs", "3") == 1
    message = error_line(capsys)
    assert "non-finite loss" in message and "epoch 1" in message and "checkpoint_last.pth.tar" in message
    assert calls["n"] == 6 and "step 3" in message  # noticed at the next print step
    assert load(out / "checkpoint_last.pth.tar")["epoch"] == 1  # the good one from epoch 0
    assert sorted(p.name for p in out.glob("checkpoint_0*")) == ["checkpoint_0000.pth.tar"]


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--pre-dataset", "ntu60", "--protocol", "cross_setup"], r"has no protocol 'cross_setup'.*ntu60/cross_view"),
        (["--moco-k", "18"], r"--moco-k 18 must be divisible by --batch-size 4"),
        (
            ["--protocol", "cross_subject", "--data-root", "EMPTY"],
            r"train_data_joint.npy not found; make it with: python data_gen/ntu_gendata.py",
        ),
        (["--resume", "MISSING"], r"--resume: checkpoint .*x.pth.tar not found"),
        (["-b", "16"], r"holds 12 clips, fewer than one batch of 16"),
    ],
)
def test_start_up_errors_are_one_line_before_building_models(data_root, tmp_path, monkeypatch, capsys, extra, pattern):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the start-up checks")

    monkeypatch.setattr(pretrain, "build_moco", no_model)
    extra = [
        str(tmp_path / "nothing") if e == "EMPTY" else str(tmp_path / "x.pth.tar") if e == "MISSING" else e
        for e in extra
    ]
    if "-b" in extra:
        extra += ["--moco-k", "16"]
    assert pretrain_main(data_root, tmp_path / "ckpt", "seq-based", *extra) == 2
    message = error_line(capsys)
    assert re.search(pattern, message), message
    assert not (tmp_path / "ckpt").exists()


def test_torchrun_two_processes_gloo(data_root, tmp_path):
    out = tmp_path / "ckpt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(ROOT / "main_moco_inter_skeleton.py"),
        "--skeleton-representation",
        "seq-based_and_graph-based",
        "--data-root",
        str(data_root),
        "--protocol",
        "cross_subject",
        "--checkpoint-path",
        str(out),
        "-b",
        "8",
        "--moco-k",
        "32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--shuffle-bn",
        "--seed",
        "0",
        *PRETRAIN_TINY,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    }
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes" in proc.stdout
    # rank 0 alone prints
    assert len(re.findall(r"^epoch +0 \(1/1\) .*-> checkpoint_0000.pth.tar$", proc.stdout, flags=re.M)) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("events")) == [
        "checkpoint_0000.pth.tar",
        "checkpoint_last.pth.tar",
    ]
    assert len(list(out.glob("events.out.tfevents.*"))) == 1  # one TensorBoard writer
    state = load(out / "checkpoint_last.pth.tar")["state_dict"]
    # 16 clips, global batch 8 (4 per rank): 2 steps, each enqueueing both ranks' keys -> pointer 16
    assert int(state["module.queue_ptr_S1"]) == 16 and int(state["module.queue_ptr_S2"]) == 16
    # the second half of the queues still holds the random unit columns it started with
    assert torch.allclose(state["module.Queue_S1"].norm(dim=0), torch.ones(32), atol=1e-5)
