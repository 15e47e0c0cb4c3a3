"""Where a figure comes from, recorded in every metrics JSON: the code, the data, the checkpoint, the machine.

Reproduction disputes come down to these unknowns: which commit computed a figure (and whether it had
uncommitted changes), which prepared data it read (the sha256 of each split folder's ``manifest.json``,
which itself holds the sha256 of every data file), which checkpoint it started from, and the torch,
NumPy, device and process count it ran with. ``scripts/ledger.py`` groups runs by these and flags a row
whose runs mix code or data versions.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.manifest import MANIFEST_NAME, code_version, sha256_of


def data_digest(folder: str | os.PathLike) -> str | None:
    """The sha256 of a split folder's ``manifest.json``, or None when it has none."""
    path = Path(folder) / MANIFEST_NAME
    return sha256_of(path) if path.is_file() else None


def provenance(
    *,
    device: torch.device | str,
    world_size: int,
    data_folders: Iterable[str | os.PathLike] = (),
    checkpoints: Mapping[str, str | os.PathLike | None] = {},
    digests: Mapping[str, str] = {},
) -> dict[str, Any]:
    """The provenance block of a metrics JSON. ``checkpoints``: flag -> the file a run started from
    (``--pretrained``, ``--resume``; None or '' when not given); ``digests``: flag -> the sha256 of its
    file where the caller has it already."""
    device = torch.device(device)
    return {
        "code": code_version(),
        "data": {str(folder): data_digest(folder) for folder in dict.fromkeys(map(str, data_folders))},
        "checkpoints": {
            flag: {"path": str(path), "sha256": digests.get(flag) or sha256_of(Path(path))}
            for flag, path in checkpoints.items()
            if path
        },
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "world_size": int(world_size),
    }
