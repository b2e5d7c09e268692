"""A small Vision Transformer in the paper's parameterization (muP): patch embedding (a MuLinear on
flattened p x p patches) plus a learned position embedding, ``depth`` pre-LN transformer blocks of
multi-head self-attention (muP logits q . k / d_head, not / sqrt(d_head)) and an MLP of width 4N,
a final LayerNorm, mean pooling over the tokens, the muP readout. The MLP's activation is ReLU, as
in the paper's other models (the original ViT's is GELU), so its features are exactly sparse.

Every LayerNorm has a per-member affine map (``gammasweep.sweep.parameterization.MuLayerNorm``); the
position embedding is N(0, 1) and trained like a bias. Weight layers on the longest path:
4 x depth + 2 (embedding; per block query/key/value, attention output, two MLP layers; readout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gammasweep.sweep.parameterization import MuLayerNorm, MuLinear, MuReadout, _normal

MLP_RATIO = 4  # the blocks' MLP width, in units of N


def per_token(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A MuLinear applied to every token: (K, B, T, F_in) -> (K, B, T, F_out)."""
    return layer(h.flatten(1, 2)).unflatten(1, h.shape[1:3])


class Attention(nn.Module):
    """Multi-head self-attention, logits q . k / d_head (muP): (K, B, T, N) -> (K, B, T, N)."""

    def __init__(self, width: int, heads: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = MuLinear(width, 3 * width, generators)
        self.out = MuLinear(width, width, generators)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        members, batch, tokens, width = h.shape
        qkv = per_token(self.qkv, h).view(members, batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (K, B, heads, T, d_head)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1], dim=-1)  # (K, B, heads, T, T)
        return per_token(self.out, (weights @ v).transpose(2, 3).reshape(members, batch, tokens, width))


class Block(nn.Module):
    """Pre-LN transformer block: h + attention(LN(h)), then h + MLP(LN(h)); (K, B, T, N) -> (K, B, T, N)."""

    def __init__(self, width: int, heads: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.norm1 = MuLayerNorm(width, len(generators))
        self.attention = Attention(width, heads, generators)
        self.norm2 = MuLayerNorm(width, len(generators))
        self.fc1 = MuLinear(width, MLP_RATIO * width, generators)
        self.fc2 = MuLinear(MLP_RATIO * width, width, generators)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.norm1(h))
        return h + per_token(self.fc2, torch.relu(per_token(self.fc1, self.norm2(h))))


class ViT(nn.Module):
    """patches (p x p) - MuLinear(N) + position - depth x Block - LN - mean over tokens - readout."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int,
        depth: int,
        heads: int,
        patch: int,
        generators: Sequence[torch.Generator],
    ) -> None:
        super().__init__()
        height, wide, channels = input_shape
        if height % patch or wide % patch:
            raise ValueError(f"ViT needs image sides divisible by the patch size {patch}, got {input_shape}")
        if width % heads:
            raise ValueError(f"ViT width {width} is not divisible by its {heads} heads")
        self.width, self.patch = width, patch
        self.embed = MuLinear(patch * patch * channels, width, generators)
        self.position = _normal(((height // patch) * (wide // patch), width), generators)  # (K, T, N)
        self.blocks = nn.ModuleList(Block(width, heads, generators) for _ in range(depth))
        self.norm = MuLayerNorm(width, len(generators))
        self.readout = MuReadout(width, num_classes, generators)
        # The layers whose inputs are hidden features: each block's post-ReLU MLP features, (K, B * T, 4N)
        # with every token a sample (``probes.FeatureSparsityProbe``).
        self.feature_stages = tuple(f"blocks.{i}.fc2" for i in range(depth))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W, C) -> their flattened patches (B * T, p * p * C), row-major over the patches."""
        batch, height, wide, channels = x.shape
        p = self.patch
        patches = x.reshape(batch, height // p, p, wide // p, p, channels).transpose(2, 3)
        return patches.reshape(-1, p * p * channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm's output averaged over the tokens, (K, B, N), for images x of shape (B, H, W, C)."""
        h = self.embed(self.tokens(x))  # (K, B * T, N): the patches are shared by the members
        h = h.unflatten(1, (len(x), -1)) + self.position.unsqueeze(1)  # (K, B, T, N)
        for block in self.blocks:
            h = block(h)
        return self.norm(h).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


# Default pack: 8 cells. A cell of width N and depth D holds 12 N^2 D weights (4.8 M at N = 256,
# D = 6). Activations dominate: on CIFAR with 4 x 4 patches (T = 64 tokens), N = 256, 8 heads,
# D = 6, the tensors saved for the backward pass measure 18 MB per image in float32
# (torch.autograd.graph.saved_tensors_hooks, an upper bound), 2.3 GB per cell at batch 128: <= 20 GB
# per pack of 8 in float32 with 4 copies of the weights (0.08 GB per cell), twice that in float64.
def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    generators: Sequence[torch.Generator],
    width: int,
    depth: int,
    heads: int,
    patch: int,
) -> ViT:
    return ViT(input_shape, num_classes, width, depth, heads, patch, generators)
