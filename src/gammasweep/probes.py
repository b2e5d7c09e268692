"""Probes: quantities measured on the weights during training, at the test-evaluation steps.

A probe reads the weights and never writes them, and draws its random numbers from its own
generators, so a run with probes follows exactly the trajectory of the same run without them.
Probes are switched on per experiment (``training: {probes: {...}}`` in the config); a probe that
is off is recorded as NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Weights = dict[str, torch.Tensor]  # stacked weights: every tensor has the rows (members) first


@dataclass(frozen=True)
class SharpnessProbe:
    """The top Hessian eigenvalue of the training loss on a fixed batch: the first ``examples``
    test images (the same for every run of a dataset), by power iteration: ``iterations`` steps in
    each of its two phases (``top_hessian_eigenvalue``)."""

    examples: int = 256
    iterations: int = 20


def row_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-row inner product of two stacked parameter lists: (rows,)."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(rows,) values shaped to broadcast against a stacked tensor ``like`` (rows, ...)."""
    return values.view(-1, *[1] * (like.dim() - 1))


def start_vectors(weights: Weights, row_seeds: Sequence[int]) -> list[torch.Tensor]:
    """Unit random directions, one per row, each drawn from a generator seeded by that row's entry
    of ``row_seeds`` alone: a member's result does not depend on which others share its chunk."""
    rows = []
    for seed in row_seeds:
        gen = torch.Generator().manual_seed(seed)
        rows.append([torch.randn(w.shape[1:], generator=gen, dtype=torch.float64) for w in weights.values()])
    vectors = [torch.stack(parts).to(w.device, w.dtype) for parts, w in zip(zip(*rows), weights.values())]
    norm = row_dot(vectors, vectors).sqrt()
    return [v / per_row(norm, v) for v in vectors]


def top_hessian_eigenvalue(loss_of: Callable[[Weights], torch.Tensor], weights: Weights, iterations: int,
                           row_seeds: Sequence[int]) -> torch.Tensor:
    """Per row, the top (largest algebraic) eigenvalue of the Hessian of ``loss_of(weights)[row]``
    with respect to that row's weights, by power iteration on Hessian-vector products (rows,).

    ``loss_of`` maps stacked weights to per-row losses (rows,). Rows are independent, so one
    double-backward pass of their sum gives every row's Hessian-vector product at once. Power
    iteration finds the eigenvalue of largest magnitude, lambda_1; where that is negative (a saddle,
    as at init in the rich regime) a second run on H - lambda_1 I, whose spectrum is >= 0, finds the
    top one. Rows with lambda_1 >= 0 spend the second run refining it. 2 x ``iterations`` products.
    """
    params = {k: w.detach().requires_grad_() for k, w in weights.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_of(params).sum(), list(params.values()), create_graph=True)
        start = start_vectors(params, row_seeds)
        no_shift = torch.zeros(len(row_seeds), dtype=grads[0].dtype, device=grads[0].device)
        largest, vectors = _power_iteration(grads, params, start, no_shift, iterations)
        shift = largest.clamp(max=0.0)
        vectors = [torch.where(per_row(shift < 0, s), s, v) for s, v in zip(start, vectors)]
        shifted, _ = _power_iteration(grads, params, vectors, shift, iterations)
    return (shifted + shift).detach()


def _power_iteration(grads: Sequence[torch.Tensor], params: Weights, vectors: list[torch.Tensor], shift: torch.Tensor,
                     iterations: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``iterations`` steps of power iteration on H - shift I (shift: (rows,)) from unit ``vectors``:
    the dominant eigenvalue per row (Rayleigh quotient) and the last unit vectors."""
    eigenvalue = torch.zeros_like(shift)
    for _ in range(iterations):
        products = torch.autograd.grad(grads, list(params.values()), grad_outputs=vectors, retain_graph=True)
        products = [p - per_row(shift, p) * v for p, v in zip(products, vectors)]
        eigenvalue = row_dot(vectors, products)  # the vectors have unit norm
        norm = row_dot(products, products).sqrt().clamp_min(torch.finfo(eigenvalue.dtype).tiny)
        vectors = [p.detach() / per_row(norm, p) for p in products]
    return eigenvalue.detach(), vectors
