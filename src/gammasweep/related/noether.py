"""Noise-equilibrium quantities of *Parameter Symmetry and Noise Equilibrium of SGD* (Ziyin et al.,
NeurIPS 2024; ``docs/related.md``, part B) for a two-layer linear net f(x) = U W x with the
loss ||U W x - y||^2 (no 1/2). Shapes: W (d, d0), U (d2, d), x (n, d0), y (n, d2). float64."""

from __future__ import annotations

import numpy as np


def noether_charge(u: np.ndarray, w: np.ndarray) -> float:
    """C = ||U||_F^2 - ||W||_F^2, conserved by gradient flow under the rescaling U -> U/(1+r), W -> (1+r) W."""
    return float(np.sum(np.square(u)) - np.sum(np.square(w)))


def noise_matrices(u: np.ndarray, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample estimates of Gamma_W = E[||r||^2 x x^T] (d0 x d0) and Gamma_U = E[||x||^2 r r^T] (d2 x d2),
    r = U W x - y, over the n rows of x and y."""
    r = x @ w.T @ u.T - y
    gamma_w = np.einsum("n,ni,nj->ij", np.sum(r**2, 1), x, x) / len(x)
    gamma_u = np.einsum("n,ni,nj->ij", np.sum(x**2, 1), r, r) / len(x)
    return gamma_w, gamma_u


def relative_gap(matrix, reference):
    """||matrix - reference||_F / ||reference||_F over the last two axes (batched over the others);
    NumPy arrays or torch tensors alike."""

    def frobenius(m):
        return (m * m).sum(axis=(-2, -1)) ** 0.5

    return frobenius(matrix - reference) / frobenius(reference)


def equilibrium_gap(u: np.ndarray, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """||U^T Gamma_U U - W Gamma_W W^T||_F / ||U^T Gamma_U U||_F: 0 at SGD's noise equilibrium."""
    gamma_w, gamma_u = noise_matrices(u, w, x, y)
    return float(relative_gap(w @ gamma_w @ w.T, u.T @ gamma_u @ u))


def hessian_trace(u, w, sigma_x):
    """Tr of the Hessian of E||U W x - y||^2 / 2 per the paper: S = d2 ||W Sigma_x^(1/2)||_F^2 + ||U||_F^2 Tr Sigma_x,
    for U (..., d2, d), W (..., d, d0) and Sigma_x (d0, d0), batched over the leading axes; NumPy arrays
    or torch tensors alike. (The Hessian of the loss without the 1/2 is twice this.)"""
    d2 = u.shape[-2]
    return d2 * ((w @ sigma_x) * w).sum(axis=(-2, -1)) + (u * u).sum(axis=(-2, -1)) * sigma_x.diagonal().sum()
