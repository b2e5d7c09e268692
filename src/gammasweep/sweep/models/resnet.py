"""ResNet-18, CIFAR variant (3x3 stem, no max-pool), in the paper's parameterization (muP with
BatchNorm, width multiplier N / 64): stem conv(N), then 4 stages of 2 BasicBlocks of widths
N, 2N, 4N, 8N (strides 1, 2, 2, 2), global average pooling, the muP readout.

Every convolution is followed by a members-aware BatchNorm, torch's ``nn.BatchNorm2d`` per member as
the authors' (``gammasweep.sweep.parameterization.MuBatchNorm2d``): batch statistics in training mode,
running statistics in eval mode, the trainer's test evaluation (what that means here: ``docs/models.md``);
so the convolutions have no bias. 18 weight layers on the longest path (stem, 16 block convolutions,
readout); the 1x1 stride-2 shortcuts of stages 2-4 are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gammasweep.sweep.parameterization import MuBatchNorm2d, MuConv2d, MuReadout, members_first

STAGES = ((1, 1), (2, 2), (4, 2), (8, 2))  # per stage of 2 blocks: (width multiple of N, stride of its first block)


class ConvNorm(nn.Module):
    """conv (k x k, stride s, no bias) then BatchNorm: (B, K * c_in, H, W) -> (B, K * c_out, H / s, W / s)."""

    def __init__(
        self, c_in: int, c_out: int, generators: Sequence[torch.Generator], kernel_size: int = 3, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = MuConv2d(c_in, c_out, generators, kernel_size, stride, bias=False)
        self.norm = MuBatchNorm2d(c_out, len(generators))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    """relu(norm(conv(relu(norm(conv(x))))) + shortcut(x)); the shortcut is the identity, or a 1x1
    stride-s ConvNorm where the block changes the width or the resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.first = ConvNorm(c_in, c_out, generators, stride=stride)
        self.second = ConvNorm(c_out, c_out, generators)
        same = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if same else ConvNorm(c_in, c_out, generators, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.second(torch.relu(self.first(x))) + self.shortcut(x))


class ResNet18(nn.Module):
    """stem ConvNorm(N) - ReLU - 4 stages x 2 BasicBlocks (N, 2N, 4N, 8N) - global average pool - readout."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int, generators: Sequence[torch.Generator]
    ) -> None:
        super().__init__()
        self.width = width
        self.stem = ConvNorm(input_shape[2], width, generators)
        stages, c_in = [], width
        for multiple, stride in STAGES:
            c_out = multiple * width
            stages.append(
                nn.Sequential(BasicBlock(c_in, c_out, stride, generators), BasicBlock(c_out, c_out, 1, generators))
            )
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)  # global average pooling, (B, K * 8N, H_4, W_4) -> (B, K * 8N, 1, 1)
        self.readout = MuReadout(c_in, num_classes, generators)
        # The layers whose inputs are the post-ReLU outputs of the 4 residual stages (``probes.FeatureSparsityProbe``).
        self.feature_stages = ("stages.1", "stages.2", "stages.3", "pool")

    def _last_stage(self, x: torch.Tensor) -> torch.Tensor:
        """The post-ReLU output of the last stage, (B, K * 8N, H_4, W_4), for images x of shape (B, H, W, C)."""
        h = torch.relu(self.stem(x.permute(0, 3, 1, 2)))  # the input (B, C, H, W) is shared by the members
        for stage in self.stages:
            h = stage(h)
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The globally average-pooled last stage, (K, B, 8N), for images x of shape (B, H, W, C)."""
        pooled = self.pool(self._last_stage(x))  # (B, K * 8N, 1, 1)
        return members_first(pooled, self.readout.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


# Default pack: 8 cells. Activations dominate: at N = 64 on CIFAR (32 x 32 x 3) the tensors saved for
# the backward pass measure 30 MB per image in float32 (torch.autograd.graph.saved_tensors_hooks,
# a tensor counted once per use: an upper bound), 3.8 GB per cell at batch 128, and 11.2 M weights
# x 4 copies (weights, gradients, update temporary, frozen init) add 0.18 GB: <= 32 GB per pack of
# 8 in float32, twice that in float64. Grouped convolutions (one group per member) run slower than
# dense ones, so the pack is kept small for job length.
def build(
    input_shape: tuple[int, int, int], num_classes: int, generators: Sequence[torch.Generator], width: int
) -> ResNet18:
    return ResNet18(input_shape, num_classes, width, generators)
