"""The encoders, one per skeleton representation, and the registry that is the one list of them.

Each entry of ``ENCODERS`` says how the encoder is built, which view of a clip it reads (``feeders.views``:
``"sequence"``, (T, 150) frame vectors; ``"clip"``, the (3, T, 25, 2) clip itself), its size options
(each one a flag of every command, ``--gru-hidden-size`` ..., recorded in checkpoints) and the shortest
window it takes. A pretraining run contrasts a pair ``A_and_B`` of them (inter-skeleton contrast; A's
query encoder is ``encoder_q``, B's ``encoder_r``) or one alone (intra-skeleton contrast). To add an
encoder: its module in this folder and one entry below.

Every encoder ends in ``fc`` (nn.Linear); MoCo's MLP head replaces it by
``nn.Sequential(Linear(d, d), ReLU(), fc)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from common.constants import VALUES_PER_FRAME, WINDOW_SIZE
from common.io import UsageError
from models.agcn import AGCN
from models.bigru import BIGRU
from models.hcn import HCN, MIN_WINDOW_SIZE


class Encoder(NamedTuple):
    build: Callable[..., nn.Module]  # build(num_class, window_size, **options) -> the encoder
    view: str  # what feeders.views makes of a clip for it: "sequence" or "clip"
    options: dict[str, tuple[Any, str]]  # option -> (default, help); a bool default is an on/off flag
    min_window: int = 2  # frames


def _bigru(num_class: int, window_size: int, gru_hidden_size: int, gru_layers: int, true_bidirectional_gru: bool):
    mode = "true" if true_bidirectional_gru else "reference"
    return BIGRU(VALUES_PER_FRAME, gru_hidden_size, gru_layers, num_class, bidirectional_mode=mode)


ENCODERS: dict[str, Encoder] = {
    "seq-based": Encoder(
        _bigru,
        "sequence",
        {
            "gru_hidden_size": (1024, "BiGRU hidden size"),
            "gru_layers": (3, "BiGRU layers"),
            "true_bidirectional_gru": (False, "a genuine BiGRU, not the reference's function"),
        },
    ),
    "graph-based": Encoder(
        lambda num_class, window_size, agcn_base_channels: AGCN(num_class=num_class, base_channels=agcn_base_channels),
        "clip",
        {"agcn_base_channels": (64, "AGCN width of the first units")},
    ),
    "image-based": Encoder(
        lambda num_class, window_size, hcn_out_channels: HCN(
            out_channel=hcn_out_channels, window_size=window_size, num_class=num_class
        ),
        "clip",
        {"hcn_out_channels": (64, "HCN base channels")},
        min_window=MIN_WINDOW_SIZE,
    ),
}
PAIR_SEPARATOR = "_and_"
PAIRS: tuple[str, ...] = tuple(a + PAIR_SEPARATOR + b for a, b in itertools.combinations(ENCODERS, 2))
REPRESENTATIONS: tuple[str, ...] = PAIRS + tuple(ENCODERS)  # what --skeleton-representation takes
OPTIONS: dict[str, tuple[Any, str]] = {name: o for e in ENCODERS.values() for name, o in e.options.items()}


def parse_representation(name: str) -> tuple[str, ...]:
    """'seq-based_and_graph-based' -> ('seq-based', 'graph-based'); 'image-based' -> ('image-based',)."""
    if name not in REPRESENTATIONS:
        raise UsageError(f"unknown skeleton representation {name!r}; expected one of: {', '.join(REPRESENTATIONS)}")
    return tuple(name.split(PAIR_SEPARATOR))


def build_encoder(representation: str, num_class: int, *, window_size: int = WINDOW_SIZE, **options: Any) -> nn.Module:
    """The encoder of one representation, initialised as the reference does. ``options``: the size
    options of any encoder (each takes its own; missing ones take their defaults)."""
    if representation not in ENCODERS:
        raise UsageError(f"unknown representation {representation!r}; expected one of: {', '.join(ENCODERS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"build_encoder got unknown options {unknown}; the encoders take {sorted(OPTIONS)}")
    spec = ENCODERS[representation]
    own = {name: options.get(name, default) for name, (default, _) in spec.options.items()}
    return spec.build(num_class, window_size, **own)
