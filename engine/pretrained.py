"""Loading pretrained encoders from MoCo checkpoints: ours and the reference's released files.

A pretraining checkpoint is a dict with ``state_dict`` whose keys are those of a (usually DataParallel
wrapped) MoCo model: ``module.encoder_q.*``, ``module.encoder_k.*`` and, for inter-skeleton pairs,
``module.encoder_r.*`` / ``module.encoder_l.*``, plus queue buffers. Downstream evaluation needs one query
encoder (``encoder_q`` or ``encoder_r``, see :func:`common.representations.encoder_name_for`) without its
projection head (``fc.*``, or ``fc.0.*`` / ``fc.2.*`` with the MLP head). Everything else must match the
downstream encoder exactly: a partial load would silently evaluate a half-random network.

Reading the file (``torch.load(weights_only=True)``, errors naming it) is :mod:`engine.checkpoints`'.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from common.constants import BASE_REPRESENTATIONS, ENCODER_SLOTS, QUERY_ENCODERS
from common.io import UsageError
from common.representations import encoder_name_for, parse_representation
from engine.checkpoints import model_state, read_checkpoint, recorded_window_size
from models import build_encoder

HEAD_PREFIX = "fc."
# How many offending keys an error lists before summarising the rest.
MAX_LISTED = 5


def without_head(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the classifier / projection head: ``fc.*`` (linear) and ``fc.0.*``/``fc.2.*`` (MLP)."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}


def encoder_slots(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{'encoder_q': {...}, 'encoder_r': {...}, ...}``: each encoder's weights with the slot prefix removed."""
    slots: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        slot, _, rest = key.partition(".")
        if slot in ENCODER_SLOTS and rest:
            slots.setdefault(slot, {})[rest] = value
    return slots


@functools.cache
def _signature_keys(representation: str) -> frozenset[str]:
    """Parameter names (head excluded) of a tiny encoder of ``representation``: names do not depend on
    the widths, so a 2-channel model identifies a full-size checkpoint."""
    tiny = build_encoder(representation, 2, gru_hidden_size=2, gru_layers=1, agcn_base_channels=4, hcn_out_channels=4)
    return frozenset(without_head(tiny.state_dict()))


def identify_representation(encoder_state: Mapping[str, Any]) -> str | None:
    """Which base representation's encoder these weights belong to (by parameter names), or None."""
    keys = set(without_head(encoder_state))
    best, best_overlap = None, 0
    for representation in BASE_REPRESENTATIONS:
        overlap = len(keys & _signature_keys(representation))
        if overlap > best_overlap:
            best, best_overlap = representation, overlap
    return best


def describe_slots(slots: Mapping[str, Mapping[str, Any]]) -> str:
    """``'encoder_q (seq-based), encoder_r (graph-based)'`` for the query encoders a checkpoint holds."""
    held = [s for s in QUERY_ENCODERS if s in slots]
    if not held:
        return "no encoder_q/encoder_r weights"
    parts = []
    for slot in held:
        representation = identify_representation(slots[slot])
        parts.append(f"{slot} ({representation or 'unrecognised layout'})")
    return ", ".join(parts)


def _saved_pretrain_representation(checkpoint: Mapping[str, Any]) -> str | None:
    """The representation our pretraining script recorded in the checkpoint's ``args``, if any."""
    args = checkpoint.get("args")
    if isinstance(args, Mapping):
        value = args.get("skeleton_representation")
        if isinstance(value, str):
            return value
    return None


def pretrained_encoder_state(
    path: str | os.PathLike, pretrain_representation: str, representation: str
) -> dict[str, torch.Tensor]:
    """The weights (head removed) of the query encoder that holds ``representation`` in a checkpoint
    pretrained as ``pretrain_representation``.

    Raises ValueError saying which encoders the checkpoint holds when the representation is not among
    them, when the checkpoint lacks the expected slot (e.g. an intra-skeleton file read as a pair) or when
    the slot's weights belong to another representation.
    """
    return _select_encoder(read_checkpoint(path), path, pretrain_representation, representation)


