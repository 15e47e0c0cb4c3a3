"""What several test modules share, written once: split folders in data_gen's layout and how to read
them back, tiny encoder sizes, checkpoints laid out like the reference's, the scripts' command lines
and their one error line, and the stand-ins for another run (a live lock holder, a killed run's
temporaries).

Helpers only: no tests and no fixtures live here; a test module imports what it uses.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

import action_retrieval
import main_moco_inter_skeleton as pretrain
from data_gen.ntu_gendata import generate
from data_gen.synthetic import write_synthetic_ntu
from models import build_encoder, parse_representation

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------------
# Split folders in data_gen's layout
# ---------------------------------------------------------------------------------------------------

SPLIT_FILES = (
    "train_data_joint.npy",
    "train_label.pkl",
    "train_num_frame.npy",
    "val_data_joint.npy",
    "val_label.pkl",
    "val_num_frame.npy",
)


def make_prepared_root(base: Path, num_classes: int = 4, samples_per_class: int = 6, seed: int = 3) -> Path:
    """Synthetic NTU skeletons prepared by data_gen/ntu_gendata.py: <base>/data/NTU-RGB-D-60-AGCN/{xsub,xview}."""
    raw = base / "raw"
    write_synthetic_ntu(raw, num_classes=num_classes, samples_per_class=samples_per_class, seed=seed)
    generate(raw, base / "data" / "NTU-RGB-D-60-AGCN", None, ("xsub", "xview"), progress=False)
    return base / "data"


def load_part(folder: Path, part: str) -> tuple[np.ndarray, list, list, np.ndarray]:
    """(data, names, labels, frame counts) of one part of a split folder, read as the reference reads them."""
    data = np.load(folder / f"{part}_data_joint.npy")
    with open(folder / f"{part}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return data, names, labels, np.load(folder / f"{part}_num_frame.npy")


CLASSES = (0, 3, 7)  # a few of NTU 60's actions


def write_synthetic_split(
    data_root: Path,
    *,
    folder: str = "NTU-RGB-D-60-AGCN",
    split: str = "xview",
    per_class: dict[str, int] | None = None,
    frames: int = 40,
    seed: int = 0,
) -> dict[str, list]:
    """Clips in data_gen's layout with class-dependent motion; returns the sample names per part."""
    per_class = per_class or {"train": 4, "val": 2}
    rng = np.random.default_rng(seed)
    out = data_root / folder / split
    out.mkdir(parents=True, exist_ok=True)
    base = rng.normal(size=(3, 1, 25, 1)).astype(np.float32)
    names_by_part = {}
    for part, count in per_class.items():
        clips, labels, names, lengths = [], [], [], []
        for cls in CLASSES:
            for i in range(count):
                n = int(rng.integers(frames // 2, frames + 1))
                t = np.arange(frames, dtype=np.float32)[None, :, None, None] / frames
                motion = np.sin(2 * np.pi * (cls + 1) * t + rng.uniform(0, 1)) * (0.3 + 0.1 * cls)
                clip = np.zeros((3, frames, 25, 2), dtype=np.float32)
                clip[..., :1] = base + motion + 0.05 * rng.normal(size=(3, frames, 25, 1))
                clip[:, n:] = 0.0
                clips.append(clip)
                labels.append(cls)
                names.append(f"S001C00{1 + i % 3}P00{i}R001A{cls + 1:03d}_{part}.skeleton")
                lengths.append(n)
        np.save(out / f"{part}_data_joint.npy", np.stack(clips))
        np.save(out / f"{part}_num_frame.npy", np.asarray(lengths, dtype=np.int64))
        with open(out / f"{part}_label.pkl", "wb") as f:
            pickle.dump((names, labels), f)
        names_by_part[part] = names
    return names_by_part


def write_out_of_range_label(data_root: Path, part: str = "val", index: int = 1, label: int = 60) -> tuple[Path, str]:
    """Replace one label of ``part`` by ``label``; returns the label file and that sample's name."""
    path = data_root / "NTU-RGB-D-60-AGCN" / "xview" / f"{part}_label.pkl"
    with open(path, "rb") as f:
        names, labels = pickle.load(f)
    labels = list(labels)
    labels[index] = label
    with open(path, "wb") as f:
        pickle.dump((names, labels), f)
    return path, names[index]


def write_split(folder: Path, num_clips: int, seed: int = 0) -> None:
    """The train part of a pretraining split in data_gen's layout: (N, 3, 300, 25, 2) float32 joints,
    (names, labels) pickle, frame counts."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    frames = rng.integers(40, 301, size=num_clips)
    data = np.zeros((num_clips, 3, 300, 25, 2), dtype=np.float32)
    for i, n in enumerate(frames):
        walk = np.cumsum(rng.normal(0, 0.02, size=(3, n, 25, 2)), axis=1)  # smooth motion
        data[i, :, :n] = walk + rng.normal(0, 0.5, size=(3, 1, 25, 1))
        if i % 2:  # one-person clips leave the second body empty
            data[i, :, :, :, 1] = 0
    np.save(folder / "train_data_joint.npy", data)
    np.save(folder / "train_num_frame.npy", frames.astype(np.int64))
    names = [f"S001C001P001R001A{(i % 60) + 1:03d}.skeleton" for i in range(num_clips)]
    with open(folder / "train_label.pkl", "wb") as f:
        pickle.dump((names, [i % 60 for i in range(num_clips)]), f)


# ---------------------------------------------------------------------------------------------------
# Encoders and checkpoints
# ---------------------------------------------------------------------------------------------------

# Tiny encoders: as keyword arguments of build_encoder, and as the scripts' flags.
TINY = dict(gru_hidden_size=8, gru_layers=1, agcn_base_channels=4, hcn_out_channels=4)
TINY_ARGS = ["--gru-hidden-size", "8", "--gru-layers", "1", "--agcn-base-channels", "4", "--hcn-out-channels", "4"]
MOCO_DIM = 16
QUEUE = 32


def _randomised(representation: str, seed: int, **sizes) -> nn.Module:
    """A tiny encoder whose every tensor (BatchNorm statistics included) is distinct and seed-dependent."""
    encoder = build_encoder(representation, MOCO_DIM, **{**TINY, **sizes})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif "num_batches_tracked" in name:
                tensor.fill_(seed)
    return encoder


def with_mlp_head(encoder: nn.Module) -> nn.Module:
    """The reference's --mlp head: fc -> Sequential(Linear(d, d), ReLU, fc); keys fc.0.* / fc.2.*."""
    d = encoder.fc.in_features
    encoder.fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), encoder.fc)
    return encoder


