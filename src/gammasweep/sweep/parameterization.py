"""The paper's parameterization, in one place (after the authors' code, Pehlevan-Group/Richness_Sweep
``vision_tasks/models.py``).

- Hidden layers: weights N(0, 1), biases 0, forward pass (W x + b) / sqrt(fan_in) (convolutions,
  as in the authors' code, by sqrt(input channels)): the bias inside the multiplier, as theirs.
- Readout (muP): weights N(0, 1), bias 0, forward pass (W x + b) / fan_in.
- The network output g(x; theta) is divided by gamma, the feature-learning strength.
- Centered model: f(x) = (g(x; theta) - g(x; theta_0)) / gamma with theta_0 a frozen copy of the
  initial weights, so f == 0 exactly at initialization.
- Plain SGD with learning rate ``width * eta``: eta is the swept quantity and the axis of the figures.
- SignSGD and Adam (the paper's appendix): every entry moves by ~ its learning rate whatever the
  gradient's size, so the rate is eta x 1 / (multiplier x fan_in) for a layer's weight (1/sqrt(N)
  for a hidden layer, 1 for the muP readout) and eta / multiplier for its bias: the muP scaling for such updates
  (each layer's feature updates stay O(eta) as the width grows).
- float64 for small gamma (the authors switch below gamma = 1e-2; configurable here).

Every layer holds K *members* (independent networks) stacked along a leading dimension, so a
pack of K cells trains as one model (one GEMM per layer for all members); one network is K = 1.
Member k's weights are drawn from its own generator, so they do not depend on K or on the other
members. Activations are (B, F) when shared by all members (the input), (K, B, F) per member;
convolutional activations keep members in the channel dimension, (B, K * C, H, W).
Normalization layers (BatchNorm, LayerNorm) have a per-member affine map, weight 1 and bias 0 at
init, trained like biases. BatchNorm is torch's ``nn.BatchNorm2d`` with its defaults, as the authors'
ResNet: batch statistics in training mode, which update per-member running statistics (momentum
0.1), and the running statistics in eval mode (their test loop's ``model.eval()``);
``batch_statistics`` gives training mode without the update (the probes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def _normal(shape: tuple[int, ...], generators: Sequence[torch.Generator]) -> nn.Parameter:
    """(K, *shape) standard-normal weights, member k drawn from ``generators[k]``."""
    return nn.Parameter(torch.stack([torch.randn(*shape, generator=g) for g in generators]))


class MuLinear(nn.Module):
    """Hidden linear layer: y_k = (x_k W_k^T + b_k) / sqrt(fan_in), W_k ~ N(0, 1), b_k = 0: the bias inside
    the multiplier, as the authors' ``StdLinear`` (so a bias moves its pre-activation as a weight does).

    Weight (K, fan_out, fan_in), bias (K, fan_out). Input (B, fan_in) shared by the members or
    (K, B, fan_in); output (K, B, fan_out).
    """

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        generators: Sequence[torch.Generator],
        bias: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.weight = _normal((fan_out, fan_in), generators)
        self.bias = nn.Parameter(torch.zeros(len(generators), fan_out)) if bias else None
        self.scale = 1.0 / math.sqrt(fan_in) if scale is None else scale  # the forward multiplier
        self.fan_in = fan_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, fan_out, fan_in = self.weight.shape
        bias = torch.zeros((), dtype=x.dtype, device=x.device) if self.bias is None else self.bias
        if x.dim() == 2:  # shared input: one GEMM for every member, scale and bias fused into it
            weight = self.weight.reshape(members * fan_out, fan_in).T
            y = torch.addmm(bias.reshape(-1), x, weight, beta=self.scale, alpha=self.scale)
            return y.view(len(x), members, fan_out).transpose(0, 1)
        return torch.baddbmm(
            bias.unsqueeze(-2) if bias.dim() else bias,
            x,
            self.weight.transpose(1, 2),
            beta=self.scale,
            alpha=self.scale,
        )


class MuReadout(MuLinear):
    """muP readout: y_k = (x_k W_k^T + b_k) / fan_in, W_k ~ N(0, 1), b_k = 0, as the authors' ``FinalLinear``."""

    def __init__(self, fan_in: int, fan_out: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__(fan_in, fan_out, generators, scale=1.0 / fan_in)


class MuConv2d(nn.Module):
    """Hidden k x k convolution, stride s, padding k // 2 ('same' for stride 1) unless given:
    y = (conv(x, W) + b) / sqrt(c_in), W ~ N(0, 1), b = 0 (no b with ``bias=False``, as before a BatchNorm),
    the bias inside the multiplier as the authors' ``StdConv2d``.

    Weight (K, c_out, c_in, k, k). Input (B, c_in, H, W) shared by the members or (B, K * c_in, H, W);
    output (B, K * c_out, H', W'), H' = ceil(H / s).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        generators: Sequence[torch.Generator],
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = True,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        self.weight = _normal((c_out, c_in, kernel_size, kernel_size), generators)
        self.padding = kernel_size // 2 if padding is None else padding
        self.bias = nn.Parameter(torch.zeros(len(generators), c_out)) if bias else None
        self.scale = 1.0 / math.sqrt(c_in)  # the forward multiplier, as the authors' code
        self.fan_in = kernel_size**2 * c_in  # terms summed per output
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, c_out, c_in = self.weight.shape[:3]
        groups = 1 if x.shape[1] == c_in else members  # shared input, or each member its own channels
        size = self.weight.shape[3]  # the kernel's side
        weight = (
            self.weight.reshape(members * c_out, c_in, size, size) * self.scale
        )  # weights are small next to activations
        bias = None if self.bias is None else self.bias.reshape(-1) * self.scale
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding, groups=groups)


class _MemberAffine(nn.Module):
    """A normalization's per-member affine map: weight (K, F) = 1 and bias (K, F) = 0 at init."""

    def __init__(self, features: int, members: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.eps = eps


class MuBatchNorm2d(_MemberAffine):
    """BatchNorm per member and channel, torch's ``nn.BatchNorm2d`` with its defaults for each member:
    y = (x - mean) / sqrt(var + eps) * w + b. In training mode mean and var are the batch's over
    (B, H, W), and the running statistics move towards them, r <- (1 - momentum) r + momentum s (the
    variance unbiased); in eval mode mean and var are the running statistics.

    Weight (K, C) = 1 and bias (K, C) = 0 at init, trained like biases; buffers ``running_mean`` (K, C)
    = 0 and ``running_var`` (K, C) = 1. Input and output (B, K * C, H, W): each member's channels are
    normalized on their own statistics. With ``update_running`` False (``batch_statistics``) training
    mode leaves the running statistics as they are. In training mode one example's output depends on
    the other examples of its batch, so per-example Jacobians are not the NTK (``docs/models.md``).
    """

    momentum: float = 0.1  # torch's default, the authors' ResNet's

    def __init__(self, features: int, members: int, eps: float = 1e-5) -> None:
        super().__init__(features, members, eps)
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))
        self.update_running = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tracked = not self.training or self.update_running
        # view, never a copy: an update in place reaches the buffer (or the tensor functional_call put there)
        mean, var = (self.running_mean.view(-1), self.running_var.view(-1)) if tracked else (None, None)
        weight, bias = self.weight.reshape(-1), self.bias.reshape(-1)
        return F.batch_norm(x, mean, var, weight, bias, training=self.training, momentum=self.momentum, eps=self.eps)


