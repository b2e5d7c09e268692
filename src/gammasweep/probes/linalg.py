"""The linear algebra under the probes, for every row (member) of stacked weights at once:
Hessian- and Gauss-Newton-vector products, power iteration for the top eigenvalue, Hutchinson's
trace estimator and Lanczos quadrature of the spectral density. Each row draws its random vectors
from its own seed, so a member's result does not depend on which others share its chunk."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Weights = dict[str, torch.Tensor]  # stacked weights: every tensor has the rows (members) first


def row_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-row inner product of two stacked parameter lists: (rows,)."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(rows,) values shaped to broadcast against a stacked tensor ``like`` (rows, ...)."""
    return values.view(-1, *[1] * (like.dim() - 1))


def random_vectors(weights: Weights, row_seeds: Sequence[int], rademacher: bool = False) -> list[torch.Tensor]:
    """Random directions shaped like the stacked ``weights``, one per row, each drawn from a generator
    seeded by that row's entry of ``row_seeds`` alone (a member's result does not depend on which
    others share its chunk): standard Gaussian entries, or random signs +-1 (``rademacher``)."""
    rows = []
    for seed in row_seeds:
        gen = torch.Generator().manual_seed(seed)
        draws = [torch.randn(w.shape[1:], generator=gen, dtype=torch.float64) for w in weights.values()]
        rows.append([d.sign() for d in draws] if rademacher else draws)
    return [torch.stack(parts).to(w.device, w.dtype) for parts, w in zip(zip(*rows), weights.values())]


def start_vectors(weights: Weights, row_seeds: Sequence[int]) -> list[torch.Tensor]:
    """Unit random directions, one per row (``random_vectors``, normalized per row)."""
    vectors = random_vectors(weights, row_seeds)
    norm = row_dot(vectors, vectors).sqrt()
    return [v / per_row(norm, v) for v in vectors]


