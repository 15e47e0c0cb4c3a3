"""Skeleton representation names, parsed once.

A pretraining run contrasts either two representations of a clip (inter-skeleton contrast, the paper's
method: ``seq-based_and_graph-based`` ...) or two augmented views in one representation (intra-skeleton
contrast, the paper's baseline: ``seq-based`` ...). Everything downstream works with the parsed tuple.
"""

from __future__ import annotations

from common.constants import (
    BASE_REPRESENTATIONS,
    PAIR_REPRESENTATIONS,
    PAIR_SEPARATOR,
    QUERY_ENCODERS,
    REPRESENTATION_CHOICES,
)
from common.io import UsageError

# The name tuples stay importable from here: the scripts and common/{args,pretrained}.py import them so.
__all__ = [
    "BASE_REPRESENTATIONS",
    "PAIR_REPRESENTATIONS",
    "REPRESENTATION_CHOICES",
    "check_base_representation",
    "encoder_name_for",
    "parse_representation",
]


def parse_representation(name: str) -> tuple[str, ...]:
    """``'seq-based_and_graph-based'`` -> ``('seq-based', 'graph-based')``; ``'seq-based'`` -> ``('seq-based',)``.

    Raises ValueError naming the valid choices for anything else.
    """
    if name in BASE_REPRESENTATIONS:
        return (name,)
    if name in PAIR_REPRESENTATIONS:
        first, second = name.split(PAIR_SEPARATOR)
        return (first, second)
    raise UsageError(f"unknown skeleton representation {name!r}; expected one of: {', '.join(REPRESENTATION_CHOICES)}")


def check_base_representation(name: str) -> str:
    """Return ``name`` if it is one of the three base representations, else raise ValueError."""
    if name not in BASE_REPRESENTATIONS:
        raise UsageError(
            f"unknown skeleton representation {name!r}; expected one of: {', '.join(BASE_REPRESENTATIONS)}"
        )
    return name


def encoder_name_for(pretrain_representation: str, representation: str) -> str:
    """Which query encoder of a model pretrained as ``pretrain_representation`` encodes ``representation``.

    For ``A_and_B``, A lives in ``encoder_q`` and B in ``encoder_r``; an intra-skeleton model holds its one
    representation in ``encoder_q``.
    """
    held = parse_representation(pretrain_representation)
    check_base_representation(representation)
    if representation not in held:
        raise UsageError(
            f"a model pretrained as {pretrain_representation!r} holds encoders for "
            f"{' and '.join(held)} only, not {representation!r}"
        )
    return QUERY_ENCODERS[held.index(representation)]
