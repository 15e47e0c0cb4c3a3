"""Sequence-based encoder: the reference's "bidirectional" GRU over (N, T, 150) frame vectors.

The reference steps a bidirectional ``nn.GRU`` one frame at a time, carrying the hidden state. With
one-frame calls its "reverse" direction never sees the future: both directions of a layer are ordinary
forward-in-time GRUs (own weights), and layer ``l+1`` at frame ``t`` reads
``concat(fwd_l[t], rev_l[t])``. The released checkpoints were trained with exactly this function,
so ``bidirectional_mode="reference"`` (default) computes it -- over whole sequences instead of a
Python loop over frames, through one native GRU call per layer and direction (cuDNN on a GPU).
``bidirectional_mode="true"`` runs the same parameters as a genuine bidirectional GRU.

Parameters live in one ``nn.GRU(bidirectional=True, batch_first=True)`` at ``encoder.gru`` so state
dict keys are the reference's (``encoder.gru.weight_ih_l0``, ``..._l0_reverse``, ..., ``fc.*``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import functional_call

BIDIRECTIONAL_MODES: tuple[str, ...] = ("reference", "true")

# cuDNN copies weights that are not one flat buffer (here: one layer-direction of the full GRU's
# buffer at a time) and warns each time; the copy is the price of the per-direction calls.
_CUDNN_CHUNK_WARNING = r"RNN module weights are not part of single contiguous chunk of memory"


def _direction_weights(gru: nn.GRU, layer: int, reverse: bool) -> list[torch.Tensor]:
    """[w_ih, w_hh, b_ih, b_hh] of one layer and direction of ``gru``."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return [getattr(gru, name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


# torch._VF.gru is private, but it is exactly what nn.GRU.forward calls, with the weights as arguments:
# one nn.GRU holds all parameters (the reference's state dict keys) while each direction runs as its
# own cuDNN/ATen call. Should a torch release drop it, torch.func.functional_call on a one-layer nn.GRU
# (public API, the same kernel behind a module swap per call) takes over; tests/test_models.py checks
# both against nn.GRU.
_HAS_VF_GRU = hasattr(torch._VF, "gru")


def _vf_forward_gru(x: torch.Tensor, weights: list[torch.Tensor], training: bool) -> torch.Tensor:
    """One single-layer, forward-in-time GRU over the whole sequence: (N, T, I) -> (N, T, H)."""
    h0 = x.new_zeros(1, x.shape[0], weights[1].shape[1])  # (layers * directions, N, H)
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    out, _ = torch._VF.gru(x, h0, weights, True, 1, 0.0, training, False, True)
    return out


def _functional_forward_gru(x: torch.Tensor, weights: list[torch.Tensor], training: bool) -> torch.Tensor:
    """:func:`_vf_forward_gru` through public API: a weightless one-layer nn.GRU runs ``weights``."""
    template = nn.GRU(x.shape[-1], weights[1].shape[1], batch_first=True, device="meta").train(training)
    params = dict(zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), weights))
    out, _ = functional_call(template, params, (x,))
    return out


_native_forward_gru = _vf_forward_gru if _HAS_VF_GRU else _functional_forward_gru


def causal_bigru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The reference's per-frame function of a bidirectional ``gru``, whole-sequence.

    x: (N, T, I) -> (N, T, 2H), the top layer's ``concat(fwd[t], rev[t])`` where both directions ran
    forwards in time: two native whole-sequence GRU calls per layer (cuDNN on a GPU). Equal to stepping
    ``gru`` one frame at a time with the carried hidden state.
    """
    if not (gru.bidirectional and gru.batch_first and gru.bias) or gru.dropout != 0:
        raise ValueError("causal_bigru expects nn.GRU(bidirectional=True, batch_first=True, bias=True, dropout=0)")
    layer_input = x
    with warnings.catch_warnings():
        if x.is_cuda:
            warnings.filterwarnings("ignore", message=_CUDNN_CHUNK_WARNING)
        for layer in range(gru.num_layers):
            fwd = _native_forward_gru(layer_input, _direction_weights(gru, layer, False), gru.training)
            rev = _native_forward_gru(layer_input, _direction_weights(gru, layer, True), gru.training)
            layer_input = torch.cat((fwd, rev), dim=-1)
    return layer_input


def reference_loop_features(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Slow reference: the original's frame-by-frame loop; (N, T, I) -> last frame's (N, 2H).

    Kept for benchmarks and as executable documentation of what ``causal_bigru`` reproduces.
    """
    hidden = None
    out = None
    for t in range(x.shape[1]):
        out, hidden = gru(x[:, t : t + 1], hidden)
    return out[:, 0]


class SequenceEncoder(nn.Module):
    """Holds ``gru`` (so keys read ``encoder.gru.*``) and maps (N, T, I) to the (N, 2H) feature."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bidirectional_mode: str):
        super().__init__()
        if bidirectional_mode not in BIDIRECTIONAL_MODES:
            raise ValueError(
                f"bidirectional_mode must be one of {', '.join(BIDIRECTIONAL_MODES)}, got {bidirectional_mode!r}"
            )
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True)
        self.bidirectional_mode = bidirectional_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bidirectional_mode == "reference":
            return causal_bigru(self.gru, x)[:, -1]  # (N, 2H): last frame's output
        # Genuine bidirectional GRU: the feature joins each direction's final state, i.e. the forward
        # direction after the last frame and the backward direction after the first, so both have
        # read the whole clip (the last frame's output would give the backward half one frame).
        _, h_n = self.gru(x)  # h_n: (2 * layers, N, H), last two rows = top layer fwd, bwd
        return torch.cat((h_n[-2], h_n[-1]), dim=-1)


def init_bigru_weights(model: nn.Module) -> None:
    """The reference's GRU initialisation: xavier_uniform_ on every 2-D parameter (GRU matrices and
    fc.weight); biases keep PyTorch's default initialisation."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                nn.init.xavier_uniform_(param)


class BIGRU(nn.Module):
    """3-layer BiGRU over (N, T, en_input_size) frames; ``fc`` maps the (N, 2*hidden) feature to logits."""

    def __init__(
        self,
        en_input_size: int = 150,
        en_hidden_size: int = 1024,
        en_num_layers: int = 3,
        num_class: int = 128,
        bidirectional_mode: str = "reference",
    ):
        super().__init__()
        self.en_input_size = en_input_size
        self.en_num_layers = en_num_layers
        self.encoder = SequenceEncoder(en_input_size, en_hidden_size, en_num_layers, bidirectional_mode)
        self.fc = nn.Linear(2 * en_hidden_size, num_class)
        init_bigru_weights(self)

    def forward(self, x: torch.Tensor, knn_eval: bool = False) -> torch.Tensor:
        """x: (N, T, en_input_size) -> (N, num_class) logits, or the (N, 2*hidden) feature if knn_eval."""
        if x.dim() != 3 or x.shape[-1] != self.en_input_size or x.shape[1] == 0:
            raise ValueError(f"BIGRU expects input of shape (N, T>0, {self.en_input_size}), got {tuple(x.shape)}")
        feature = self.encoder(x)
        return feature if knn_eval else self.fc(feature)
