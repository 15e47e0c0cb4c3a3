"""Encoders: reference parameter names, checkpoint loading, reference semantics, shapes, autocast.

Reference semantics are checked against slow literal re-implementations written here (per-frame GRU
with explicit cell equations, per-subset graph convolution, per-person HCN), not against our code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.constants import NUM_JOINTS, VALUES_PER_FRAME
from models import ENCODERS, OPTIONS, PAIRS, REPRESENTATIONS, bigru, build_encoder, parse_representation
from models.agcn import AGCN, AdaptiveGraphConv
from models.bigru import BIGRU, causal_bigru, reference_loop_features
from models.graph import NTU_BONES, spatial_adjacency
from models.hcn import HCN, motion_of
from tests.helpers import with_mlp_head


def _randomize_state(model: nn.Module, seed: int) -> None:
    """Fill every float entry of the state dict with random values (positive running variances)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            else:
                tensor.copy_((noise - 0.5) * 0.6)


# --------------------------------------------------------------------------------------------- graph


def test_graph_bones_and_adjacency():
    assert NUM_JOINTS == 25 and len(NTU_BONES) == 24
    a = spatial_adjacency()
    assert a.shape == (3, 25, 25) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], np.eye(25, dtype=np.float32))
    # Inward: joint 1 -> 2 (0-based column 0 sends to row 1); every joint but the spine centre (21)
    # has exactly one parent, so those columns sum to 1 and column 20 is empty.
    assert a[1][1, 0] == 1.0
    np.testing.assert_allclose(a[1].sum(0), [0.0 if j == 20 else 1.0 for j in range(25)])
    # Outward: the spine centre (21) sends to its four children 2, 3, 5, 9 with weight 1/4 each.
    np.testing.assert_allclose(a[2][:, 20][[1, 2, 4, 8]], 0.25)
    assert a[2][:, 20].sum() == pytest.approx(1.0)
    # Joint 1 (base of spine) hangs from 2 and has children 13 and 17 -> 1/2 each, nothing back to 2.
    np.testing.assert_allclose(a[2][[12, 16], 0], 0.5)
    assert a[2][1, 0] == 0 and a[1][1, 0] == 1
    # Leaves (e.g. 4 = head, 22 = hand tip) send nothing outward.
    assert a[2][:, 3].sum() == 0 and a[2][:, 21].sum() == 0

    # Independent re-derivation: edge i->j sets A[j, i]; divide columns by their sums.
    def literal(pairs):
        m = np.zeros((25, 25))
        for i, j in pairs:
            m[j - 1, i - 1] = 1
        for col in range(25):
            if m[:, col].sum() > 0:
                m[:, col] /= m[:, col].sum()
        return m

    np.testing.assert_allclose(a[1], literal(NTU_BONES), atol=1e-7)
    np.testing.assert_allclose(a[2], literal([(j, i) for i, j in NTU_BONES]), atol=1e-7)


# ------------------------------------------------------------------------------------ exact key sets

GRU_KEYS = {
    f"encoder.gru.{kind}_l{layer}{sfx}"
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    for layer in range(3)
    for sfx in ("", "_reverse")
}
BIGRU_KEYS = GRU_KEYS | {"fc.weight", "fc.bias"}

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
GCN_KEYS = (
    ["PA"]
    + [f"conv_{ab}.{i}.{p}" for ab in "abd" for i in range(3) for p in ("weight", "bias")]
    + [f"bn.{p}" for p in BN]
)
DOWN_KEYS = ["down.0.weight", "down.0.bias"] + [f"down.1.{p}" for p in BN]
TCN_KEYS = ["conv.weight", "conv.bias"] + [f"bn.{p}" for p in BN]
# Units with a projected shortcut inside the GCN (in != out) and with a strided residual unit_tcn.
AGCN_UNITS_WITH_DOWN = {1, 5, 8}
AGCN_UNITS_WITH_RESIDUAL_CONV = {5, 8}


