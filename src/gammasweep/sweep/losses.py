"""Losses per member: centered, gamma-scaled outputs f of shape (..., B, C) and integer labels (B,)
give one loss per leading index, shape (...)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over batch x classes of (f - onehot(labels))^2, as in the authors' code."""
    target = F.one_hot(labels, f.shape[-1]).to(f.dtype)
    return ((f - target) ** 2).mean((-2, -1))


def mse_summed(f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the classes, mean over the batch: the authors' test MSE
    (vision_tasks.py ``test_model``: ``MSELoss(reduction='sum')`` over the test set / its size), C times
    ``mse``, their training loss."""
    target = F.one_hot(labels, f.shape[-1]).to(f.dtype)
    return ((f - target) ** 2).sum(-1).mean(-1)


def cross_entropy(f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of logits f, mean over the batch."""
    log_p = f.log_softmax(-1).gather(-1, labels.expand(f.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return -log_p.mean(-1)


LOSSES: dict[str, Loss] = {"mse": mse, "cross_entropy": cross_entropy}  # training: SGD's objective
TEST_LOSSES: dict[str, Loss] = {"mse": mse_summed, "cross_entropy": cross_entropy}  # the recorded test loss
