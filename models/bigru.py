"""Sequence-based encoder: the reference's "bidirectional" GRU over (N, T, 150) frame vectors.

The reference steps a bidirectional ``nn.GRU`` one frame at a time, carrying the hidden state. With
one-frame calls its "reverse" direction never sees the future: both directions of a layer are ordinary
forward-in-time GRUs (own weights), and layer ``l+1`` at frame ``t`` reads
``concat(fwd_l[t], rev_l[t])``. The released checkpoints were trained with exactly this function,
so ``bidirectional_mode="reference"`` (default) computes it -- over whole sequences instead of a
Python loop over frames: on CPU through a hand-written BPTT (``_CausalGRULayer``), elsewhere through
one native GRU call per layer and direction (cuDNN on a GPU). ``bidirectional_mode="true"`` runs the
same parameters as a genuine bidirectional GRU.

Parameters live in one ``nn.GRU(bidirectional=True, batch_first=True)`` at ``encoder.gru`` so state
dict keys are the reference's (``encoder.gru.weight_ih_l0``, ``..._l0_reverse``, ..., ``fc.*``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.autograd.function import once_differentiable
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


def _causal_bigru_native(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Two native whole-sequence GRU calls per layer (cuDNN on a GPU): (N, T, I) -> (N, T, 2H)."""
    layer_input = x
    with warnings.catch_warnings():
        if x.is_cuda:
            warnings.filterwarnings("ignore", message=_CUDNN_CHUNK_WARNING)
        for layer in range(gru.num_layers):
            fwd = _native_forward_gru(layer_input, _direction_weights(gru, layer, False), gru.training)
            rev = _native_forward_gru(layer_input, _direction_weights(gru, layer, True), gru.training)
            layer_input = torch.cat((fwd, rev), dim=-1)
    return layer_input


class _CausalGRULayer(torch.autograd.Function):
    """One layer, D directions that all run forwards in time over the same input, with hand-written BPTT.

    Why not the native CPU GRU: its backward accumulates weight gradients step by step (GEMMs with
    inner size N), which parallelise badly. Here both directions' input projections are one GEMM,
    the per-step work is a batched (D) recurrent GEMM plus a few element-wise ops, and every weight
    gradient is one GEMM over all T*N rows.

    Gate order (r, z, n) and formulas are nn.GRU's:
      r, z = sigmoid(gi_rz + gh_rz);  n = tanh(gi_n + r * gh_n);  h = n + z * (h_prev - n)
    with gi = W_ih x + b_ih and gh = W_hh h_prev + b_hh.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, steps: int):
        # x: (T*N, I) time-major rows; w_ih: (D*3H, I); w_hh: (D, 3H, H); b_ih: (D*3H,); b_hh: (D, 3H)
        rows, _ = x.shape
        batch = rows // steps
        dirs, gates, hidden = w_hh.shape
        h2 = 2 * hidden
        gi = torch.addmm(b_ih, x, w_ih.t()).view(steps, batch, dirs, gates)
        hs = x.new_zeros(dirs, steps + 1, batch, hidden)  # hs[:, 0] is the zero initial state
        rz = x.new_empty(dirs, steps, batch, h2)
        ns = x.new_empty(dirs, steps, batch, hidden)
        ghn = x.new_empty(dirs, steps, batch, hidden)
        gh = x.new_empty(dirs, batch, gates)
        w_hh_t = w_hh.transpose(1, 2)
        b_hh_rows = b_hh.unsqueeze(1)
        for t in range(steps):
            h_prev = hs[:, t]
            torch.baddbmm(b_hh_rows, h_prev, w_hh_t, out=gh)
            gi_t = gi[t].transpose(0, 1)  # (D, N, 3H) view
            rz_t = rz[:, t]
            torch.add(gi_t[..., :h2], gh[..., :h2], out=rz_t).sigmoid_()
            ghn[:, t] = gh[..., h2:]
            n_t = ns[:, t]
            torch.addcmul(gi_t[..., h2:], rz_t[..., :hidden], gh[..., h2:], out=n_t).tanh_()
            torch.addcmul(n_t, rz_t[..., hidden:], h_prev - n_t, out=hs[:, t + 1])
        ctx.save_for_backward(x, w_ih, w_hh, hs, rz, ns, ghn)
        return hs[:, 1:]  # (D, T, N, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w_ih, w_hh, hs, rz, ns, ghn = ctx.saved_tensors
        rows = x.shape[0]
        dirs, steps, batch, hidden = ns.shape
        h2 = 2 * hidden
        grad = grad.to(x.dtype)
        dgh = x.new_empty(dirs, steps, batch, 3 * hidden)  # d loss / d gh (hidden-side pre-activations)
        dan = x.new_empty(dirs, steps, batch, hidden)  # d loss / d gi_n (input side of the n gate)
        dh = x.new_zeros(dirs, batch, hidden)
        for t in range(steps - 1, -1, -1):
            dh = dh + grad[:, t]
            r = rz[:, t, :, :hidden]
            z = rz[:, t, :, hidden:]
            n = ns[:, t]
            dgh_t = dgh[:, t]
            da_n = dan[:, t]
            torch.mul(dh - dh * z, 1 - n * n, out=da_n)
            torch.mul(dh * (hs[:, t] - n), z - z * z, out=dgh_t[..., hidden:h2])
            torch.mul(da_n * ghn[:, t], r - r * r, out=dgh_t[..., :hidden])
            torch.mul(da_n, r, out=dgh_t[..., h2:])
            dh = torch.baddbmm(dh * z, dgh_t, w_hh)
        # The input side shares the r, z pre-activation gradients; its n part is not scaled by r.
        dgi = torch.cat((dgh[..., :h2], dan), dim=-1).permute(1, 2, 0, 3).reshape(rows, -1)  # (T*N, D*3H)
        dx = dgi @ w_ih if ctx.needs_input_grad[0] else None
        dw_ih = dgi.t() @ x
        db_ih = dgi.sum(0)
        dgh_rows = dgh.view(dirs, rows, 3 * hidden)
        dw_hh = torch.bmm(dgh_rows.transpose(1, 2), hs[:, :-1].reshape(dirs, rows, hidden))
        db_hh = dgh_rows.sum(1)
        return dx, dw_ih, dw_hh, db_ih, db_hh, None


def _causal_bigru_bptt(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The same function through ``_CausalGRULayer`` (the fast path on CPU): (N, T, I) -> (N, T, 2H)."""
    batch, steps, _ = x.shape
    # Autocast would hand the GEMMs bf16 operands while the saved state stays fp32; the recurrence
    # runs in the parameters' dtype instead, as the native CPU GRU does.
    with torch.autocast(device_type=x.device.type, enabled=False):
        h = x.to(gru.weight_ih_l0.dtype).transpose(0, 1).reshape(steps * batch, -1)  # (T*N, I)
        for layer in range(gru.num_layers):
            fwd = _direction_weights(gru, layer, False)
            rev = _direction_weights(gru, layer, True)
            out = _CausalGRULayer.apply(
                h,
                torch.cat((fwd[0], rev[0])),
                torch.stack((fwd[1], rev[1])),
                torch.cat((fwd[2], rev[2])),
                torch.stack((fwd[3], rev[3])),
                steps,
            )  # (2, T, N, H)
            h = out.permute(1, 2, 0, 3).reshape(steps * batch, -1)  # (T*N, 2H): concat(fwd, rev)
    return h.view(steps, batch, -1).transpose(0, 1)