def _agcn_keys() -> set[str]:
    keys = {f"data_bn.{p}" for p in BN} | {"fc.weight", "fc.bias"}
    for unit in range(1, 11):
        keys |= {f"l{unit}.gcn1.{k}" for k in GCN_KEYS}
        if unit in AGCN_UNITS_WITH_DOWN:
            keys |= {f"l{unit}.gcn1.{k}" for k in DOWN_KEYS}
        keys |= {f"l{unit}.tcn1.{k}" for k in TCN_KEYS}
        if unit in AGCN_UNITS_WITH_RESIDUAL_CONV:
            keys |= {f"l{unit}.residual.{k}" for k in TCN_KEYS}
    return keys


HCN_KEYS = {
    f"{name}.{p}"
    for name in (
        "conv1.0",
        "conv2",
        "conv3.0",
        "conv4.0",
        "conv1m.0",
        "conv2m",
        "conv3m.0",
        "conv4m.0",
        "conv5.0",
        "conv6.0",
        "fc",
    )
    for p in ("weight", "bias")
}


def test_exact_key_sets_and_shapes_at_paper_size():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        gru, agcn, hcn = BIGRU(), AGCN(), HCN()
    assert set(gru.state_dict()) == BIGRU_KEYS
    assert set(agcn.state_dict()) == _agcn_keys() and len(agcn.state_dict()) == 352
    assert set(hcn.state_dict()) == HCN_KEYS
    shapes = {k: tuple(v.shape) for m in (gru,) for k, v in m.state_dict().items()}
    assert shapes["encoder.gru.weight_ih_l0"] == (3072, 150)
    assert shapes["encoder.gru.weight_ih_l1_reverse"] == (3072, 2048)
    assert shapes["encoder.gru.weight_hh_l2"] == (3072, 1024)
    assert shapes["fc.weight"] == (128, 2048)
    shapes = {k: tuple(v.shape) for k, v in agcn.state_dict().items()}
    assert shapes["data_bn.weight"] == (150,)
    assert shapes["l1.gcn1.PA"] == (3, 25, 25)
    assert shapes["l1.gcn1.conv_a.0.weight"] == (16, 3, 1, 1)
    assert shapes["l1.gcn1.conv_d.2.weight"] == (64, 3, 1, 1)
    assert shapes["l1.tcn1.conv.weight"] == (64, 64, 9, 1)
    assert shapes["l5.residual.conv.weight"] == (128, 64, 1, 1)
    assert shapes["l8.gcn1.down.0.weight"] == (256, 128, 1, 1)
    assert shapes["l10.gcn1.conv_b.1.weight"] == (64, 256, 1, 1)
    assert shapes["fc.weight"] == (128, 256)
    shapes = {k: tuple(v.shape) for k, v in hcn.state_dict().items()}
    assert shapes["conv1.0.weight"] == (64, 3, 1, 1)
    assert shapes["conv2.weight"] == (64, 64, 3, 1)
    assert shapes["conv3.0.weight"] == (32, 25, 3, 3)
    assert shapes["conv4m.0.weight"] == (64, 32, 3, 3)
    assert shapes["conv5.0.weight"] == (128, 128, 3, 3)
    assert shapes["conv6.0.weight"] == (256, 128, 3, 3)
    assert shapes["fc.weight"] == (128, 4096)


def test_agcn_graph_buffer_is_not_persistent_but_follows_the_module():
    model = AGCN(num_class=5, base_channels=4)
    assert not any(k.endswith(".A") for k in model.state_dict())
    assert isinstance(model.l1.gcn1.A, torch.Tensor) and not model.l1.gcn1.A.requires_grad
    model = model.double()  # .to(dtype/device) moves the buffer with the parameters
    assert model.l3.gcn1.A.dtype == torch.float64
    np.testing.assert_allclose(model.l3.gcn1.A.numpy(), spatial_adjacency())


# --------------------------------------------------------------------- reference-layout checkpoints


def _tiny(representation: str, num_class: int = 6) -> nn.Module:
    return build_encoder(
        representation,
        num_class,
        gru_hidden_size=6,
        gru_layers=3,
        agcn_base_channels=4,
        hcn_out_channels=4,
        window_size=16,
    )


