"""main_moco_inter_skeleton.py end to end on a few synthetic clips with tiny encoders: every
representation, what an epoch records, checkpoints and their numbering, TensorBoard, exact resume at an
epoch boundary, resume refusals, non-finite losses, start-up errors, default folders and a 2-process
torchrun (gloo) run. Stops by signal or kill -9 are in test_run_safety.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import main_moco_inter_skeleton as pretrain
from models import REPRESENTATIONS
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


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_one_epoch_of_every_representation(data_root, tmp_path, monkeypatch, representation):
    """The checkpoint's layout, and the epoch's figures: the averages over every clip of what the steps
    returned."""
    steps = []
    step = pretrain.contrastive_step

    def recording(*args, **kwargs):
        out = step(*args, **kwargs)
        steps.append(out)
        return out

    monkeypatch.setattr(pretrain, "contrastive_step", recording)
    metrics = tmp_path / "metrics.json"
    pair = "_and_" in representation
    mlp = ["--mlp"] if pair else []
    code = pretrain_main(
        data_root, tmp_path / "ckpt", representation, "--epochs", "1", "--metrics-json", str(metrics), *mlp
    )
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "ckpt").glob("*.pth.tar"))
    assert files == ["checkpoint_0000.pth.tar", "checkpoint_last.pth.tar"]
    ckpt = load(tmp_path / "ckpt" / "checkpoint_0000.pth.tar")
    assert ckpt["epoch"] == 1 and ckpt["arch"] == representation and "step" not in ckpt
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
    result = json.loads(metrics.read_text())
    assert len(steps) == 3 and result["status"] == "completed" and result["steps_per_epoch"] == 3
    expected = {"train_loss": np.mean([float(s.loss) for s in steps])}
    for i in range(len(steps[0].logits)):  # top-1 of each (1+K)-way contrast: the positive is column 0
        expected[f"acc_s{i + 1}"] = 100 * np.mean([float((s.logits[i].argmax(1) == 0).float().mean()) for s in steps])
    assert result["final"] == pytest.approx(expected, rel=1e-6, abs=1e-4)
    assert without_seconds(ckpt["history"]) == without_seconds(result["history"])
    assert without_seconds(result["history"]) == [{"epoch": 0, "lr": 0.05, **result["final"]}]
    assert result["args"]["checkpoint_path"] == str(tmp_path / "ckpt") and result["mode"] == "single device"
    origin = result["provenance"]
    assert origin["world_size"] == 1 and origin["device"] == "cpu" and origin["checkpoints"] == {}
    assert list(origin["data"]) == [str(data_root / "NTU-RGB-D-60-AGCN" / "xview")]


def test_window_size_sets_the_views_and_the_image_encoder(data_root, tmp_path, capsys):
    """--window-size reaches the dataset (HCN refuses clips of another length) and the encoder built for it;
    evaluating with a different window then fails naming the flag the checkpoint was pretrained with."""
    assert pretrain_main(data_root, tmp_path / "ckpt", "image-based", "--epochs", "1", "--window-size", "32") == 0
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
    last = tmp_path / "ckpt" / "checkpoint_last.pth.tar"
    assert pretrain_main(data_root, tmp_path / "ckpt", "image-based", "--epochs", "2", "--resume", str(last)) == 2
    assert (
        error_line(capsys)
        == f"--resume {last} was pretrained with --window-size 32 (here 64): pass the run's own options"
    )
    assert pretrain_main(data_root, tmp_path / "short", "seq-based_and_image-based", "--window-size", "8") == 2
    assert re.search(r"--window-size 8: the image-based encoder needs at least 16", error_line(capsys))


@pytest.mark.parametrize(
    "value, message",
    [("1", "expected at least 2 frames, got 1"), ("3.5", "expected an integer number of frames, got '3.5'")],
)
def test_window_size_must_be_two_frames_or_more(capsys, value, message):
    with pytest.raises(SystemExit):
        pretrain.build_parser().parse_args(["--skeleton-representation", "seq-based", "--window-size", value])
    assert f"--window-size: {message}" in capsys.readouterr().err


def tensorboard_steps(folder: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [e.step for e in EventAccumulator(str(folder)).Reload().Scalars("train_loss")]


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
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary, the lock released
    last, final = load(out / "checkpoint_last.pth.tar"), load(out / "checkpoint_0003.pth.tar")
    assert last["epoch"] == final["epoch"] == 4 and [r["epoch"] for r in last["history"]] == [0, 1, 2, 3]
    assert (out / "checkpoint_last.pth.tar").stat().st_ino == (out / "checkpoint_0003.pth.tar").stat().st_ino
    assert load(out / "checkpoint_0002.pth.tar")["epoch"] == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert {"train_loss", "acc_s1", "acc_s2", "lr"} <= set(EventAccumulator(str(out)).Reload().Tags()["scalars"])
    assert len(list(out.glob("events.out.tfevents.*"))) == 1 and tensorboard_steps(out) == [0, 1, 2, 3]
    # Epoch 3 again from checkpoint_0002: TensorBoard shows the new epoch 3 only, not both.
    resume = ["--resume", str(out / "checkpoint_0002.pth.tar")]
    assert pretrain_main(data_root, out, "seq-based_and_image-based", "--epochs", "4", "--save-freq", "2", *resume) == 0
    assert len(list(out.glob("events.out.tfevents.*"))) == 2 and tensorboard_steps(out) == [0, 1, 2, 3]


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


def test_resume_continues_exactly(data_root, tmp_path):
    # AGCN's BatchNorm (with shuffled key batches) and HCN's dropout (global RNG) must both resume exactly
    rep, common = "graph-based_and_image-based", ["--seed", "3", "--mlp", "--shuffle-bn"]
    assert pretrain_main(data_root, tmp_path / "straight", rep, "--epochs", "2", *common) == 0
    straight = final_state(tmp_path / "straight")

    # one epoch, then a second one resumed from checkpoint_last
    split = tmp_path / "split"
    assert pretrain_main(data_root, split, rep, "--epochs", "1", *common) == 0
    resume = ["--resume", str(split / "checkpoint_last.pth.tar"), "--metrics-json", str(tmp_path / "m.json")]
    assert pretrain_main(data_root, split, rep, "--epochs", "2", *common, *resume) == 0
    assert_same_state(straight, final_state(split))
    history = json.loads((tmp_path / "m.json").read_text())["history"]  # both epochs, from two processes
    assert without_seconds(history) == without_seconds(
        load(tmp_path / "straight" / "checkpoint_last.pth.tar")["history"]
    )

    # a checkpoint as the reference writes it (epoch, state_dict, optimizer only) resumes too
    first = load(split / "checkpoint_0000.pth.tar")
    reference_style = tmp_path / "reference" / "checkpoint_0000.pth.tar"
    reference_style.parent.mkdir()
    torch.save({k: first[k] for k in ("epoch", "state_dict", "optimizer")}, reference_style)
    resume = ["--resume", str(reference_style)]
    assert pretrain_main(data_root, tmp_path / "reference", rep, "--epochs", "2", *common, *resume) == 0
    assert load(tmp_path / "reference" / "checkpoint_last.pth.tar")["epoch"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--gru-hidden-size", "16"], "--gru-hidden-size 8 (here 16)"),
        (["--true-bidirectional-gru"], "--true-bidirectional-gru off (here on)"),
        (["--mlp", "--moco-k", "32"], "--moco-k 16 (here 32), --mlp off (here on)"),
        (
            ["--skeleton-representation", "seq-based"],
            "--skeleton-representation seq-based_and_graph-based (here seq-based)",
        ),
    ],
)
def test_resume_with_other_options_is_refused_naming_them(data_root, tmp_path, capsys, extra, message):
    out = tmp_path / "ckpt"
    assert pretrain_main(data_root, out, "seq-based_and_graph-based", "--epochs", "1") == 0
    last = out / "checkpoint_last.pth.tar"
    capsys.readouterr()
    assert (
        pretrain_main(data_root, out, "seq-based_and_graph-based", "--epochs", "2", "--resume", str(last), *extra) == 2
    )
    assert error_line(capsys) == f"--resume {last} was pretrained with {message}: pass the run's own options"


def test_resume_of_a_checkpoint_recording_no_options_names_the_first_key_that_differs(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert pretrain_main(data_root, out, "seq-based", "--epochs", "1") == 0
    reference_style = tmp_path / "reference.pth.tar"
    torch.save(
        {k: load(out / "checkpoint_last.pth.tar")[k] for k in ("epoch", "state_dict", "optimizer")}, reference_style
    )
    capsys.readouterr()
    resume = ["--resume", str(reference_style)]
    assert (
        pretrain_main(data_root, tmp_path / "b", "seq-based", "--epochs", "2", *resume, "--gru-hidden-size", "16") == 2
    )
    assert error_line(capsys) == (
        f"--resume {reference_style} does not fit the model these options build (encoder_q.encoder.gru.weight_ih_l0 is "
        "(24, 150) there, (48, 150) here): pass the representation, encoder sizes, --mlp, --moco-dim and --moco-k "
        "of the run you continue"
    )
    assert not (tmp_path / "b").exists()  # the folder it created is gone again
    assert pretrain_main(data_root, tmp_path / "b", "seq-based", "--epochs", "2", *resume, "--mlp") == 2
    assert "(it has no encoder_q.fc.0.weight)" in error_line(capsys)


def _inf(ckpt: dict) -> None:
    ckpt["state_dict"]["module.encoder_q.fc.weight"][0, 0] = float("inf")


def _mid_epoch(ckpt: dict) -> None:
    ckpt["step"] = 2  # earlier versions also saved in the middle of an epoch, which cannot be continued exactly


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_inf, ": module.encoder_q.fc.weight holds non-finite values (NaN or infinity); the weights are unusable"),
        (_mid_epoch, " was written in the middle of epoch 1: resume from a checkpoint written at the end of an epoch"),
    ],
    ids=["non-finite-weights", "mid-epoch"],
)
def test_resume_of_an_unusable_checkpoint_is_one_line(data_root, tmp_path, capsys, spoil, message):
    out = tmp_path / "ckpt"
    assert pretrain_main(data_root, out, "seq-based", "--epochs", "1") == 0
    ckpt = load(out / "checkpoint_last.pth.tar")
    spoil(ckpt)
    bad = tmp_path / "bad.pth.tar"
    torch.save(ckpt, bad)
    capsys.readouterr()
    assert pretrain_main(data_root, tmp_path / "b", "seq-based", "--epochs", "2", "--resume", str(bad)) == 2
    assert error_line(capsys) == f"--resume {bad}{message}"
    assert not (tmp_path / "b").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    # epoch 1, step 2 (3 steps per epoch); not a print step (-p 2: steps 1 and 3)
    calls = patch_step(monkeypatch, 5, poison=True)
    out, metrics = tmp_path / "ckpt", tmp_path / "m.json"
    assert pretrain_main(data_root, out, "image-based", "--epochs", "3", "--metrics-json", str(metrics)) == 1
    assert error_line(capsys) == (
        f"non-finite loss (nan or inf) at epoch 1, step 3; stopped without saving (the last good checkpoint is "
        f"{out / 'checkpoint_last.pth.tar'}). Try a lower --lr, or run without --amp."
    )
    assert calls["n"] == 6  # noticed at the next print step
    assert load(out / "checkpoint_last.pth.tar")["epoch"] == 1  # the good one from epoch 0
    assert sorted(p.name for p in out.glob("checkpoint_0*")) == ["checkpoint_0000.pth.tar"]
    result = json.loads(metrics.read_text())
    assert result["status"] == "failed" and result["epochs_completed"] == 1 and len(result["history"]) == 1


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
        (["--metrics-json", "TMP"], r"^--metrics-json .* is a folder; give a file name$"),
        (["--metrics-json", "FILE/m.json"], r"^--metrics-json .*/m.json cannot be created: .*FILE is a file$"),
        (["--device", "tpu9"], r"^--device tpu9: expected auto, cpu, cuda or cuda:N$"),
    ],
)
def test_start_up_errors_are_one_line_before_building_models(data_root, tmp_path, monkeypatch, capsys, extra, pattern):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the start-up checks")

    monkeypatch.setattr(pretrain, "build_moco", no_model)
    (tmp_path / "FILE").write_text("")
    places = {"EMPTY": tmp_path / "nothing", "MISSING": tmp_path / "x.pth.tar", "TMP": tmp_path}
    extra = [str(places.get(e, tmp_path / e if e.startswith("FILE") else e)) for e in extra]
    if "-b" in extra:
        extra += ["--moco-k", "16"]
    assert pretrain_main(data_root, tmp_path / "ckpt", "seq-based", *extra) == 2
    message = error_line(capsys)
    assert re.search(pattern, message), message
    assert not (tmp_path / "ckpt").exists()


def test_default_checkpoint_path_is_per_configuration(data_root, tmp_path, monkeypatch):
    """Two configurations run with the default --checkpoint-path do not meet."""
    monkeypatch.chdir(tmp_path)
    for rep in ("seq-based", "graph-based"):
        argv = ["--skeleton-representation", rep, "--data-root", str(data_root), "--protocol", "cross_view"]
        assert pretrain.main([*argv, "-b", "4", "--moco-k", "16", "--epochs", "1", *PRETRAIN_TINY]) == 0
    folders = sorted(
        str(p.parent.relative_to(tmp_path)) for p in tmp_path.glob("checkpoints/*/*/checkpoint_last.pth.tar")
    )
    assert folders == ["checkpoints/ntu60_cross_view/graph-based", "checkpoints/ntu60_cross_view/seq-based"]


def torchrun(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``main_moco_inter_skeleton.py ARGV`` under a 2-process torchrun on the CPU (gloo); must succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += [str(ROOT / "main_moco_inter_skeleton.py"), *argv, "--device", "cpu", "--seed", "0", *PRETRAIN_TINY]
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_two_processes_gloo(data_root, tmp_path):
    out = tmp_path / "ckpt"
    proc = torchrun(
        tmp_path,
        *("--skeleton-representation", "seq-based_and_graph-based", "--data-root", str(data_root)),
        *("--protocol", "cross_subject", "--checkpoint-path", str(out), "-b", "8", "--moco-k", "32"),
        *("--epochs", "1", "--shuffle-bn", "--metrics-json", str(tmp_path / "m.json")),
    )
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
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["provenance"]["world_size"] == 2 and result["steps_per_epoch"] == 2


def test_two_processes_train_what_one_process_trains(data_root, tmp_path):
    """DDP over 2 processes (2 clips each) computes the steps of one process with the whole batch of 4:
    the same clips and views per step, gradients averaged over ranks, every rank's keys in the queue
    (in rank order, so each block of the queue holds the same keys in another order). The BiGRU has no
    BatchNorm, so nothing depends on how the batch is split."""
    flags = ("--epochs", "2", "--seed", "0", "--device", "cpu")
    assert pretrain_main(data_root, tmp_path / "one", "seq-based", *flags) == 0
    torchrun(
        tmp_path,
        *("--skeleton-representation", "seq-based", "--data-root", str(data_root), "--pre-dataset", "ntu60"),
        *("--protocol", "cross_view", "--checkpoint-path", str(tmp_path / "two"), "-b", "4", "--moco-k", "16"),
        *("--epochs", "2"),
    )
    one, two = (load(tmp_path / name / "checkpoint_last.pth.tar") for name in ("one", "two"))
    assert one["epoch"] == two["epoch"] == 2 and one["world_size"] == 1 and two["world_size"] == 2
    a, b = one["state_dict"], two["state_dict"]
    assert a.keys() == b.keys()
    for key in (k for k in a if "queue" not in k):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    assert int(a["module.queue_ptr"]) == int(b["module.queue_ptr"]) == 8  # 2 epochs of 3 steps of 4 keys, mod 16
    for start in range(0, 16, 4):  # each block of 4 keys: the same keys, rank 0's two first
        block_a, block_b = a["module.queue"][:, start : start + 4], b["module.queue"][:, start : start + 4]
        order_a, order_b = block_a[0].argsort(), block_b[0].argsort()
        torch.testing.assert_close(block_b[:, order_b], block_a[:, order_a], rtol=1e-4, atol=1e-5)
    assert without_seconds(one["history"])[-1]["train_loss"] == pytest.approx(
        without_seconds(two["history"])[-1]["train_loss"], rel=1e-5
    )
