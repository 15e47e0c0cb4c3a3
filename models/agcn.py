"""Graph-based encoder: 2s-AGCN (joint stream) over (N, 3, T, 25, 2) skeletons.

Structure, initialisation and parameter names follow the reference (``data_bn``, ``l1`` .. ``l10``
with ``gcn1`` / ``tcn1`` / ``residual``, ``fc``); the fixed graph ``A`` is a non-persistent buffer,
so it follows ``.to(device)`` but stays out of the state dict, as in the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.constants import NUM_COORDINATES, NUM_JOINTS, NUM_PERSONS
from models.graph import spatial_adjacency


def conv_init(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    nn.init.zeros_(conv.bias)


def conv_branch_init(conv: nn.Conv2d, branches: int) -> None:
    """Normal init scaled down by the number of summed branches (one per graph subset)."""
    out_c, in_c, k_h = conv.weight.shape[:3]
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (out_c * in_c * k_h * branches)))
    nn.init.zeros_(conv.bias)


def bn_init(bn: nn.BatchNorm1d | nn.BatchNorm2d, scale: float) -> None:
    nn.init.constant_(bn.weight, scale)
    nn.init.zeros_(bn.bias)


class TemporalConv(nn.Module):
    """(k x 1) convolution over time + BatchNorm (the reference's ``unit_tcn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0), stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        conv_init(self.conv)
        bn_init(self.bn, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class AdaptiveGraphConv(nn.Module):
    """Adaptive graph convolution (the reference's ``unit_gcn``), (N, C, T, V) -> (N, out, T, V).

    For each subset k: adjacency = A_k + PA_k + softmax_rows(theta_k(x)^T phi_k(x) / (C_e T)) and
    output sum_k W_k (x @ adjacency); then BN, a (projected) identity shortcut and ReLU. The three
    subsets run as one batched computation: theta/phi of all subsets are one 1x1 convolution and the
    sum over subsets of W_k(.) is one 1x1 convolution over the stacked aggregations -- the same
    function as the per-subset loop (up to float summation order).
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, coff_embedding: int = 4):
        super().__init__()
        num_subset = adjacency.shape[0]
        self.inter_c = out_channels // coff_embedding
        self.num_subset = num_subset
        self.PA = nn.Parameter(torch.full(adjacency.shape, 1e-6, dtype=torch.float32))
        self.register_buffer("A", adjacency.clone().float(), persistent=False)
        self.conv_a = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(num_subset))
        self.conv_b = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(num_subset))
        self.conv_d = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(num_subset))
        if in_channels != out_channels:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        else:
            self.down = None  # identity shortcut; no parameters, as in the reference
        self.bn = nn.BatchNorm2d(out_channels)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                bn_init(m, 1.0)
        bn_init(self.bn, 1e-6)  # the block starts close to its shortcut
        for conv in self.conv_d:
            conv_branch_init(conv, num_subset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        s, ce = self.num_subset, self.inter_c
        # Embeddings of every subset in one 1x1 conv: (N, 2*S*Ce, T, V).
        w_emb = torch.cat([conv.weight for conv in (*self.conv_a, *self.conv_b)])
        b_emb = torch.cat([conv.bias for conv in (*self.conv_a, *self.conv_b)])
        emb = F.conv2d(x, w_emb, b_emb).view(n, 2, s, ce, t, v)
        theta = emb[:, 0].permute(0, 1, 4, 2, 3).reshape(n, s, v, ce * t)  # (N, S, V, Ce*T)
        phi = emb[:, 1].reshape(n, s, ce * t, v)  # (N, S, Ce*T, V)
        # Scaling before the product keeps a float16 sum over Ce*T terms in range.
        # Softmax over dim -2: each column (receiving joint) gets a distribution over sending joints.
        attention = torch.softmax(torch.matmul(theta / (ce * t), phi), dim=-2)  # (N, S, V, V)
        adjacency = attention + (self.A + self.PA)  # (N, S, V, V)
        aggregated = torch.matmul(x.reshape(n, 1, c * t, v), adjacency)  # (N, S, C*T, V)
        w_out = torch.cat([conv.weight for conv in self.conv_d], dim=1)  # (out, S*C, 1, 1)
        b_out = torch.stack([conv.bias for conv in self.conv_d]).sum(0)
        y = F.conv2d(aggregated.reshape(n, s * c, t, v), w_out, b_out)
        y = self.bn(y)
        y = y + (x if self.down is None else self.down(x))
        return F.relu(y)


class TCNGCNUnit(nn.Module):
    """Graph conv then temporal conv, plus a residual (none / identity / strided 1x1 TemporalConv)."""

    def __init__(
        self, in_channels: int, out_channels: int, adjacency: torch.Tensor, stride: int = 1, residual: bool = True
    ):
        super().__init__()
        self.gcn1 = AdaptiveGraphConv(in_channels, out_channels, adjacency)
        self.tcn1 = TemporalConv(out_channels, out_channels, stride=stride)
        self.residual_kind = (
            "none" if not residual else ("identity" if in_channels == out_channels and stride == 1 else "conv")
        )
        if self.residual_kind == "conv":
            self.residual = TemporalConv(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn1(self.gcn1(x))
        if self.residual_kind == "identity":
            y = y + x
        elif self.residual_kind == "conv":
            y = y + self.residual(x)
        return F.relu(y)


class AGCN(nn.Module):
    """2s-AGCN backbone; ``fc`` maps the (N, 4*base_channels) feature to logits."""

    def __init__(
        self,
        num_class: int = 128,
        num_point: int = NUM_JOINTS,
        num_person: int = NUM_PERSONS,
        in_channels: int = NUM_COORDINATES,
        base_channels: int = 64,
    ):
        super().__init__()
        if num_point != NUM_JOINTS:
            raise ValueError(f"AGCN uses the NTU graph with {NUM_JOINTS} joints, got num_point={num_point}")
        self.num_point, self.num_person, self.in_channels = num_point, num_person, in_channels
        adjacency = torch.from_numpy(spatial_adjacency())
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * num_point)
        b = base_channels
        # (in, out, temporal stride, residual) of l1 .. l10; widths 64..256 at base 64.
        plan = [
            (in_channels, b, 1, False),
            (b, b, 1, True),
            (b, b, 1, True),
            (b, b, 1, True),
            (b, 2 * b, 2, True),
            (2 * b, 2 * b, 1, True),
            (2 * b, 2 * b, 1, True),
            (2 * b, 4 * b, 2, True),
            (4 * b, 4 * b, 1, True),
            (4 * b, 4 * b, 1, True),
        ]
        for i, (c_in, c_out, stride, residual) in enumerate(plan, start=1):
            self.add_module(f"l{i}", TCNGCNUnit(c_in, c_out, adjacency, stride=stride, residual=residual))
        self.num_units = len(plan)
        self.fc = nn.Linear(4 * b, num_class)
        nn.init.normal_(self.fc.weight, 0.0, math.sqrt(2.0 / num_class))  # bias keeps the default init
        bn_init(self.data_bn, 1.0)

    def forward(self, x: torch.Tensor, knn_eval: bool = False) -> torch.Tensor:
        """x: (N, C, T, V, M) -> (N, num_class) logits, or the (N, 4*base_channels) feature if knn_eval."""
        if (
            x.dim() != 5
            or x.shape[1] != self.in_channels
            or x.shape[3] != self.num_point
            or x.shape[4] != self.num_person
        ):
            raise ValueError(
                f"AGCN expects input of shape (N, {self.in_channels}, T, {self.num_point}, {self.num_person}), "
                f"got {tuple(x.shape)}"
            )
        n, c, t, v, m = x.shape
        # BatchNorm over (person, joint, channel) features, per frame.
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)  # persons into the batch
        for i in range(1, self.num_units + 1):
            x = getattr(self, f"l{i}")(x)
        feature = x.reshape(n, m, x.shape[1], -1).mean(3).mean(1)  # over time*joints, then persons
        return feature if knn_eval else self.fc(feature)