def _input(representation: str, batch: int = 3, frames: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if representation == "seq-based":
        return torch.randn(batch, frames, VALUES_PER_FRAME, generator=gen)
    return torch.randn(batch, 3, frames, 25, 2, generator=gen)


def _reference_moco_checkpoint(q: nn.Module, r: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict laid out like the reference's DataParallel-wrapped MoCo (inter-skeleton)."""
    state = {}
    for prefix, enc in (("encoder_q", q), ("encoder_k", q), ("encoder_r", r), ("encoder_l", r)):
        state.update({f"module.{prefix}.{k}": v.clone() for k, v in enc.state_dict().items()})
    for queue in ("S1", "S2"):
        state[f"module.Queue_{queue}"] = F.normalize(torch.randn(6, 32), dim=0)
        state[f"module.queue_ptr_{queue}"] = torch.zeros(1, dtype=torch.long)
    return state


def _strip(state: dict[str, torch.Tensor], prefix: str, keep_head: bool) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if k.startswith(prefix) and (keep_head or not k.startswith(prefix + "fc")):
            out[k[len(prefix) :]] = v
    return out


@pytest.mark.parametrize("pair", [("seq-based", "graph-based"), ("graph-based", "image-based")])
@pytest.mark.parametrize("mlp", [False, True])
def test_reference_checkpoint_loads_and_gives_same_outputs(pair, mlp):
    q, r = _tiny(pair[0]), _tiny(pair[1])
    _randomize_state(q, 1)
    _randomize_state(r, 2)
    if mlp:
        with_mlp_head(q), with_mlp_head(r)
    checkpoint = _reference_moco_checkpoint(q, r)
    for prefix, source, rep in (("module.encoder_q.", q, pair[0]), ("module.encoder_r.", r, pair[1])):
        # Downstream use: everything but the head, into a fresh encoder with a plain fc.
        fresh = _tiny(rep)
        result = fresh.load_state_dict(_strip(checkpoint, prefix, keep_head=False), strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and result.unexpected_keys == []
        # Resuming pretraining: the whole encoder, head included, strictly.
        full = _tiny(rep)
        if mlp:
            with_mlp_head(full)
        full.load_state_dict(_strip(checkpoint, prefix, keep_head=True), strict=True)
        for m in (source, fresh, full):
            m.eval()
        x = _input(rep)
        with torch.no_grad():
            expected_feature = source(x, knn_eval=True)
            torch.testing.assert_close(fresh(x, knn_eval=True), expected_feature, rtol=0, atol=1e-6)
            torch.testing.assert_close(full(x), source(x), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------- BiGRU


def _literal_per_frame_bigru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The reference's computation spelled out: frame by frame, every layer and direction a GRU cell
    that carries its own state forwards in time; returns the top layer's (N, 2H) at the last frame."""
    n, steps, _ = x.shape
    h = gru.hidden_size
    state = [[x.new_zeros(n, h), x.new_zeros(n, h)] for _ in range(gru.num_layers)]
    layer_in = None
    for t in range(steps):
        layer_in = x[:, t]
        for layer in range(gru.num_layers):
            for d, sfx in enumerate(("", "_reverse")):
                w_ih = getattr(gru, f"weight_ih_l{layer}{sfx}")
                w_hh = getattr(gru, f"weight_hh_l{layer}{sfx}")
                gi = layer_in @ w_ih.T + getattr(gru, f"bias_ih_l{layer}{sfx}")
                gh = state[layer][d] @ w_hh.T + getattr(gru, f"bias_hh_l{layer}{sfx}")
                r = torch.sigmoid(gi[:, :h] + gh[:, :h])
                z = torch.sigmoid(gi[:, h : 2 * h] + gh[:, h : 2 * h])
                cand = torch.tanh(gi[:, 2 * h :] + r * gh[:, 2 * h :])
                state[layer][d] = (1 - z) * cand + z * state[layer][d]
            layer_in = torch.cat(state[layer], dim=1)
    return layer_in


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_bigru_matches_literal_per_frame_loop_forward_and_gradients(dtype, tol):
    torch.manual_seed(0)
    model = BIGRU(en_input_size=5, en_hidden_size=4, en_num_layers=3, num_class=3).to(dtype)
    gru = model.encoder.gru
    x = torch.randn(3, 7, 5, dtype=dtype, requires_grad=True)
    params = [x, *gru.parameters()]
    ours = model(x, knn_eval=True)
    expected = _literal_per_frame_bigru(gru, x)
    assert ours.shape == (3, 8)
    torch.testing.assert_close(ours, expected, rtol=0, atol=tol)
    torch.testing.assert_close(reference_loop_features(gru, x), expected, rtol=0, atol=tol)
    weights = torch.randn_like(expected)
    g_ours = torch.autograd.grad((ours * weights).sum(), params)
    g_expected = torch.autograd.grad((expected * weights).sum(), params)
    for a, b in zip(g_ours, g_expected):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
    # The logits are fc of that feature.
    torch.testing.assert_close(model(x), model.fc(expected), rtol=0, atol=tol)


def test_bigru_whole_sequence_output_is_causal_and_single_frame_works():
    torch.manual_seed(1)
    gru = nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 6, 4)
    out = causal_bigru(gru, x)
    assert out.shape == (2, 6, 6)
    # Changing the future leaves the past untouched: both directions read forwards.
    x2 = x.clone()
    x2[:, 4:] += 1.0
    torch.testing.assert_close(causal_bigru(gru, x2)[:, :4], out[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 2], _literal_per_frame_bigru(gru, x[:, :3]), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        causal_bigru(gru, x[:, :1])[:, 0], _literal_per_frame_bigru(gru, x[:, :1]), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match="bidirectional=True"):
        causal_bigru(nn.GRU(4, 3, batch_first=True), x)


def _one_direction_gru_and_weights(seed: int) -> tuple[nn.GRU, list[torch.Tensor]]:
    """A one-layer nn.GRU and, as separate tensors, one direction's weights of a bidirectional GRU
    copied into it: the same function two ways."""
    torch.manual_seed(seed)
    big = nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True)
    weights = [getattr(big, f"{name}_l0_reverse") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    single = nn.GRU(5, 4, batch_first=True)
    with torch.no_grad():
        for name, w in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), weights):
            getattr(single, name).copy_(w)
    return single, weights


@pytest.mark.parametrize("forward", ["_vf_forward_gru", "_functional_forward_gru"])
def test_per_direction_gru_call_equals_nn_gru_forward_and_gradients(forward):
    """torch._VF.gru is private: this fails loudly if it disappears or computes anything but nn.GRU's
    function (outputs and gradients, bit for bit); the public fallback is held to the same."""
    assert bigru._HAS_VF_GRU, "torch._VF.gru is gone; the sequence encoder now runs the functional_call fallback"
    assert bigru._native_forward_gru is bigru._vf_forward_gru
    single, weights = _one_direction_gru_and_weights(3)
    x = torch.randn(3, 7, 5, requires_grad=True)
    expected, _ = single(x)
    upstream = torch.randn_like(expected)
    g_expected = torch.autograd.grad((expected * upstream).sum(), [x, *single.parameters()])
    for training in (True, False):
        got = getattr(bigru, forward)(x, weights, training)
        assert got.shape == (3, 7, 4)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        g_got = torch.autograd.grad((got * upstream).sum(), [x, *weights])
        for a, b in zip(g_got, g_expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_native_causal_bigru_runs_on_the_public_fallback(monkeypatch):
    torch.manual_seed(4)
    gru = nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 6, 4)
    expected = causal_bigru(gru, x)
    monkeypatch.setattr(bigru, "_native_forward_gru", bigru._functional_forward_gru)
    torch.testing.assert_close(causal_bigru(gru, x), expected, rtol=0, atol=0)


def test_true_bidirectional_mode_feature_is_both_final_states():
    torch.manual_seed(2)
    model = BIGRU(en_input_size=5, en_hidden_size=4, en_num_layers=2, num_class=3, bidirectional_mode="true")
    x = torch.randn(2, 6, 5)
    feature = model(x, knn_eval=True)
    out, _ = model.encoder.gru(x)  # genuine bidirectional pass
    torch.testing.assert_close(feature, torch.cat((out[:, -1, :4], out[:, 0, 4:]), dim=1))
    reference_mode = BIGRU(en_input_size=5, en_hidden_size=4, en_num_layers=2, num_class=3)
    reference_mode.load_state_dict(model.state_dict())
    assert not torch.allclose(reference_mode(x, knn_eval=True), feature)
    with pytest.raises(ValueError, match="bidirectional_mode"):
        BIGRU(bidirectional_mode="backwards")


def test_bigru_init_is_xavier_on_matrices_default_on_biases():
    torch.manual_seed(3)
    model = BIGRU(en_input_size=150, en_hidden_size=16, en_num_layers=3, num_class=10)
    for name, p in model.named_parameters():
        if p.dim() == 2:  # GRU matrices and fc.weight
            bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
            assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound, name
        elif name.startswith("encoder.gru.bias"):
            assert p.abs().max() <= 1 / math.sqrt(16)
    # xavier, not nn.GRU's default U(-1/sqrt(H), 1/sqrt(H)), for the input matrix of layer 0
    assert model.encoder.gru.weight_ih_l0.abs().max() < 0.9 / math.sqrt(16)


# -------------------------------------------------------------------------------------------- AGCN


def _literal_gcn(g: AdaptiveGraphConv, x: torch.Tensor) -> torch.Tensor:
    """The reference's unit_gcn forward: one subset at a time."""
    n, c, t, v = x.shape
    adjacency = g.A + g.PA
    y = 0
    for i in range(3):
        theta = g.conv_a[i](x).permute(0, 3, 1, 2).reshape(n, v, g.inter_c * t)
        phi = g.conv_b[i](x).reshape(n, g.inter_c * t, v)
        att = torch.softmax(theta @ phi / theta.shape[-1], dim=-2) + adjacency[i]
        y = y + g.conv_d[i]((x.reshape(n, c * t, v) @ att).reshape(n, c, t, v))
    y = g.bn(y) + (x if g.down is None else g.down(x))
    return torch.relu(y)


def _literal_agcn(model: AGCN, x: torch.Tensor) -> torch.Tensor:
    n, c, t, v, m = x.shape
    h = model.data_bn(x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t))
    h = h.reshape(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
    for i in range(1, 11):
        unit = getattr(model, f"l{i}")
        y = unit.tcn1(_literal_gcn(unit.gcn1, h))
        if i in AGCN_UNITS_WITH_RESIDUAL_CONV:
            y = y + unit.residual(h)
        elif i != 1:
            y = y + h
        h = torch.relu(y)
    return h.reshape(n, m, h.shape[1], -1).mean(3).mean(1)


@pytest.mark.parametrize("train", [False, True])
def test_agcn_matches_literal_reference(train):
    torch.manual_seed(4)
    model = AGCN(num_class=5, base_channels=4).double()
    _randomize_state(model, 5)  # BN scales away from 1e-6 so every path matters
    model.train(train)
    x = torch.randn(2, 3, 12, 25, 2, dtype=torch.float64)
    feature = model(x, knn_eval=True)
    assert feature.shape == (2, 16)
    torch.testing.assert_close(feature, _literal_agcn(model, x), rtol=0, atol=1e-10)
    torch.testing.assert_close(model(x), model.fc(_literal_agcn(model, x)), rtol=0, atol=1e-10)


def test_gcn_unit_against_hand_computation():
    """Zero embeddings give uniform attention 1/V; identity conv_d and unit BN leave
    relu(sum_k x (A_k + PA_k + 1/V) + x)."""
    torch.manual_seed(6)
    g = AdaptiveGraphConv(4, 4, torch.from_numpy(spatial_adjacency())).double().eval()
    with torch.no_grad():
        for conv in (*g.conv_a, *g.conv_b):
            conv.weight.zero_(), conv.bias.zero_()
        for conv in g.conv_d:
            conv.weight.copy_(torch.eye(4, dtype=torch.float64)[:, :, None, None])
            conv.bias.zero_()
        g.bn.weight.fill_(1.0)
        g.PA.copy_(torch.rand(3, 25, 25, dtype=torch.float64) * 0.1)
    x = torch.randn(2, 4, 5, 25, dtype=torch.float64)
    a = spatial_adjacency().astype(np.float64) + g.PA.detach().numpy() + 1.0 / 25
    xn = x.numpy()
    agg = sum(np.einsum("nctv,vw->nctw", xn, a[k]) for k in range(3))
    expected = np.maximum(agg / np.sqrt(1 + g.bn.eps) + xn, 0)
    np.testing.assert_allclose(g(x).detach().numpy(), expected, atol=1e-10)


def test_agcn_init_matches_reference():
    torch.manual_seed(7)
    model = AGCN(num_class=60, base_channels=16)
    g = model.l5.gcn1
    assert torch.all(g.PA == 1e-6)
    assert torch.all(g.bn.weight == 1e-6) and torch.all(g.down[1].weight == 1)
    assert torch.all(model.l5.tcn1.bn.weight == 1) and torch.all(model.l5.residual.bn.weight == 1)
    assert torch.all(model.data_bn.weight == 1)
    for conv in (*g.conv_a, *g.conv_d, g.down[0], model.l5.tcn1.conv):
        assert torch.all(conv.bias == 0)
    # conv_d: N(0, sqrt(2 / (out * in * 1 * 3))); conv_a: kaiming fan_out = N(0, sqrt(2 / out)).
    d = torch.cat([c.weight.flatten() for c in g.conv_d])
    assert d.std().item() == pytest.approx(math.sqrt(2 / (32 * 16 * 3)), rel=0.1)
    tcn = model.l5.tcn1.conv.weight
    assert tcn.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.1)
    assert model.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 60), rel=0.1)


