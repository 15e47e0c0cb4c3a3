"""Shared utilities: representation parsing, schedules, atomic writes, RNG capture."""

import errno
import io
import json
import os
import random
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import common.io as cio
from common.io import (
    OutputError,
    UsageError,
    atomic_copy,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write,
    clean_stale_temporaries,
    pid_alive,
    write_json_atomic,
)
from engine.plots import plot_confusion_matrix
from engine.training import (
    capture_rng_state,
    correct_counts,
    learning_rate_at,
    restore_rng_state,
    select_device,
)
from moco.builder import query_slot
from models import parse_representation


def test_parse_representation_pairs_and_singles():
    assert parse_representation("seq-based_and_graph-based") == ("seq-based", "graph-based")
    assert parse_representation("graph-based_and_image-based") == ("graph-based", "image-based")
    assert parse_representation("image-based") == ("image-based",)
    with pytest.raises(ValueError, match="seq-based_and_graph-based"):
        parse_representation("graph-based_and_seq-based")


def test_query_slot():
    assert query_slot("seq-based_and_graph-based", "seq-based") == "encoder_q"
    assert query_slot("seq-based_and_graph-based", "graph-based") == "encoder_r"
    assert query_slot("graph-based", "graph-based") == "encoder_q"
    with pytest.raises(ValueError, match="holds encoders for seq-based and graph-based only"):
        query_slot("seq-based_and_graph-based", "image-based")


def test_learning_rate_schedules():
    assert learning_rate_at(0, 0.01, 451, [351], cos=False) == pytest.approx(0.01)
    assert learning_rate_at(350, 0.01, 451, [351], cos=False) == pytest.approx(0.01)
    assert learning_rate_at(351, 0.01, 451, [351], cos=False) == pytest.approx(0.001)
    assert learning_rate_at(75, 0.1, 80, [50, 70], cos=False) == pytest.approx(0.001)
    assert learning_rate_at(50, 1.0, 100, [], cos=True) == pytest.approx(0.5)


def test_correct_counts_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 1, 0])
    assert correct_counts(logits, target, (1, 2, 5)).tolist() == [1, 2, 3]  # k beyond the classes: all of them