CAUSAL_IMPLS: tuple[str, ...] = ("auto", "bptt", "native")


def causal_bigru(gru: nn.GRU, x: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """The reference's per-frame function of a bidirectional ``gru``, whole-sequence.

    x: (N, T, I) -> (N, T, 2H), the top layer's ``concat(fwd[t], rev[t])`` where both directions ran
    forwards in time. Equal to stepping ``gru`` one frame at a time with the carried hidden state.
    impl: "bptt" (hand-written backward, fastest on CPU), "native" (per-direction native GRU calls,
    cuDNN on GPU) or "auto" (bptt on CPU, native elsewhere).
    """
    if not (gru.bidirectional and gru.batch_first and gru.bias) or gru.dropout != 0:
        raise ValueError("causal_bigru expects nn.GRU(bidirectional=True, batch_first=True, bias=True, dropout=0)")
    if impl not in CAUSAL_IMPLS:
        raise ValueError(f"impl must be one of {', '.join(CAUSAL_IMPLS)}, got {impl!r}")
    if impl == "bptt" or (impl == "auto" and x.device.type == "cpu"):
        return _causal_bigru_bptt(gru, x)
    return _causal_bigru_native(gru, x)


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

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, bidirectional_mode: str, causal_impl: str = "auto"
    ):
        super().__init__()
        if bidirectional_mode not in BIDIRECTIONAL_MODES:
            raise ValueError(
                f"bidirectional_mode must be one of {', '.join(BIDIRECTIONAL_MODES)}, got {bidirectional_mode!r}"
            )
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True)
        self.bidirectional_mode = bidirectional_mode
        self.causal_impl = causal_impl  # see causal_bigru; a plain attribute so tests/benchmarks can switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bidirectional_mode == "reference":
            return causal_bigru(self.gru, x, self.causal_impl)[:, -1]  # (N, 2H): last frame's output
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