# --------------------------------------------------------------------------------------------- HCN


def _literal_motion(x: np.ndarray) -> np.ndarray:
    """Frame differences linearly resized from T-1 to T frames (half-pixel centres, clamped)."""
    t = x.shape[2]
    diff = x[:, :, 1:] - x[:, :, :-1]
    out = np.empty_like(x)
    for j in range(t):
        src = max((j + 0.5) * (t - 1) / t - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, t - 2)
        w = src - i0
        out[:, :, j] = (1 - w) * diff[:, :, i0] + w * diff[:, :, i1]
    return out


def _literal_hcn(model: HCN, x: torch.Tensor) -> torch.Tensor:
    """The reference's forward: one pass per person, maximum of the two."""
    motion = torch.from_numpy(_literal_motion(x.numpy()))
    per_person = []
    for i in range(x.shape[-1]):
        p = model.conv2(model.conv1(x[..., i])).permute(0, 3, 2, 1)
        p = model.conv4(model.conv3(p))
        q = model.conv2m(model.conv1m(motion[..., i])).permute(0, 3, 2, 1)
        q = model.conv4m(model.conv3m(q))
        per_person.append(model.conv6(model.conv5(torch.cat((p, q), dim=1))))
    return torch.max(per_person[0], per_person[1]).flatten(1)