def test_atomic_writes_leave_no_partial_file(tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    atomic_torch_save({"a": torch.arange(3)}, path)
    assert torch.load(path, weights_only=True)["a"].tolist() == [0, 1, 2]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    # the old checkpoint survives and no temporary file is left behind
    assert torch.load(path, weights_only=True)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth.tar"]

    write_json_atomic(tmp_path / "m.json", {"top1": np.float32(0.5), "k": np.int64(3)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"k": 3, "top1": 0.5}


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    atomic_torch_save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.fixture
def umask():
    """Set the process umask for one test and put the previous one back."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    written = [
        atomic_torch_save({"a": torch.zeros(2)}, tmp_path / "c.pth.tar"),
        write_json_atomic(tmp_path / "m.json", {"a": 1}),
        atomic_save_npz(tmp_path / "f.npz", x=np.arange(3)),
        atomic_copy(tmp_path / "m.json", tmp_path / "copy.json"),
        plot_confusion_matrix(np.array([[2, 0], [1, 1]]), ["a", "b"], tmp_path / "plots" / "confusion.png"),
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert np.load(tmp_path / "f.npz")["x"].tolist() == [0, 1, 2]
    assert json.loads((tmp_path / "copy.json").read_text()) == {"a": 1}
    assert (tmp_path / "plots" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png"]  # no temporary left


class FillsUp(io.RawIOBase):
    """A file on a device with ``room`` bytes left: the write that crosses it fails with ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


def test_disk_full_is_one_line_naming_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pth.tar"
    atomic_torch_save({"epoch": 1, "w": torch.arange(4)}, path)
    before = path.read_bytes()
    opener = cio._open_temp
    monkeypatch.setattr(
        cio, "_open_temp", lambda folder, name: (lambda f, tmp: (FillsUp(f, 3000), tmp))(*opener(folder, name))
    )
    big = {"epoch": 2, "w": torch.zeros(10_000)}
    for write in (
        lambda: atomic_torch_save(big, path),
        lambda: write_json_atomic(path, list(range(2000))),
        lambda: atomic_save_npz(path, x=np.zeros(10_000)),
    ):
        with pytest.raises(OutputError) as err:
            write()
        message = str(err.value)
        assert message == (
            f"cannot write {path}: no space left on device (or the disk quota is reached); "
            "the previous file, if any, is unchanged"
        )
        assert isinstance(err.value, UsageError) and isinstance(err.value, ValueError)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pth.tar"]


def test_unwritable_folder_and_file_in_the_way(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"^output folder .*file is a file, not a folder$"):
        write_json_atomic(tmp_path / "file" / "m.json", {})
    with pytest.raises(OutputError, match=r"^output folder .*/sub cannot be created: a part of its path is a file$"):
        write_json_atomic(tmp_path / "file" / "sub" / "m.json", {})

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cio, "_open_temp", denied)
    with pytest.raises(OutputError, match=r"^cannot write .*m\.json: permission denied; the previous file"):
        write_json_atomic(tmp_path / "m.json", {})


def test_interrupted_write_leaves_no_temporary(tmp_path):
    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.bin", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_copy_links_and_replaces(tmp_path):
    source = write_json_atomic(tmp_path / "checkpoint_0003.json", {"epoch": 4})
    (tmp_path / "last.json").write_text("old")
    atomic_copy(source, tmp_path / "last.json")
    assert (tmp_path / "last.json").read_text() == source.read_text()
    assert os.path.samefile(source, tmp_path / "last.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_0003.json", "last.json"]


def test_clean_stale_temporaries_removes_only_dead_writers_files(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    names = {
        f".checkpoint_last.pth.tar.tmp-{dead_pid}-0a1b2c3d": True,  # killed run
        ".checkpoint_last.pth.tar.tmp-0-0a1b2c3d": True,  # no process has PID 0
        f".checkpoint_last.pth.tar.tmp-{10**20}-0a1b2c3d": True,  # beyond any PID
        ".checkpoint_last.pth.tar.k2j_8x9q.tmp": False,  # not this project's temporary name
        f".metrics.json.tmp-{os.getpid()}-deadbeef": False,  # a live writer (this process)
        "checkpoint_0001.pth.tar": False,
        "notes.tmp": False,
        ".hidden": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, stale in names.items() if not stale)
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_pid_alive():
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    assert pid_alive(os.getpid()) and pid_alive(os.getppid())
    assert not pid_alive(int(dead.stdout))
    # 0 and negative numbers name process groups for os.kill, not processes
    assert not pid_alive(0) and not pid_alive(-1) and not pid_alive(10**20)


def test_temporary_names_are_recognised():
    name = cio.temp_name("checkpoint_last.pth.tar")
    match = cio.TEMP_RE.match(name)
    assert match and match["name"] == "checkpoint_last.pth.tar" and int(match["pid"]) == os.getpid()


def test_select_device_raises_usage_error_not_system_exit():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^--device tpu9: expected auto, cpu, cuda or cuda:N$"):
        select_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA was asked for but torch sees no GPU"):
            select_device("cuda")


def test_wrap_model_single_process_and_under_a_process_group(tmp_path):
    from torch import nn

    import engine.launch as cd

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ctx = cd.DistContext(device=torch.device("cpu"))
    wrapped = cd.wrap_model(model, ctx, trainable=True, requested_device="cpu")
    assert wrapped is model and cd.unwrap(wrapped) is model
    assert cd.parallel_mode(wrapped, ctx) == "single device"

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = cd.DistContext(device=torch.device("cpu"))
        ddp = cd.wrap_model(model, ctx, trainable=True, broadcast_buffers=False)
        assert isinstance(ddp, nn.parallel.DistributedDataParallel)
        assert not getattr(ddp, "forward_sync_buffers", ddp.broadcast_buffers)
        assert cd.unwrap(ddp) is model
        assert cd.parallel_mode(ddp, ctx) == "DistributedDataParallel over 1 processes"
        assert cd.wrap_model(model, ctx, trainable=False) is model  # inference needs no wrapper
        default = cd.wrap_model(model, ctx, trainable=True)
        assert getattr(default, "forward_sync_buffers", default.broadcast_buffers) in (True, None)
    finally:
        torch.distributed.destroy_process_group()


def test_setup_rejects_devices_with_usage_error(monkeypatch):
    import engine.launch as cd

    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=r"^--device cuda:1: under torchrun each process takes cuda:LOCAL_RANK"):
        cd.setup("cuda:1")


def test_the_batch_must_split_evenly_over_the_processes(monkeypatch):
    import engine.launch as cd

    assert cd.batch_world_size(7) == 1  # outside torchrun
    for name, value in {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    assert cd.batch_world_size(6) == 3
    with pytest.raises(UsageError, match=r"^--batch-size 8 must be divisible by the 3 processes$"):
        cd.batch_world_size(8)


@pytest.mark.parametrize(
    "type_name, text, message",
    [
        ("positive_int", "0", "expected a positive integer, got 0"),
        ("positive_int", "2.5", "expected an integer, got '2.5'"),
        ("nonnegative_int", "-1", "expected an integer >= 0, got -1"),
        ("positive_float", "-1", "expected a positive number, got -1"),
        ("positive_float", "0", "expected a positive number, got 0"),
        ("positive_float", "nan", "expected a finite number, got 'nan'"),
        ("positive_float", "x", "expected a number, got 'x'"),
        ("nonnegative_float", "-0.1", "expected a number >= 0, got -0.1"),
        ("fraction", "0", "expected a fraction in (0, 1], got 0"),
        ("fraction", "1.5", "expected a fraction in (0, 1], got 1.5"),
        ("momentum_value", "1", "expected a momentum in [0, 1), got 1"),
        ("momentum_value", "-0.5", "expected a momentum in [0, 1), got -0.5"),
    ],
)
def test_argument_types_name_the_value(type_name, text, message):
    import argparse

    import engine.args as ca

    with pytest.raises(argparse.ArgumentTypeError) as err:
        getattr(ca, type_name)(text)
    assert str(err.value) == message


def test_argument_types_accept_the_edges():
    import engine.args as ca

    assert (ca.positive_int("1"), ca.nonnegative_int("0"), ca.positive_float("1e-9")) == (1, 0, 1e-9)
    assert (ca.nonnegative_float("0"), ca.fraction("1"), ca.momentum_value("0"), ca.momentum_value("0.999")) == (
        0.0,
        1.0,
        0.0,
        0.999,
    )
