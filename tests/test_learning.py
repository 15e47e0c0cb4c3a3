"""Pretraining learns, and the same check fails when the method is broken.

A seeded MoCo pretraining of a few seconds on synthetic NTU-format clips (``data_gen.synthetic`` ->
``data_gen.ntu_gendata``, x-sub split), built from the library itself (``moco.build_moco``,
``moco.contrastive_step``, ``feeders.PretrainDataset``), then one learning signal: the KNN top-1
(k = 1, cosine, features before ``fc``) of held-out subjects' clips against the training clips, for the
query encoder and for its momentum (key) encoder, each compared with the same network at its random
initialisation. The method has learned when BOTH beat their random init by at least ``MARGIN`` points.

Why both encoders: with the momentum update skipped, the key encoder stays at its random init while the
query encoder still gains (it distils the frozen random key encoder, which on this data alone lifts its
KNN by 15-20 points), so only the key encoder's figure exposes that break. A shuffled positive key (each
query paired with another clip's key) leaves both within a few points of random init. The contrastive
accuracy of training is no such signal at these sizes: in the demo's smallest setting it climbs from
chance (6 %) to 25-75 % within 40 steps with the positive key shuffled too, because the current batch's
keys stand out from the queue's older ones whichever key is called positive.

Why these settings: intra-skeleton contrast of the sequence encoder (a small BiGRU) because it is the
one encoder cheap enough for a few hundred steps on 2 CPU cores (the graph encoder at its smallest width
costs ~30x the BiGRU's 2.7 ms per forward+backward of 16 clips of 16 frames on a 2-core AMD EPYC CPU,
torch 2.13.0+cpu), and cross-representation alignment needs far more steps at these sizes. Views are
crop-resize only (``spatial_augment="none"``): with the paper's shear and joint corruption the loss
stays near chance for the first thousand steps on synthetic data. Adam instead of the paper's SGD reaches
a clear margin within 150 steps; the optimiser is not what this test is about.

Measured with these settings (150 steps, 60 training and 60 held-out clips, 10 classes; KNN top-1 %,
random init -> after): intact, seeds 0-4: query +15 to +22, key +15 to +20; momentum update skipped:
query +15 to +23, key +0; positive key shuffled: query -5 to +12, key +2 to +7 (the smaller of the
two <= +3.3). One held-out clip is 1.7 points. The module takes ~10 s on that CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import moco.functional
from data_gen import ntu_gendata
from data_gen.synthetic import write_synthetic_ntu
from engine.knn import knn_accuracy
from feeders.datasets import DownstreamDataset, PretrainDataset, split_paths
from moco import build_moco, contrastive_step

REPRESENTATION = "seq-based"
WINDOW = 16
STEPS = 150
BATCH = 32
SEED = 0
MARGIN = 10.0  # KNN top-1 points over random init that both encoders must gain


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """10 classes x 12 synthetic clips, prepared by data_gen: x-sub gives 60 training, 60 held-out clips."""
    work = tmp_path_factory.mktemp("learning")
    write_synthetic_ntu(work / "raw", num_classes=10, samples_per_class=12, seed=SEED)
    rc = ntu_gendata.main(
        [
            "--data-path",
            str(work / "raw"),
            "--dataset",
            "ntu60",
            "--benchmarks",
            "xsub",
            "--out-folder",
            str(work / "data" / "NTU-RGB-D-60-AGCN"),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    return work / "data"


def _clips(data_root: Path, part: str) -> tuple[torch.Tensor, np.ndarray]:
    dataset = DownstreamDataset(
        split_paths(data_root, "ntu60", "cross_subject", part), REPRESENTATION, train=False, input_size=WINDOW
    )
    views = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])
    return views, np.asarray(dataset.labels)


@torch.no_grad()
def _knn_top1(
    encoder: torch.nn.Module, gallery: tuple[torch.Tensor, np.ndarray], held_out: tuple[torch.Tensor, np.ndarray]
) -> float:
    was_training = encoder.training
    encoder.eval()
    accuracy, _ = knn_accuracy(
        encoder(gallery[0], knn_eval=True), gallery[1], encoder(held_out[0], knn_eval=True), held_out[1], k=1
    )
    encoder.train(was_training)
    return 100.0 * accuracy


def pretrain_margins(data_root: Path) -> dict[str, float]:
    """KNN top-1 gain (points) over random init of the query and the key encoder after STEPS steps."""
    torch.manual_seed(SEED)
    model = build_moco(
        REPRESENTATION, dim=16, K=64, m=0.99, T=0.1, gru_hidden_size=32, gru_layers=1, window_size=WINDOW
    )
    gallery, held_out = _clips(data_root, "train"), _clips(data_root, "val")
    before = _knn_top1(model.encoder_q, gallery, held_out)  # the key encoder starts as an exact copy
    dataset = PretrainDataset(
        split_paths(data_root, "ntu60", "cross_subject", "train"),
        REPRESENTATION,
        input_size=WINDOW,
        seed=SEED,
        spatial_augment="none",
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(SEED)
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    step, epoch = 0, 0
    while step < STEPS:
        dataset.set_epoch(epoch)
        for views in loader:
            contrastive_step(model, model, views, optimizer)
            step += 1
            if step == STEPS:
                break
        epoch += 1
    return {
        "query": _knn_top1(model.encoder_q, gallery, held_out) - before,
        "key": _knn_top1(model.encoder_k, gallery, held_out) - before,
    }


def assert_learned(margins: dict[str, float]) -> None:
    """The learning signal: both encoders gain at least MARGIN points of KNN top-1 over random init."""
    for encoder, gain in margins.items():
        assert gain >= MARGIN, (
            f"{encoder} encoder: KNN top-1 {gain:+.1f} points over random init, expected >= {MARGIN:+.1f}"
        )


def _replace_everywhere(monkeypatch: pytest.MonkeyPatch, name: str, make: Callable[[Callable], Callable]) -> None:
    """Swap ``moco.functional.<name>`` in every ``moco`` module that holds it (imported by name or not),
    so the break reaches the step however the package wires its pure functions."""
    original = getattr(moco.functional, name)
    replacement = make(original)
    patched = 0
    for module_name, module in list(sys.modules.items()):
        if (module_name == "moco" or module_name.startswith("moco.")) and getattr(module, name, None) is original:
            monkeypatch.setattr(module, name, replacement)
            patched += 1
    assert patched, f"no moco module holds {name}"


def _shuffled_positive(original: Callable) -> Callable:
    def info_nce_logits(query, positive, queue, temperature):
        return original(query, positive.roll(1, dims=0), queue, temperature)  # another clip's key

    return info_nce_logits


def _skipped_update(original: Callable) -> Callable:
    def momentum_update(key_params, query_params, m):
        return None

    return momentum_update


def test_pretraining_learns(data_root):
    assert_learned(pretrain_margins(data_root))


@pytest.mark.parametrize(
    "name,make",
    [("info_nce_logits", _shuffled_positive), ("momentum_update", _skipped_update)],
    ids=["positive-key-shuffled", "momentum-update-skipped"],
)
def test_the_signal_vanishes_when_the_method_is_broken(data_root, monkeypatch, name, make):
    _replace_everywhere(monkeypatch, name, make)
    with pytest.raises(AssertionError, match="over random init"):
        assert_learned(pretrain_margins(data_root))
