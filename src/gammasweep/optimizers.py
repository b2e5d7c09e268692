"""The optimizers of a sweep, applied to stacked members in place: plain SGD (the paper's), SignSGD
and Adam (the paper's appendix variants).

Learning rates come from ``gammasweep.parameterization``: SGD moves every tensor with lr = N eta;
the sign-based optimizers move every entry by about the same amount whatever its gradient's size,
so their rate is eta times a per-tensor factor (``update_scales``) that keeps each layer's feature
updates width-independent (muP for such updates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Weights = dict[str, torch.Tensor]  # stacked: every tensor has the rows (members) first
OPTIMIZERS = ("sgd", "signsgd", "adam")


@dataclass(frozen=True)
class Optimizer:
    """``name`` (one of ``OPTIMIZERS``); Adam's moment decays ``beta1``, ``beta2`` and ``eps``. The
    default eps is far below torch's 1e-8: gradients scale as 1/gamma, and at gamma = 1e5 a
    readout gradient is ~1e-8, where a larger eps would silently turn Adam into SGD."""

    name: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; known: {list(OPTIMIZERS)}")

    def settings(self) -> dict:
        """The resolved settings that shape results: the name, and Adam's constants for Adam."""
        return {"name": self.name, **({"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps} if self.name == "adam" else {})}

    def state(self, weights: Weights) -> Weights:
        """The optimizer's state, stacked like ``weights``: Adam's moments ('m:<name>', 'v:<name>',
        zero at the start); nothing for SGD and SignSGD."""
        if self.name != "adam":
            return {}
        return {f"{moment}:{name}": torch.zeros_like(w) for moment in ("m", "v") for name, w in weights.items()}

    def apply(self, weights: Weights, grads: Sequence[torch.Tensor], state: Weights, step: torch.Tensor,
              scales: dict[str, float], t: int) -> None:
        """Update ``weights`` in place: p += step[row] x scales[name] x direction, where the direction is
        the gradient (SGD), its sign (SignSGD) or Adam's bias-corrected m / (sqrt(v) + eps); ``step``
        (rows,) is minus each row's learning rate, 0 for a row that must not move; ``t``: updates done
        before this one."""
        for (name, p), grad in zip(weights.items(), grads, strict=True):
            if self.name == "sgd":
                direction = grad
            elif self.name == "signsgd":
                direction = grad.sign()
            else:
                m, v = state[f"m:{name}"], state[f"v:{name}"]
                m.mul_(self.beta1).add_(grad, alpha=1.0 - self.beta1)
                v.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
                corrected_v = v / (1.0 - self.beta2 ** (t + 1))
                direction = m / (1.0 - self.beta1 ** (t + 1)) / (corrected_v.sqrt() + self.eps)
            p.addcmul_(direction, (step * scales[name]).view(-1, *[1] * (p.dim() - 1)))
