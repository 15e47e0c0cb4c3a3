"""Image-based encoder: HCN (hierarchical co-occurrence network) over (N, 3, T, 25, 2) skeletons.

A position stream and a motion stream (frame differences, resized back to T frames) each learn point
features with convolutions over (time, joint), then treat joints as channels so later convolutions
see all joints together (co-occurrence). The streams are concatenated, convolved further, and the
persons are merged by an element-wise maximum. Parameter names and the Dropout2d positions are the
reference's (``conv1.0``, ``conv2``, ``conv3.0``, ``conv4.0``, the ``...m`` motion twins, ``conv5.0``,
``conv6.0``, ``fc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.constants import NUM_COORDINATES, NUM_JOINTS, NUM_PERSONS, WINDOW_SIZE


def _point_block(in_channel: int, out_channel: int, window_size: int) -> tuple[nn.Sequential, nn.Conv2d]:
    """conv1 (1x1 + ReLU) and conv2 ((3,1) over time, out = window_size channels)."""
    conv1 = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=1), nn.ReLU())
    conv2 = nn.Conv2d(out_channel, window_size, kernel_size=(3, 1), padding=(1, 0))
    return conv1, conv2


def _cooccurrence_block(num_joint: int, out_channel: int) -> tuple[nn.Sequential, nn.Sequential]:
    """conv3 (joints as channels, 3x3, pool) and conv4 (3x3, dropout, pool)."""
    conv3 = nn.Sequential(nn.Conv2d(num_joint, out_channel // 2, kernel_size=3, padding=1), nn.MaxPool2d(2))
    conv4 = nn.Sequential(
        nn.Conv2d(out_channel // 2, out_channel, kernel_size=3, padding=1), nn.Dropout2d(p=0.5), nn.MaxPool2d(2)
    )
    return conv3, conv4


def _fusion_block(in_channel: int, out_channel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1), nn.ReLU(), nn.Dropout2d(p=0.5), nn.MaxPool2d(2)
    )


def init_hcn_weights(model: nn.Module) -> None:
    """The reference's init: uniform(+-sqrt(6 / (fan_in + fan_out))) weights (Glorot) and zero biases
    for every Conv2d and Linear."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def motion_of(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, V, M) -> frame differences resized (linearly, align_corners=False) back to T frames."""
    n, c, t, v, m = x.shape
    diff = x[:, :, 1:] - x[:, :, :-1]  # (N, C, T-1, V, M)
    diff = diff.permute(0, 1, 4, 2, 3).reshape(n, c * m, t - 1, v)
    # Bilinear with unchanged V is linear interpolation along time only.
    diff = F.interpolate(diff, size=(t, v), mode="bilinear", align_corners=False)
    return diff.view(n, c, m, t, v).permute(0, 1, 3, 4, 2)


# Four 2x poolings over time and over the window channels leave nothing below 16 frames.
MIN_WINDOW_SIZE = 16


class HCN(nn.Module):
    """HCN; ``fc`` maps the (N, 4*out_channel*(window_size//16)**2) feature to logits."""

    def __init__(
        self,
        in_channel: int = NUM_COORDINATES,
        num_joint: int = NUM_JOINTS,
        num_person: int = NUM_PERSONS,
        out_channel: int = 64,
        window_size: int = WINDOW_SIZE,
        num_class: int = 128,
    ):
        super().__init__()
        if window_size < MIN_WINDOW_SIZE:
            raise ValueError(f"HCN needs window_size >= {MIN_WINDOW_SIZE} frames, got {window_size}")
        self.in_channel, self.num_joint, self.num_person = in_channel, num_joint, num_person
        self.window_size = window_size
        self.conv1, self.conv2 = _point_block(in_channel, out_channel, window_size)
        self.conv3, self.conv4 = _cooccurrence_block(num_joint, out_channel)
        self.conv1m, self.conv2m = _point_block(in_channel, out_channel, window_size)
        self.conv3m, self.conv4m = _cooccurrence_block(num_joint, out_channel)
        self.conv5 = _fusion_block(2 * out_channel, 2 * out_channel)
        self.conv6 = _fusion_block(2 * out_channel, 4 * out_channel)
        self.fc = nn.Linear(4 * out_channel * (window_size // 16) ** 2, num_class)
        init_hcn_weights(self)

    @staticmethod
    def _stream(x: torch.Tensor, point: nn.Module, temporal: nn.Module, co3: nn.Module, co4: nn.Module) -> torch.Tensor:
        """(B, C, T, V) -> (B, out_channel, T/4, window/4)."""
        out = temporal(point(x))  # (B, window, T, V)
        out = out.permute(0, 3, 2, 1).contiguous()  # (B, V, T, window): joints become channels
        return co4(co3(out))

    def forward(self, x: torch.Tensor, knn_eval: bool = False) -> torch.Tensor:
        """x: (N, C, T, V, M) -> (N, num_class) logits, or the flattened feature if knn_eval."""
        if (
            x.dim() != 5
            or x.shape[1] != self.in_channel
            or x.shape[3] != self.num_joint
            or x.shape[4] != self.num_person
            or x.shape[2] < 2
            or x.shape[2] // 16 != self.window_size // 16
        ):
            raise ValueError(
                f"HCN expects input of shape (N, {self.in_channel}, T, {self.num_joint}, {self.num_person}) "
                f"with T // 16 == window_size // 16 = {self.window_size // 16}, got {tuple(x.shape)}"
            )
        n, c, t, v, m = x.shape
        # Persons go into the batch (person-major within each sample); the layers act per sample, so
        # this equals one pass per person.
        position = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        motion = motion_of(x).permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        out_p = self._stream(position, self.conv1, self.conv2, self.conv3, self.conv4)
        out_m = self._stream(motion, self.conv1m, self.conv2m, self.conv3m, self.conv4m)
        out = self.conv6(self.conv5(torch.cat((out_p, out_m), dim=1)))  # (N*M, 4*out, T/16, window/16)
        out = out.view(n, m, *out.shape[1:]).amax(dim=1)  # maximum over persons
        feature = out.reshape(n, -1)
        return feature if knn_eval else self.fc(feature)
