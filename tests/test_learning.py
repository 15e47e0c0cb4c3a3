"""Pretraining learns, and the same checks fail when the method is broken.

Seeded MoCo pretrainings of a few seconds on synthetic NTU-format clips (``data_gen.synthetic`` ->
``data_gen.ntu_gendata``, x-sub split: 60 training and 60 held-out clips of 10 classes, one fixture),
built from the library itself (``moco.builder.build_moco``, ``moco.step.contrastive_step``,
``feeders.datasets.PretrainDataset``), each judged by one learning signal on the held-out clips.

Intra-skeleton contrast (one representation): the KNN top-1 (k = 1, cosine, features before ``fc``) of
held-out subjects' clips against the training clips, for the query encoder and for its momentum (key)
encoder, each compared with the same network at its random initialisation. The method has learned when
BOTH beat their random init by at least ``MARGIN`` points.

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
torch 2.13.0+cpu). Views are crop-resize only (``spatial_augment="none"``): with the paper's shear and
joint corruption the loss stays near chance for the first thousand steps on synthetic data. Adam instead
of the paper's SGD reaches a clear margin within 150 steps; the optimiser is not what this test is about.

Measured with these settings (150 steps; KNN top-1 %, random init -> after): intact, seeds 0-4: query
+15 to +22, key +15 to +20; momentum update skipped: query +15 to +23, key +0; positive key shuffled:
query -5 to +12, key +2 to +7 (the smaller of the two <= +3.3). One held-out clip is 1.7 points.

Inter-skeleton contrast (the paper's method; S1 seq-based, S2 image-based): cross-representation
retrieval. Each held-out clip's centre crop is embedded in S1 by the query encoder f_q and in S2 by the
key encoder f_l (and in S2 by f_r, in S1 by f_k), after ``fc``, where the loss compares them; a clip is
found when its own key is among the ``TOP`` = 5 nearest (cosine) of the 60 clips' keys, chance 8.3 %.
Both q -> l and r -> k must find at least ``ALIGNED`` = 25 % of the clips (15). Only inter-skeleton
contrast asks for this: contrasted with itself, each representation learns a space of its own,
unrelated to the other's. So the signal must vanish with intra-skeleton pairs (the same model with q
paired with k and r with l, each queue holding its pairing's keys) and with the positive key shuffled.
A skipped momentum update is no break of this signal: each query encoder then distils the other
representation's frozen random key encoder (top-1 r -> k 15-23 % for seeds 0-2); the intra-skeleton
test's key encoder figure catches it. Top-5 rather than top-1: at these sizes top-1 moves by several
clips from one step to the next (seed 7, q -> l: 15 % after 150 steps, 5 % after 200), while top-5 of
seeds 0-9 stays within 30.0-66.7 % from step 175 to 200.

Why these settings: image-based as S2 because the graph encoder at its smallest width (4 channels) makes
a step of 16 clips cost 130-140 ms against 30-39 ms with the image encoder (CPU time of one thread on
that CPU), and the alignment needs ~200 steps (the worst top-5 of seeds 0-9 is 21.7 % after 150 steps,
30.0 % after 175, 38.3 % after 200). Image encoder width 16: width 8 costs as much per step and aligned
less (top-1 8.3-15 % against 11.7-20 % after 150 steps of 32 clips, 16 dimensions, seeds 0-1). Batch
16: half the cost of a step of 32, and 200 steps of 16 align as well as 150 of 32 (top-1 13.3-23.3 %
against 11.7-21.7 %, seeds 0-2). Embeddings of 32 dimensions; the rest
as for the intra-skeleton test.

Measured with these settings (200 steps; top-5 % of the 60 held-out clips, q -> l / r -> k), seeds
0-9: random init 0-15.0 / 1.7-10.0; intact 48.3-66.7 / 38.3-60.0 (seed 0: 63.3 / 51.7; top-1 5.0-26.7
/ 6.7-18.3); intra-skeleton pairs 0-16.7 / 6.7-11.7; positive key shuffled 3.3-16.7 / 8.3-10.0. One
inter-skeleton pretraining takes 6-11 s of CPU time on that CPU (one thread, as the suite runs), the
three inter-skeleton tests 20-25 s and the whole module 34-40 s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import moco.functional
from data_gen import ntu_gendata
from data_gen.synthetic import write_synthetic_ntu
from engine.knn import knn_accuracy
from feeders.datasets import DownstreamDataset, PretrainDataset, split_paths
from moco.builder import MoCo, build_moco
from moco.step import contrastive_step
from models import ENCODERS

REPRESENTATION = "seq-based"
WINDOW = 16
STEPS = 150
BATCH = 32
SEED = 0
MARGIN = 10.0  # KNN top-1 points over random init that both encoders must gain

INTER = ("seq-based", "image-based")  # S1, S2
INTER_STEPS = 200
INTER_BATCH = 16
TOP = 5
ALIGNED = 25.0  # cross-representation top-5 (%) of the 60 held-out clips: 15 clips, 3x chance


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


def _clips(data_root: Path, part: str, representation: str = REPRESENTATION) -> tuple[torch.Tensor, np.ndarray]:
    """Every clip of ``part``, centre-cropped to WINDOW frames, in ``representation``; and the labels."""
    dataset = DownstreamDataset(
        split_paths(data_root, "ntu60", "cross_subject", part),
        ENCODERS[representation].view,
        train=False,
        input_size=WINDOW,
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


def _pretrain(model: MoCo, data_root: Path, representations: tuple[str, ...], steps: int, batch: int) -> MoCo:
    """``steps`` seeded MoCo steps of ``model`` on the training clips: crop-resize views, Adam."""
    dataset = PretrainDataset(
        split_paths(data_root, "ntu60", "cross_subject", "train"),
        [ENCODERS[r].view for r in representations],
        input_size=WINDOW,
        seed=SEED,
        spatial_augment="none",
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(SEED)
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    step, epoch = 0, 0
    while step < steps:
        dataset.set_epoch(epoch)
        for views in loader:
            contrastive_step(model, model, views, optimizer)
            step += 1
            if step == steps:
                break
        epoch += 1
    return model


def pretrain_margins(data_root: Path) -> dict[str, float]:
    """KNN top-1 gain (points) over random init of the query and the key encoder after STEPS steps."""
    torch.manual_seed(SEED)
    model = build_moco(
        REPRESENTATION, dim=16, K=64, m=0.99, T=0.1, gru_hidden_size=32, gru_layers=1, window_size=WINDOW
    )
    gallery, held_out = _clips(data_root, "train"), _clips(data_root, "val")
    before = _knn_top1(model.encoder_q, gallery, held_out)  # the key encoder starts as an exact copy
    _pretrain(model, data_root, (REPRESENTATION,), STEPS, BATCH)
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


@torch.no_grad()
def _embed(encoder: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """(N, dim) unit embeddings (after ``fc``: the space where queries meet keys), in eval mode."""
    was_training = encoder.training
    encoder.eval()
    embeddings = F.normalize(encoder(views), dim=1)
    encoder.train(was_training)
    return embeddings


def _cross_retrieval(queries: torch.Tensor, keys: torch.Tensor) -> float:
    """% of clips whose own key (row i of ``keys`` for query i) is among the TOP nearest (cosine) of all
    N clips' keys; chance is 100 * TOP / N. A tie counts against the own key, so embeddings that have
    collapsed onto one point find nothing."""
    similarity = queries @ keys.T  # (N, N)
    own = similarity.diagonal().unsqueeze(1)  # (N, 1)
    others_as_near = (similarity >= own).sum(dim=1) - 1  # the own key is counted once
    hits = int((others_as_near < TOP).sum())
    return 100.0 * hits / len(queries)


def inter_retrieval(data_root: Path) -> dict[str, float]:
    """Cross-representation retrieval top-5 (%) of the held-out clips after INTER_STEPS steps of
    inter-skeleton pretraining: each clip's S1 query (f_q) against every clip's S2 key (f_l), and its
    S2 query (f_r) against every S1 key (f_k)."""
    torch.manual_seed(SEED)
    model = build_moco(
        "_and_".join(INTER),
        dim=32,
        K=64,
        m=0.99,
        T=0.1,
        gru_hidden_size=32,
        gru_layers=1,
        hcn_out_channels=16,
        window_size=WINDOW,
    )
    _pretrain(model, data_root, INTER, INTER_STEPS, INTER_BATCH)
    s1, s2 = (_clips(data_root, "val", representation)[0] for representation in INTER)
    return {
        "q->l": _cross_retrieval(_embed(model.encoder_q, s1), _embed(model.encoder_l, s2)),
        "r->k": _cross_retrieval(_embed(model.encoder_r, s2), _embed(model.encoder_k, s1)),
    }


def assert_aligned(top5: dict[str, float]) -> None:
    """The signal only inter-skeleton contrast gives: every query encoder finds the other
    representation's key of the same held-out clip among its TOP nearest at least ALIGNED % of the time."""
    for pair, value in top5.items():
        assert value >= ALIGNED, f"{pair}: cross-representation top-{TOP} {value:.1f} %, expected >= {ALIGNED:.1f} %"


