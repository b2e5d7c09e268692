"""The paper's CNN: two 3x3 convolutions (widths N, 2N), each followed by ReLU and 2x2 average
pooling, a hidden linear layer of width 8N, then the muP readout. The convolutions are unpadded as
the authors' (``padding: 0``: the hidden layer's fan-in is 72N on CIFAR, 50N on MNIST); ``padding: 1``
keeps the sides ('same'), which images as small as the 8x8 digits need."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gammasweep.sweep.parameterization import MuConv2d, MuLinear, MuReadout, members_first


class CNN(nn.Module):
    """conv(N) - ReLU - avgpool2 - conv(2N) - ReLU - avgpool2 - linear(8N) - ReLU - readout."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int,
        generators: Sequence[torch.Generator],
        padding: int = 0,
    ) -> None:
        super().__init__()
        height, wide, channels = input_shape
        sides = [_pooled_side(side, padding) for side in (height, wide)]
        if min(sides) < 1:
            raise ValueError(
                f"CNN: {height}x{wide} images leave nothing after two unpadded 3x3 convolutions and 2x2 poolings "
                f"(padding {padding}); set the model's padding: 1"
            )
        self.width = width
        self.conv1 = MuConv2d(channels, width, generators, padding=padding)
        self.conv2 = MuConv2d(width, 2 * width, generators, padding=padding)
        self.hidden = MuLinear(2 * width * sides[0] * sides[1], 8 * width, generators)
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
# weights (9.7 M per cell unpadded, mostly the 9k x 1k hidden layer: 2.5 GB for 16 cells x 4 copies).
def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    generators: Sequence[torch.Generator],
    width: int,
    padding: int = 0,
) -> CNN:
    return CNN(input_shape, num_classes, width, generators, padding)


def _pooled_side(side: int, padding: int) -> int:
    """An image side after conv 3x3 (``padding``), avg-pool 2, conv 3x3, avg-pool 2 (floors, as torch's)."""
    for _ in range(2):
        side = (side + 2 * padding - 2) // 2
    return side
