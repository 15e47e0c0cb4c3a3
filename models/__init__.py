"""The three encoders (one per skeleton representation) and a builder that sizes them.

Every encoder ends in ``fc`` (nn.Linear); MoCo's MLP head replaces it by
``nn.Sequential(Linear(d, d), ReLU(), fc)``. ``feature_dim`` reads d in either case.
"""

from __future__ import annotations

from torch import nn

from common.constants import VALUES_PER_FRAME, WINDOW_SIZE
from models.agcn import AGCN
from models.bigru import BIGRU
from models.hcn import HCN

ENCODERS: dict[str, type[nn.Module]] = {"seq-based": BIGRU, "graph-based": AGCN, "image-based": HCN}


def build_encoder(
    representation: str,
    num_class: int,
    *,
    gru_hidden_size: int = 1024,
    gru_layers: int = 3,
    agcn_base_channels: int = 64,
    hcn_out_channels: int = 64,
    window_size: int = WINDOW_SIZE,
    true_bidirectional: bool = False,
) -> nn.Module:
    """The encoder for one base representation, initialised as the reference does."""
    if representation == "seq-based":
        return BIGRU(
            en_input_size=VALUES_PER_FRAME,  # the seq-based view: one flattened frame per step
            en_hidden_size=gru_hidden_size,
            en_num_layers=gru_layers,
            num_class=num_class,
            bidirectional_mode="true" if true_bidirectional else "reference",
        )
    if representation == "graph-based":
        return AGCN(num_class=num_class, base_channels=agcn_base_channels)
    if representation == "image-based":
        return HCN(out_channel=hcn_out_channels, window_size=window_size, num_class=num_class)
    raise ValueError(f"unknown representation {representation!r}; expected one of: {', '.join(ENCODERS)}")


def feature_dim(encoder: nn.Module) -> int:
    """Width of the feature ``fc`` receives (with or without the MLP head)."""
    fc = encoder.fc
    first = fc[0] if isinstance(fc, nn.Sequential) else fc
    if not isinstance(first, nn.Linear):
        raise TypeError(f"encoder.fc must be nn.Linear or an nn.Sequential starting with one, got {type(fc).__name__}")
    return first.in_features


__all__ = ["AGCN", "BIGRU", "ENCODERS", "HCN", "build_encoder", "feature_dim"]