def _intra_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pair each query with the key of its own representation: handed the keys as (l, k), the loss is
    InfoNCE(q, k, Queue_S2) + InfoNCE(r, l, Queue_S1) and k is queued into Queue_S2, l into Queue_S1, so
    each queue holds the negatives of its new pairing. That is intra-skeleton contrast of both
    representations, side by side in the one model."""
    original = MoCo.forward

    def forward(self: MoCo, *views: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        queries, (k, l) = original(self, *views)
        return queries, (l, k)

    monkeypatch.setattr(MoCo, "forward", forward)


def _positive_shuffled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each query's positive is another clip's key of the other representation."""
    _replace_everywhere(monkeypatch, "info_nce_logits", _shuffled_positive)


def test_inter_skeleton_pretraining_aligns_the_representations(data_root):
    assert_aligned(inter_retrieval(data_root))


@pytest.mark.parametrize(
    "break_method", [_intra_pairs, _positive_shuffled], ids=["intra-skeleton-pairs", "positive-key-shuffled"]
)
def test_the_alignment_vanishes_without_inter_skeleton_pairs(data_root, monkeypatch, break_method):
    break_method(monkeypatch)
    for pair, value in inter_retrieval(data_root).items():  # each query encoder on its own
        with pytest.raises(AssertionError, match="cross-representation"):
            assert_aligned({pair: value})
