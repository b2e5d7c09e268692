"""The paper's CNN: two 3x3 convolutions (widths N, 2N), each followed by ReLU and 2x2 average
pooling, a hidden linear layer of width 8N, then the muP readout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gammasweep.sweep.parameterization import MuConv2d, MuLinear, MuReadout, members_first


class CNN(nn.Module):
    """conv(N) - ReLU - avgpool2 - conv(2N) - ReLU - avgpool2 - linear(8N) - ReLU - readout."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int, generators: Sequence[torch.Generator]
    ) -> None:
        super().__init__()
        height, wide, channels = input_shape
        if height % 4 or wide % 4:
            raise ValueError(f"CNN needs image sides divisible by 4 (two 2x2 poolings), got {input_shape}")
        self.width = width
        self.conv1 = MuConv2d(channels, width, generators)
        self.conv2 = MuConv2d(width, 2 * width, generators)
        self.hidden = MuLinear(2 * width * (height // 4) * (wide // 4), 8 * width, generators)
        self.readout = MuReadout(8 * width, num_classes, generators)
        # The layers whose inputs are hidden features: the pooled first conv block (channels as units) and
        # the hidden linear layer's output (the flattened second block has too many units to correlate).
        self.feature_stages = ("conv2", "readout")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden linear layer's activations, (K, B, 8N), for images x of shape (B, H, W, C)."""
        h = x.permute(0, 3, 1, 2)  # (B, C, H, W), shared by the members
        h = F.avg_pool2d(torch.relu(self.conv1(h)), 2)
        h = F.avg_pool2d(torch.relu(self.conv2(h)), 2)
        members = self.hidden.weight.shape[0]  # K of the parameters in use (a pack may be compacted)
        return torch.relu(self.hidden(members_first(h, members)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


# Default pack: 16 cells. Activations dominate: per cell batch x (N + 2N / 4) x H x W values per
# conv block, kept for the backward pass. CIFAR (32 x 32 x 3), N = 128, batch 128, float32:
# 128 x 192 x 1024 x 4 B x 2 (pre/post ReLU) = 0.2 GB per cell, 3.2 GB per pack of 16, plus the
# weights (17 M per cell, mostly the 16k x 1k hidden layer: 4.3 GB for 16 cells x 4 copies).
def build(
    input_shape: tuple[int, int, int], num_classes: int, generators: Sequence[torch.Generator], width: int
) -> CNN:
    return CNN(input_shape, num_classes, width, generators)