def _select_encoder(
    checkpoint: Mapping[str, Any], path: str | os.PathLike, pretrain_representation: str, representation: str
) -> dict[str, torch.Tensor]:
    slots = encoder_slots(model_state(checkpoint, path))
    held = describe_slots(slots)
    saved = _saved_pretrain_representation(checkpoint)
    if saved is not None and saved != pretrain_representation:
        raise UsageError(
            f"{path} was pretrained as {saved!r} (recorded in its args) but "
            f"--pretrain-skeleton-representation is {pretrain_representation!r}; it holds {held}"
        )
    try:
        slot = encoder_name_for(pretrain_representation, representation)
    except UsageError as exc:
        raise UsageError(f"{exc}; checkpoint {path} holds {held}") from None
    if slot not in slots:
        kind = "an intra-skeleton (single representation)" if QUERY_ENCODERS[1] not in slots else "this"
        raise UsageError(
            f"{path} has no {slot} weights, which a model pretrained as {pretrain_representation!r} would have "
            f"for {representation}; it holds {held} -- {kind} checkpoint needs a matching "
            f"--pretrain-skeleton-representation"
        )
    weights = without_head(slots[slot])
    found = identify_representation(weights)
    if found is not None and found != representation:
        raise UsageError(
            f"{path}: {slot} holds {found} weights, not {representation} as --pretrain-skeleton-representation "
            f"{pretrain_representation!r} implies; the checkpoint holds {held}"
        )
    return weights


# Encoder-size options our pretraining script records in a checkpoint's args.
SIZE_FLAGS = ("gru_hidden_size", "gru_layers", "agcn_base_channels", "hcn_out_channels")


def _size_hint(checkpoint: Mapping[str, Any]) -> str:
    """`` It was pretrained with --gru-hidden-size 8 ...`` from the checkpoint's recorded args, or ''."""
    args = checkpoint.get("args")
    if not isinstance(args, Mapping) or not all(k in args for k in SIZE_FLAGS):
        return ""
    flags = " ".join(f"--{k.replace('_', '-')} {args[k]}" for k in SIZE_FLAGS)
    window = recorded_window_size(checkpoint)
    if window is not None:
        flags += f" --window-size {window}"
    if args.get("true_bidirectional_gru"):
        flags += " --true-bidirectional-gru"
    return f" It was pretrained with {flags}."


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def load_encoder_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``weights`` into ``model`` strictly, except the model's own head ``fc.*`` which stays as is.

    Raises ValueError naming the first mismatched keys and shapes (missing, unexpected, wrong shape);
    nothing is copied unless everything fits.
    """
    target = without_head(model.state_dict())
    weights = without_head(weights)
    missing = [k for k in target if k not in weights]
    unexpected = [k for k in weights if k not in target]
    wrong = [
        f"{k}: checkpoint {_shape(weights[k])} vs model {_shape(target[k])}"
        for k in target
        if k in weights and weights[k].shape != target[k].shape
    ]
    problems = []
    if wrong:
        problems.append(f"shape mismatch for {_listed(wrong)}")
    if missing:
        problems.append(f"missing from the checkpoint: {_listed([f'{k} {_shape(target[k])}' for k in missing])}")
    if unexpected:
        problems.append(f"not in the model: {_listed([f'{k} {_shape(weights[k])}' for k in unexpected])}")
    if problems:
        raise UsageError(
            f"{source} does not fit the {type(model).__name__} built here ({'; '.join(problems)}). "
            "Check the encoder size options (--gru-hidden-size, --gru-layers, --agcn-base-channels, "
            "--hcn-out-channels; --window-size for image-based) and the representations."
        )
    result = model.load_state_dict(dict(weights), strict=False)
    leftover = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIX)]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guard against drift
        raise RuntimeError(f"partial load from {source}: missing {leftover}, unexpected {result.unexpected_keys}")


def load_pretrained_encoder(
    model: nn.Module,
    path: str | os.PathLike,
    pretrain_representation: str,
    representation: str,
    window_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Copy the pretrained query encoder for ``representation`` into ``model`` (its ``fc`` untouched).

    Returns a detached CPU copy of the loaded weights (head excluded), for checking later that
    frozen training left them unchanged. ``window_size``: the frames the evaluation will feed; a
    warning says so when the checkpoint records pretraining on another length.
    """
    parse_representation(pretrain_representation)
    checkpoint = read_checkpoint(path)
    weights = _select_encoder(checkpoint, path, pretrain_representation, representation)
    slot = encoder_name_for(pretrain_representation, representation)
    try:
        load_encoder_weights(model, weights, source=f"{slot} of {path}")
    except UsageError as exc:
        raise UsageError(f"{exc}{_size_hint(checkpoint)}") from None
    pretrained_window = recorded_window_size(checkpoint)
    if window_size is not None and pretrained_window is not None and pretrained_window != window_size:
        warnings.warn(
            f"{path} was pretrained on {pretrained_window}-frame views but is evaluated on "
            f"{window_size}-frame views; pass --window-size {pretrained_window} to match",
            stacklevel=2,
        )
    return {k: v.detach().clone().cpu() for k, v in weights.items()}