def running_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of the model's BatchNorms by buffer name, (K, C) each; {} for a model without."""
    return {
        f"{prefix}.{name}": getattr(module, name)
        for prefix, module in model.named_modules()
        if isinstance(module, MuBatchNorm2d)
        for name in ("running_mean", "running_var")
    }


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within it, every ``MuBatchNorm2d`` of ``model`` is in training mode (normalizes on the batch in
    hand) and leaves its running statistics untouched; each is restored on exit."""
    norms = [module for module in model.modules() if isinstance(module, MuBatchNorm2d)]
    before = [(norm.training, norm.update_running) for norm in norms]
    for norm in norms:
        norm.training, norm.update_running = True, False
    try:
        yield
    finally:
        for norm, (training, update) in zip(norms, before):
            norm.training, norm.update_running = training, update


class MuLayerNorm(_MemberAffine):
    """LayerNorm over the last dimension with a per-member affine map: y_k = norm(x_k) * w_k + b_k.

    Weight (K, F) = 1 and bias (K, F) = 0 at init, trained like biases. Input and output (K, ..., F).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (len(self.weight),) + (1,) * (x.dim() - 2) + (self.weight.shape[1],)
        return torch.addcmul(
            self.bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight.view(shape)
        )


def members_first(h: torch.Tensor, members: int) -> torch.Tensor:
    """Convolutional activations (B, K * C, H, W) -> flat per-member features (K, B, C * H * W)."""
    return h.reshape(len(h), members, -1).transpose(0, 1)


def centered_output(g: torch.Tensor, g_init: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """f = (g(x; theta) - g(x; theta_0)) / gamma. Shapes: g, g_init (..., classes); gamma broadcasts."""
    return (g - g_init) / gamma


def learning_rate(width: int, eta: float, optimizer: str = "sgd") -> float:
    """The learning rate of swept ``eta``: width N times eta for SGD (the paper's code); eta itself for
    SignSGD and Adam, whose per-tensor factors are ``update_scales``."""
    return width * eta if optimizer == "sgd" else eta


def update_scales(model: nn.Module, optimizer: str = "sgd") -> dict[str, float]:
    """Per parameter name, the factor on the learning rate: 1 for SGD; for SignSGD and Adam
    1 / (multiplier x fan_in) for the weight of a MuLinear or MuConv2d layer and 1 / multiplier for its
    bias (a step of eta moves the pre-activation by eta, the bias being inside the multiplier), 1 for
    a normalization's affine weight and bias, or a ViT's position embedding."""
    scales = {name: 1.0 for name, _ in model.named_parameters()}
    if optimizer != "sgd":
        for prefix, module in model.named_modules():
            if isinstance(module, (MuLinear, MuConv2d)):
                scales[f"{prefix}.weight"] = 1.0 / (module.scale * module.fan_in)
                if module.bias is not None:
                    scales[f"{prefix}.bias"] = 1.0 / module.scale
    return scales