class Hessian:
    """Hessian-vector products of ``loss_of(weights)[row]`` with respect to that row's weights, for
    every row at once: rows are independent, so one double-backward pass of their summed losses
    gives each row's product. Use inside ``torch.enable_grad()``."""

    def __init__(self, loss_of: Callable[[Weights], torch.Tensor], weights: Weights) -> None:
        self.params = {k: w.detach().requires_grad_() for k, w in weights.items()}
        self.grads = torch.autograd.grad(loss_of(self.params).sum(), list(self.params.values()), create_graph=True)

    def __call__(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        products = torch.autograd.grad(
            self.grads, list(self.params.values()), grad_outputs=list(vectors), retain_graph=True
        )
        return [p.detach() for p in products]


class GaussNewton:
    """Products with each row's MSE Gauss-Newton matrix G = 2 / (P C) J^T J, J the Jacobian (P C x
    parameters) of the row's outputs ``outputs_of(weights)`` (rows, P, C) with respect to its weights:
    every row at once, each by a Jacobian-vector product (the transpose of a vector-Jacobian product,
    differentiated) and a vector-Jacobian product. G's nonzero eigenvalues are those of the empirical
    NTK J J^T of the batch's P C outputs, times 2 / (P C): the Hessian of the MSE loss (a mean over
    examples and classes) without its residual term. The outputs are the batch's, so a model with
    BatchNorm gets the NTK of its batch function. Use inside ``torch.enable_grad()``."""

    def __init__(self, outputs_of: Callable[[Weights], torch.Tensor], weights: Weights) -> None:
        self.params = {k: w.detach().requires_grad_() for k, w in weights.items()}
        self.outputs = outputs_of(self.params)
        self.scale = 2.0 / (self.outputs.shape[-2] * self.outputs.shape[-1])
        self.dual = torch.zeros_like(self.outputs, requires_grad=True)
        self.pullback = torch.autograd.grad(
            self.outputs, list(self.params.values()), grad_outputs=self.dual, create_graph=True
        )  # J^T dual, linear in dual

    def __call__(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        pushed = torch.autograd.grad(self.pullback, self.dual, grad_outputs=list(vectors), retain_graph=True)[0]  # J v
        products = torch.autograd.grad(
            self.outputs, list(self.params.values()), grad_outputs=pushed * self.scale, retain_graph=True
        )
        return [p.detach() for p in products]


def hutchinson_trace(operator: Hessian | GaussNewton, row_seeds: Sequence[int], vectors: int) -> torch.Tensor:
    """Per row, Hutchinson's unbiased estimate of the operator's trace (rows,): the mean of v^T A v over
    ``vectors`` random sign vectors v (variance 2 sum_{i != j} A_ij^2 / vectors)."""
    total = torch.zeros(len(row_seeds), dtype=torch.float64)
    for k in range(vectors):
        signs = random_vectors(operator.params, [seed * 101 + k for seed in row_seeds], rademacher=True)
        total += row_dot(signs, operator(signs)).double().cpu()
    return total / vectors


def top_hessian_eigenvalue(
    loss_of: Callable[[Weights], torch.Tensor], weights: Weights, iterations: int, row_seeds: Sequence[int]
) -> torch.Tensor:
    """Per row, the top (largest algebraic) eigenvalue of the Hessian of ``loss_of(weights)[row]``
    with respect to that row's weights, by power iteration on Hessian-vector products (rows,).

    ``loss_of`` maps stacked weights to per-row losses (rows,). Power iteration finds the
    eigenvalue of largest magnitude, lambda_1; where that is negative (a saddle, as at init in the
    rich regime) a second run on H - lambda_1 I, whose spectrum is >= 0, finds the top one. Rows
    with lambda_1 >= 0 spend the second run refining it. 2 x ``iterations`` products.
    """
    with torch.enable_grad():
        hessian = Hessian(loss_of, weights)
        start = start_vectors(hessian.params, row_seeds)
        no_shift = torch.zeros(len(row_seeds), dtype=start[0].dtype, device=start[0].device)
        largest, vectors = _power_iteration(hessian, start, no_shift, iterations)
        shift = largest.clamp(max=0.0)
        vectors = [torch.where(per_row(shift < 0, s), s, v) for s, v in zip(start, vectors)]
        shifted, _ = _power_iteration(hessian, vectors, shift, iterations)
    return shifted + shift


def _power_iteration(
    hessian: Hessian, vectors: list[torch.Tensor], shift: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``iterations`` steps of power iteration on H - shift I (shift: (rows,)) from unit ``vectors``:
    the dominant eigenvalue per row (Rayleigh quotient) and the last unit vectors."""
    eigenvalue = torch.zeros_like(shift)
    for _ in range(iterations):
        products = [p - per_row(shift, p) * v for p, v in zip(hessian(vectors), vectors)]
        eigenvalue = row_dot(vectors, products)  # the vectors have unit norm
        norm = row_dot(products, products).sqrt().clamp_min(torch.finfo(eigenvalue.dtype).tiny)
        vectors = [p / per_row(norm, p) for p in products]
    return eigenvalue, vectors


def lanczos_quadrature(
    hessian: Hessian | GaussNewton, start: list[torch.Tensor], steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature of each row's spectral measure seen from its unit ``start`` vector: ``steps``
    Lanczos steps with full reorthogonalization give nodes theta_j and weights tau_j (rows, steps)
    with sum_j tau_j theta_j^k = v^T H^k v exactly for k < 2 x steps (stochastic Lanczos quadrature
    averages this over random v). Nodes are the Ritz values (the largest converge to the top
    eigenvalues first); where the Krylov space is exhausted early (fewer dimensions than steps) the
    rest are NaN with weight 0; a row whose Hessian products overflow is NaN throughout. Memory:
    ``steps`` vectors of the rows' size."""
    rows, dtype = len(start[0]), start[0].dtype
    alphas, betas = torch.zeros(rows, steps, dtype=torch.float64), torch.zeros(rows, steps, dtype=torch.float64)
    krylov, size = torch.full((rows,), steps), torch.zeros(rows, dtype=torch.float64)
    basis, vectors = [], start
    for j in range(steps):
        basis.append(vectors)
        products = hessian(vectors)
        alpha = row_dot(vectors, products)
        for _ in range(2):  # full reorthogonalization against the whole basis, twice (Kahan's rule)
            for q in basis:
                overlap = row_dot(q, products)
                products = [p - per_row(overlap, p) * v for p, v in zip(products, q)]
        beta = row_dot(products, products).sqrt()
        alphas[:, j], betas[:, j] = alpha.double().cpu(), beta.double().cpu()
        size = torch.maximum(size, alphas[:, j].abs() + betas[:, j])  # a running bound on the norm of H
        ended = (betas[:, j] <= math.sqrt(torch.finfo(dtype).eps) * size) & (krylov == steps)
        krylov[ended] = j + 1
        scale = torch.where(beta > 0, 1.0 / beta.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(beta))
        vectors = [p * per_row(scale, p) for p in products]
    nodes, weights = (
        torch.full((rows, steps), math.nan, dtype=torch.float64),
        torch.zeros(rows, steps, dtype=torch.float64),
    )
    for r in range(rows):  # tiny tridiagonal eigenproblems, one per row, in float64 on the CPU
        k = int(krylov[r])
        tridiagonal = torch.diag(alphas[r, :k]) + torch.diag(betas[r, : k - 1], 1) + torch.diag(betas[r, : k - 1], -1)
        if not torch.isfinite(tridiagonal).all():  # a blown-up row (e.g. a catapult's peak): no spectrum, NaN
            continue
        values, eigvecs = torch.linalg.eigh(tridiagonal)
        nodes[r, :k], weights[r, :k] = values, eigvecs[0] ** 2
    return nodes, weights
