"""The optimizers of a sweep, applied to stacked members in place: plain SGD (the paper's), SignSGD
and Adam (the paper's appendix variants).

Learning rates come from ``gammasweep.sweep.parameterization``: SGD moves every tensor with lr = N eta;
the sign-based optimizers move every entry by about the same amount whatever its gradient's size,
so their rate is eta times a per-tensor factor (``update_scales``) that keeps each layer's feature
updates width-independent (muP for such updates).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gammasweep.sweep.settings import OptimizerSettings

Weights = dict[str, torch.Tensor]  # stacked: every tensor has the rows (members) first


class Optimizer(OptimizerSettings):
    """The optimizer of ``OptimizerSettings`` (``gammasweep.sweep.settings``), applied to stacked members."""

    def state(self, weights: Weights) -> Weights:
        """The optimizer's state, stacked like ``weights``: Adam's moments ('m:<name>', 'v:<name>',
        zero at the start); nothing for SGD and SignSGD."""
        if self.name != "adam":
            return {}
        return {f"{moment}:{name}": torch.zeros_like(w) for moment in ("m", "v") for name, w in weights.items()}

    def apply(
        self,
        weights: Weights,
        grads: Sequence[torch.Tensor],
        state: Weights,
        step: torch.Tensor,
        scales: dict[str, float],
        t: int,
    ) -> None:
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