def reference_checkpoint(
    path,
    pretrain_representation: str,
    mlp: bool = True,
    prefix: str = "module.",
    seed: int = 0,
    extra: dict | None = None,
    **sizes,
) -> dict[str, dict[str, torch.Tensor]]:
    """Write a checkpoint laid out like the reference's MoCo pretraining output (DataParallel keys, key
    encoders, queues, optimizer); return each slot's encoder state (head included) for comparison."""
    representations = parse_representation(pretrain_representation)
    slots = ("encoder_q", "encoder_k", "encoder_r", "encoder_l")[: 2 * len(representations)]
    state: dict[str, torch.Tensor] = {}
    encoders = {}
    for i, slot in enumerate(slots):
        encoder = _randomised(representations[i // 2], seed * 10 + i, **sizes)
        if mlp:
            encoder = with_mlp_head(encoder)
        encoders[slot] = encoder.state_dict()
        state.update({f"{prefix}{slot}.{k}": v for k, v in encoder.state_dict().items()})
    if len(representations) == 1:
        state[f"{prefix}queue"] = torch.randn(MOCO_DIM, QUEUE)
        state[f"{prefix}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    else:
        for s in ("S1", "S2"):
            state[f"{prefix}Queue_{s}"] = torch.randn(MOCO_DIM, QUEUE)
            state[f"{prefix}queue_ptr_{s}"] = torch.zeros(1, dtype=torch.long)
    checkpoint = {
        "epoch": 451,
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]},
    }
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return encoders


# The pretraining checkpoint of :func:`graph_checkpoint`.
GRAPH_PRETRAIN = "graph-based"


def graph_checkpoint(path) -> None:
    """An intra-skeleton graph-based checkpoint in the reference's layout whose BatchNorm running
    statistics are far from any batch's (as after pretraining on other data)."""
    encoder = build_encoder("graph-based", 16, **TINY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buffer in encoder.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) * 2.0 + 0.5)
    state = {f"module.encoder_q.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"epoch": 1, "arch": GRAPH_PRETRAIN, "state_dict": state}, path)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference of ``a`` from ``b``, relative to the largest value of ``b``."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------------------------------------------
# The scripts' command lines
# ---------------------------------------------------------------------------------------------------


def eval_argv(
    data_root: Path,
    *,
    batch: int,
    seed: int | None = None,
    pretrained: Path | None = None,
    pretrain: str | None = None,
    finetune: str | None = None,
) -> list[str]:
    """An evaluation script's flags for a run in this process on ``data_root`` with :data:`TINY_ARGS`
    encoders: the CPU, no DataLoader workers, batches of ``batch``; the seed, the checkpoint and the
    representations (``--pretrain-`` / ``--finetune-skeleton-representation``) when given."""
    argv = ["--data-root", str(data_root), "-b", str(batch), "-j", "0", "--device", "cpu", *TINY_ARGS]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if pretrained is not None:
        argv += ["--pretrained", str(pretrained)]
    if pretrain is not None:
        argv += ["--pretrain-skeleton-representation", pretrain]
    if finetune is not None:
        argv += ["--finetune-skeleton-representation", finetune]
    return argv


def retrieve(argv: list[str]) -> dict:
    """The script's results (what ``--metrics-json`` receives) for a command line."""
    return action_retrieval.run(action_retrieval.build_parser().parse_args(argv))


# Pretraining: tiny encoders and MoCo head, no DataLoader workers, progress every 2 steps.
PRETRAIN_TINY = [
    "--gru-hidden-size",
    "8",
    "--gru-layers",
    "1",
    "--agcn-base-channels",
    "4",
    "--hcn-out-channels",
    "4",
    "--moco-dim",
    "8",
    "-j",
    "0",
    "-p",
    "2",
    "--lr",
    "0.05",
]


def pretrain_main(data_root: Path, out: Path, representation: str, *extra: str) -> int:
    """One tiny pretraining run of ``representation`` (NTU 60 x-view, batch 4, a queue of 16) into ``out``;
    its exit status."""
    argv = [
        "--skeleton-representation",
        representation,
        "--data-root",
        str(data_root),
        "--pre-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--checkpoint-path",
        str(out),
        "-b",
        "4",
        "--moco-k",
        "16",
        *PRETRAIN_TINY,
        *extra,
    ]
    return pretrain.main(argv)


def patch_step(monkeypatch, at: int, *, signals: tuple[int, ...] = (), poison: bool = False) -> dict[str, int]:
    """Wrap the training step: right after its ``at``-th call, send ``signals`` to this process and, with
    ``poison``, make that step's loss nan. Returns the call counter."""
    calls = {"n": 0}
    step = pretrain.contrastive_step

    def wrapped(*args, **kwargs):
        out = step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == at:
            for sig in signals:
                os.kill(os.getpid(), sig)
            if poison:
                out = out._replace(loss=torch.tensor(float("nan")))
        return out

    monkeypatch.setattr(pretrain, "contrastive_step", wrapped)
    return calls


def error_line(capsys, prog: str = "main_moco_inter_skeleton.py") -> str:
    """The script's error, ``PROG: error: MESSAGE``: one line, the last thing on stderr (before it only
    progress bars and warnings); returns the message."""
    prefix = f"{prog}: error: "
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(prefix), lines[-3:]
    assert sum(prefix in line for line in lines) == 1, lines
    return lines[-1][len(prefix) :]


# ---------------------------------------------------------------------------------------------------
# Another run: a live lock holder, a killed run's temporaries
# ---------------------------------------------------------------------------------------------------

_HOLDER = """
import sys
from common.locking import FolderLock
with FolderLock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path, purpose: str) -> Iterator[subprocess.Popen]:
    """Another live process holds ``folder``'s lock (recording ``purpose``) for the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), purpose],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def plant_stray_temporaries(folder: Path, last: str, numbered: str) -> list[Path]:
    """What a killed run leaves: temporaries of ``last`` and ``numbered`` whose writer's PID is gone."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    strays = [folder / f".{name}.tmp-{int(dead.stdout)}-0123abcd" for name in (last, numbered)]
    for path in strays:
        path.write_bytes(b"half a checkpoint")
    return strays


def assert_strays_removed(strays: list[Path], printed: str) -> None:
    """Each stray named on stdout and gone; nothing hidden (lock, temporary) left in their folder."""
    for path in strays:
        assert f"=> removed {path}, a temporary file left by an interrupted run" in printed
        assert not path.exists()
    assert not [p for p in strays[0].parent.iterdir() if p.name.startswith(".")]
