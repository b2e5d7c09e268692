"""MLP(depth L, width N, ReLU) in the paper's parameterization."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gammasweep.sweep.parameterization import MuLinear, MuReadout


class MLP(nn.Module):
    """L layers in all: L - 1 hidden MuLinear + ReLU layers of width N, then a MuReadout."""

    def __init__(
        self, in_features: int, num_classes: int, width: int, depth: int, generators: Sequence[torch.Generator]
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"MLP depth must be >= 2 (one hidden layer), got {depth}")
        self.width = width
        sizes = [in_features] + [width] * (depth - 1)
        self.hidden = nn.ModuleList(MuLinear(a, b, generators) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = MuReadout(width, num_classes, generators)
        # The layers whose inputs are the hidden features (post-ReLU), one per hidden layer.
        self.feature_stages = tuple(f"hidden.{i}" for i in range(1, depth - 1)) + ("readout",)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer's activations, (K, B, N), for images x of shape (B, H, W, C)."""
        h = x.flatten(start_dim=1)
        for layer in self.hidden:
            h = layer(h).relu_()
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


# Default pack: 64 cells. Memory of a pack of K cells ~ K x 4 copies of the weights (weights, their
# gradients, the update temporary and the optimizer-free frozen init per seed) plus activations
# K x batch x width x depth. Paper size (784 -> 512 -> 512 -> 10, batch 128, float64): K = 64 needs
# 64 x 4 x 0.67 M x 8 B = 1.4 GB + 0.2 GB: far below a GPU's memory; the pack is sized for compute
# (one first-layer GEMM of 128 x 784 x 32k per step keeps a GPU busy) and for job length.
def build(
    input_shape: tuple[int, int, int], num_classes: int, generators: Sequence[torch.Generator], width: int, depth: int
) -> MLP:
    return MLP(math.prod(input_shape), num_classes, width, depth, generators)
