"""Loading the encoder a downstream run evaluates from a MoCo checkpoint: ours or the reference's released files.

The slot is the one the user asked for (:func:`moco.builder.query_slot`): ``encoder_q``
for the first representation of a pair ``A_and_B`` and for intra-skeleton, ``encoder_r`` for the second.
Its weights, projection head (``fc.*``, or ``fc.0.*``/``fc.2.*`` with the MLP head) excluded, must fit the
encoder built here exactly, or the load is refused with one line naming the slot and the first missing,
unexpected or misshapen key: a partial load would silently evaluate a half-random network. Nothing here
knows which encoders exist; a new encoder needs no change.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from common.io import UsageError
from engine.args import SIZE_FLAGS, as_flags, differences
from engine.checkpoints import model_state, read_checkpoint, recorded
from moco.builder import encoder_state_dict, query_slot

HEAD_PREFIX = "fc."


def without_head(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the classifier / projection head: ``fc.*`` (linear) and ``fc.0.*``/``fc.2.*`` (MLP)."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def first_misfit(target: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> str | None:
    """The first key of ``target`` missing from ``weights`` or of another shape, else the first key of
    ``weights`` that ``target`` lacks (each with its shape); None when they fit."""
    for key, value in target.items():
        if key not in weights:
            return f"{key} {_shape(value)} is missing from the checkpoint"
        if weights[key].shape != value.shape:
            return f"{key}: checkpoint {_shape(weights[key])} vs model {_shape(value)}"
    extra = next((key for key in weights if key not in target), None)
    return None if extra is None else f"{extra} {_shape(weights[extra])} is not in the model"


def _size_hint(args: Mapping) -> str:
    """`` It was pretrained with --gru-hidden-size 8 ...`` from a checkpoint's recorded args, or a reminder."""
    if not all(k in args for k in SIZE_FLAGS):
        return " The encoder size flags and --window-size must be those of pretraining."
    flags = as_flags({k: args[k] for k in (*SIZE_FLAGS, "window_size") if k in args})
    return f" It was pretrained with {flags}."


def load_pretrained_encoder(
    model: nn.Module,
    path: str | os.PathLike,
    pretrain_representation: str,
    representation: str,
    window_size: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Copy the pretrained query encoder for ``representation`` into ``model`` (its ``fc`` untouched).

    Returns the loaded weights (CPU tensors apart from the model's, head excluded), for checking later that frozen
    training left them unchanged. ``window_size``: the frames the evaluation feeds (a warning when the
    checkpoint records another); ``options``: this run's values of the encoder's own options
    (``models.ENCODERS``), refused when the checkpoint records others (an on/off option it does not
    record counts as off: the reference's files record none).
    """
    slot = query_slot(pretrain_representation, representation)
    checkpoint = read_checkpoint(path, flag="--pretrained")
    args = recorded(checkpoint)
    saved = args.get("skeleton_representation", pretrain_representation)
    if saved != pretrain_representation:
        raise UsageError(
            f"--pretrained {path} was pretrained as {saved!r} (recorded in its args), not "
            f"--pretrain-skeleton-representation {pretrain_representation!r}"
        )
    options = dict(options or {})
    # An on/off option a checkpoint does not record was off (the reference's record none).
    differ = differences({**{k: False for k, v in options.items() if isinstance(v, bool)}, **args}, options)
    if differ:
        raise UsageError(f"--pretrained {path} was pretrained with {differ}: pass its own options")
    state = model_state(checkpoint, path)
    try:
        weights = without_head(encoder_state_dict(state, slot))
    except KeyError:
        held = sorted({key.split(".")[0] for key in state if key.startswith("encoder_")}) or ["no encoder"]
        raise UsageError(
            f"--pretrained {path} holds no {slot} weights (it holds {', '.join(held)}); a checkpoint "
            f"pretrained as {pretrain_representation!r} would: check --pretrain-skeleton-representation"
        ) from None
    target = model.state_dict()
    misfit = first_misfit(without_head(target), weights)
    if misfit is not None:
        raise UsageError(
            f"--pretrained {path}: {slot} does not fit the {type(model).__name__} built for {representation}: "
            f"{misfit}.{_size_hint(args)}"
        )
    head = {k: v for k, v in target.items() if k.startswith(HEAD_PREFIX)}
    model.load_state_dict({**weights, **head}, strict=True)
    pretrained_window = args.get("window_size")  # none recorded: the reference's, or ours from before the flag
    if window_size is not None and pretrained_window is not None and pretrained_window != window_size:
        warnings.warn(
            f"{path} was pretrained on {pretrained_window}-frame views but is evaluated on "
            f"{window_size}-frame views; pass --window-size {pretrained_window} to match",
            stacklevel=2,
        )
    return weights  # read onto the CPU and copied into the model, so training leaves them as they are
