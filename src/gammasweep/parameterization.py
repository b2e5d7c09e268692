"""The paper's parameterization, in one place (spec: ``shared/spec/paper.md``).

- Hidden layers: weights N(0, 1), biases 0, forward pass divides by sqrt(fan_in).
- Readout (muP): weights N(0, 1), no bias, forward pass divides by fan_in.
- The network output g(x; theta) is divided by gamma, the feature-learning strength.
- Centered model: f(x) = (g(x; theta) - g(x; theta_0)) / gamma with theta_0 a frozen copy of the
  initial weights, so f == 0 exactly at initialization.
- Plain SGD with learning rate ``width * eta``: eta is the swept quantity and the axis of the figures.
- float64 for small gamma (the authors switch below gamma = 1e-2; configurable here).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MuLinear(nn.Module):
    """Hidden linear layer: y = x W^T / sqrt(fan_in) + b, W ~ N(0, 1), b = 0."""

    def __init__(self, fan_in: int, fan_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in, generator=generator))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.scale = 1.0 / math.sqrt(fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * self.scale, self.bias)


class MuReadout(nn.Module):
    """muP readout: y = x W^T / fan_in, W ~ N(0, 1), no bias."""

    def __init__(self, fan_in: int, fan_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in, generator=generator))
        self.scale = 1.0 / fan_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * self.scale)


def centered_output(g: torch.Tensor, g_init: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """f = (g(x; theta) - g(x; theta_0)) / gamma. Shapes: g, g_init (..., classes); gamma broadcasts."""
    return (g - g_init) / gamma


def learning_rate(width: int, eta: float) -> float:
    """SGD learning rate of the paper's code: width N times the swept eta."""
    return width * eta


def dtype_for_gamma(gamma: float, float64_below: float) -> torch.dtype:
    """float64 for gamma < ``float64_below`` (the centered difference g - g_0 needs the precision)."""
    return torch.float64 if gamma < float64_below else torch.float32