def test_hcn_motion_matches_literal_interpolation():
    x = torch.randn(2, 3, 9, 25, 2, dtype=torch.float64)
    np.testing.assert_allclose(motion_of(x).numpy(), _literal_motion(x.numpy()), atol=1e-12)


def test_hcn_matches_literal_reference_per_person():
    torch.manual_seed(8)
    model = HCN(out_channel=8, window_size=32, num_class=5).double().eval()
    x = torch.randn(2, 3, 32, 25, 2, dtype=torch.float64)
    feature = model(x, knn_eval=True)
    assert feature.shape == (2, 8 * 4 * 2 * 2)
    torch.testing.assert_close(feature, _literal_hcn(model, x), rtol=0, atol=1e-10)
    torch.testing.assert_close(model(x), model.fc(_literal_hcn(model, x)), rtol=0, atol=1e-10)


def test_hcn_structure_and_init():
    torch.manual_seed(9)
    model = HCN(out_channel=8, window_size=16, num_class=5)
    for seq in (model.conv4, model.conv4m):
        assert isinstance(seq[1], nn.Dropout2d) and seq[1].p == 0.5 and isinstance(seq[2], nn.MaxPool2d)
    for seq in (model.conv5, model.conv6):
        assert [type(m) for m in seq] == [nn.Conv2d, nn.ReLU, nn.Dropout2d, nn.MaxPool2d]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            fan_in = w[0].numel()
            fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() == 4 else 1)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= bound and torch.all(m.bias == 0)
    # Training mode drops whole channels; the two persons get independent masks yet eval is exact.
    model.train()
    x = torch.randn(4, 3, 16, 25, 2)
    assert not torch.equal(model(x), model(x))


