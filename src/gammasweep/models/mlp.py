"""MLP(depth L, width N, ReLU) in the paper's parameterization."""

from __future__ import annotations

import math

import torch
from torch import nn

from gammasweep.models import register_model
from gammasweep.parameterization import MuLinear, MuReadout


class MLP(nn.Module):
    """L layers in all: L - 1 hidden MuLinear + ReLU layers of width N, then a MuReadout."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"MLP depth must be >= 2 (one hidden layer), got {depth}")
        self.width = width
        sizes = [in_features] + [width] * (depth - 1)
        self.hidden = nn.ModuleList(MuLinear(a, b, generator) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = MuReadout(width, num_classes, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer's activations, (B, N), for images x of shape (B, H, W, C)."""
        h = x.flatten(start_dim=1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


@register_model("mlp")
def build_mlp(input_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator,
              width: int, depth: int) -> MLP:
    return MLP(math.prod(input_shape), num_classes, width, depth, generator)
