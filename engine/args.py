"""Argument groups shared by the training and evaluation scripts, and argparse types for numbers that
cannot be right (a negative learning rate, zero epochs): argparse then answers
``prog: error: argument --lr/--learning-rate: expected a positive number, got -1`` and exits 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any

from common.constants import DATASETS, DEFAULT_DATA_ROOT, VALID_PAIRS, WINDOW_SIZE
from common.io import UsageError
from models import ENCODERS, OPTIONS

DATASET_CHOICES: tuple[str, ...] = tuple(DATASETS)
PROTOCOL_CHOICES: tuple[str, ...] = tuple(dict.fromkeys(p for spec in DATASETS.values() for p in spec["protocols"]))
# The encoders' size options (models.ENCODERS), each a flag; the scripts record them in checkpoints.
SIZE_FLAGS = tuple(OPTIONS)
DEFAULT = " (default %(default)s)"  # in --help of scripts whose formatter does not add the defaults


def flag(name: str) -> str:
    """The command-line flag of an argument's name: ``gru_layers`` -> ``--gru-layers``."""
    return "--" + name.replace("_", "-")


def _integer(text: str, what: str = "an integer") -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(parse: Callable[[str], Any], valid: Callable[[Any], bool], expected: str) -> Callable:
    """An argparse type: ``parse`` the text, then refuse a value outside ``valid`` naming what was expected."""

    def convert(text: str) -> Any:
        value = parse(text)
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value if isinstance(value, int) else text}")
        return value

    return convert


positive_int = _checked(_integer, lambda v: v >= 1, "a positive integer")
nonnegative_int = _checked(_integer, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(_number, lambda v: v > 0, "a positive number")
nonnegative_float = _checked(_number, lambda v: v >= 0, "a number >= 0")
fraction = _checked(_number, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")
# 1 would never move the key encoder.
momentum_value = _checked(_number, lambda v: 0.0 <= v < 1.0, "a momentum in [0, 1)")
positive_window = _checked(
    lambda text: _integer(text, "an integer number of frames"), lambda v: v >= 2, "at least 2 frames"
)


def check_window_size(window_size: int, representations: tuple[str, ...]) -> None:
    """UsageError naming ``--window-size`` when an encoder of ``representations`` needs a longer window
    (checked before any model is built)."""
    for name in representations:
        if window_size < ENCODERS[name].min_window:
            raise UsageError(
                f"--window-size {window_size}: the {name} encoder needs at least {ENCODERS[name].min_window} frames"
            )


def add_data_args(parser: argparse.ArgumentParser, dataset_flag: str) -> None:
    """``--data-root``, the dataset flag (``--pre-dataset`` or ``--finetune-dataset``), ``--protocol`` and
    ``--window-size``."""
    add = parser.add_argument_group("data").add_argument
    add("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding the data_gen outputs" + DEFAULT)
    add(dataset_flag, default="ntu60", choices=DATASET_CHOICES, help="dataset" + DEFAULT)
    pairs = ", ".join(VALID_PAIRS)
    add("--protocol", default="cross_view", choices=PROTOCOL_CHOICES, help=f"valid dataset/protocol pairs: {pairs}")
    add(
        "--window-size",
        type=positive_window,
        default=WINDOW_SIZE,
        metavar="FRAMES",
        help="frames of every view after crop-resize (image-based: as in pretraining)" + DEFAULT,
    )


def add_model_size_args(parser: argparse.ArgumentParser) -> None:
    """Encoder sizes: the paper's defaults, smaller for CPU runs and tests."""
    add = parser.add_argument_group("encoder sizes").add_argument
    for name, (default, text) in OPTIONS.items():
        if isinstance(default, bool):
            add(flag(name), action="store_true", help=text)
        else:
            add(flag(name), type=positive_int, default=default, help=text + DEFAULT)


def encoder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``models.build_encoder`` from the size options."""
    return {name: getattr(args, name) for name in (*SIZE_FLAGS, "window_size")}


def differing_flags(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys of ``current`` that ``recorded`` holds with another value; one it does not hold is no
    difference (a checkpoint from before the flag, or the reference's)."""
    return [key for key, value in current.items() if key in recorded and recorded[key] != value]


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """``--gru-layers 2 (here 3), --true-bidirectional-gru off (here on)``: :func:`differing_flags` of
    options named as attributes, with both values; '' when none differs."""

    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    return ", ".join(
        f"{flag(k)} {shown(recorded[k])} (here {shown(current[k])})" for k in differing_flags(recorded, current)
    )


def as_flags(values: dict[str, Any]) -> str:
    """``{'gru_layers': 2, 'true_bidirectional_gru': True}`` -> ``--gru-layers 2 --true-bidirectional-gru``."""
    return " ".join(flag(k) if v is True else f"{flag(k)} {v}" for k, v in values.items() if v is not False)


def add_runtime_args(
    parser: argparse.ArgumentParser, workers: int = 8, workers_help: str = "data loading workers"
) -> None:
    """Seed, workers, printing, device."""
    add = parser.add_argument_group("runtime").add_argument
    add("--seed", type=nonnegative_int, default=None, help="seed for reproducible runs")
    add("-j", "--workers", type=nonnegative_int, default=workers, metavar="N", help=workers_help + DEFAULT)
    add("-p", "--print-freq", type=positive_int, default=10, metavar="N", help="log every N steps" + DEFAULT)
    add("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def add_data_model_runtime_args(parser: argparse.ArgumentParser, dataset_flag: str, **runtime: Any) -> None:
    """The groups every training and evaluation script shares, in the order ``--help`` lists them: data
    (with ``dataset_flag``), encoder sizes, runtime (``runtime``: :func:`add_runtime_args`' options)."""
    add_data_args(parser, dataset_flag)
    add_model_size_args(parser)
    add_runtime_args(parser, **runtime)


def add_optim_args(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: list[int],
    weight_decay: float,
    cos: bool = False,
) -> None:
    """The reference's SGD flags; each script passes the reference's own defaults."""
    add = parser.add_argument_group("optimisation (the reference's flags and defaults)").add_argument
    add("--epochs", type=positive_int, default=epochs, metavar="N", help="total epochs" + DEFAULT)
    add("--start-epoch", type=nonnegative_int, default=0, metavar="N", help="first epoch (--resume: the checkpoint's)")
    total = "mini-batch size, total over all GPUs and processes"
    add("-b", "--batch-size", type=positive_int, default=batch_size, metavar="N", help=total + DEFAULT)
    initial = "initial learning rate" + DEFAULT
    add("--lr", "--learning-rate", type=positive_float, default=lr, dest="lr", metavar="LR", help=initial)
    drops = "epochs at which the learning rate drops x0.1" + (", ignored with --cos" if cos else "")
    add("--schedule", type=nonnegative_int, nargs="*", default=schedule, help=drops + DEFAULT)
    if cos:
        add("--cos", action="store_true", help="cosine learning-rate schedule")
    add("--momentum", type=momentum_value, default=0.9, metavar="M", help="SGD momentum, in [0, 1)" + DEFAULT)
    decay = dict(type=nonnegative_float, default=weight_decay, dest="weight_decay", metavar="W")
    add("--wd", "--weight-decay", **decay, help="weight decay" + DEFAULT)