# ------------------------------------------------------------------------ shapes, builder, autocast


@pytest.mark.parametrize(
    "representation,kwargs,frames,feature",
    [
        ("seq-based", dict(gru_hidden_size=8, gru_layers=1), 5, 16),
        ("seq-based", dict(gru_hidden_size=6, gru_layers=2, true_bidirectional_gru=True), 9, 12),
        ("graph-based", dict(agcn_base_channels=4), 8, 16),
        ("graph-based", dict(agcn_base_channels=8), 13, 32),
        ("image-based", dict(hcn_out_channels=4, window_size=16), 16, 4 * 4),
        ("image-based", dict(hcn_out_channels=8, window_size=32), 32, 8 * 4 * 4),
        ("image-based", dict(hcn_out_channels=4, window_size=32), 40, 4 * 4 * 4),
    ],
)
def test_output_and_feature_shapes(representation, kwargs, frames, feature):
    model = build_encoder(representation, 7, **kwargs)
    x = _input(representation, batch=2, frames=frames)
    assert model(x).shape == (2, 7)
    assert model(x, knn_eval=True).shape == (2, feature)
    assert with_mlp_head(model)(x, knn_eval=True).shape == (2, feature)
    assert model(x).shape == (2, 7)


def test_the_registry_is_the_one_list_of_representations():
    assert list(ENCODERS) == ["seq-based", "graph-based", "image-based"]
    # the reference's three pairs, in its order (the first of a pair is encoder_q, the second encoder_r)
    assert PAIRS == ("seq-based_and_graph-based", "seq-based_and_image-based", "graph-based_and_image-based")
    assert PAIRS + tuple(ENCODERS) == REPRESENTATIONS
    assert parse_representation("graph-based_and_image-based") == ("graph-based", "image-based")
    assert OPTIONS == {
        "gru_hidden_size": (1024, "BiGRU hidden size"),
        "gru_layers": (3, "BiGRU layers"),
        "true_bidirectional_gru": (False, "a genuine BiGRU, not the reference's function"),
        "agcn_base_channels": (64, "AGCN width of the first units"),
        "hcn_out_channels": (64, "HCN base channels"),
    }
    # every encoder takes only its own options; the others' are ignored, unknown ones refused
    assert build_encoder("graph-based", 5, agcn_base_channels=4, gru_layers=9).fc.in_features == 16
    with pytest.raises(TypeError, match="unknown options \\['gru_width'\\]"):
        build_encoder("seq-based", 5, gru_width=8)
    with pytest.raises(ValueError, match="seq-based, graph-based, image-based"):
        build_encoder("point-based", 10)
    with pytest.raises(ValueError, match="graph-based_and_seq-based"):
        parse_representation("graph-based_and_seq-based")  # a pair in the other order is not one
    with pytest.raises(ValueError, match=r"\(N, T>0, 150\)"):
        _tiny("seq-based")(torch.randn(2, 4, 149))
    with pytest.raises(ValueError, match="AGCN expects"):
        _tiny("graph-based")(torch.randn(2, 3, 8, 25, 1))
    with pytest.raises(ValueError, match="window_size // 16 = 1"):
        _tiny("image-based")(torch.randn(2, 3, 40, 25, 2))


@pytest.mark.parametrize("representation", ["seq-based", "graph-based", "image-based"])
def test_bf16_autocast_forward_and_backward_on_cpu(representation):
    torch.manual_seed(10)
    model = _tiny(representation)
    x = _input(representation, batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        feature = model(x, knn_eval=True)
    assert out.shape == (2, 6) and torch.isfinite(out.float()).all() and torch.isfinite(feature.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_modules_print_nothing(capsys):
    for rep in ENCODERS:
        model = _tiny(rep)
        model(_input(rep, batch=2))
    assert capsys.readouterr().out == ""
