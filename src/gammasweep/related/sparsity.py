"""Sparsity metrics of *SGD with Large Step Sizes Learns Sparse Features* (Andriushchenko et al.,
ICML 2023; ``docs/related.md``, part A). All take and return NumPy arrays, float64."""

from __future__ import annotations

import numpy as np


def feature_sparsity(features: np.ndarray, threshold: float = 0.99) -> float:
    """Feature sparsity of a post-ReLU feature matrix (n samples x m units); lower is sparser.

    Units never active are dropped; then, greedily in column order, a unit whose |Pearson
    correlation| with an already kept unit exceeds ``threshold`` (0.99 toy, 0.95 deep) is dropped
    as a duplicate (a constant unit has no correlation: it is kept and never drops another).
    Sparsity = nonzero entries of the kept columns / (n * m), m = all units. O(m^2) memory.
    """
    phi = np.asarray(features, np.float64)
    n, m = phi.shape
    active = phi[:, np.any(phi != 0, axis=0)]
    varying = active.std(0) > 0
    duplicate = np.zeros((active.shape[1],) * 2, dtype=bool)
    if varying.sum() > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            duplicate[np.ix_(varying, varying)] = np.abs(np.corrcoef(active[:, varying], rowvar=False)) > threshold
    kept = np.zeros(active.shape[1], dtype=bool)
    for j in range(active.shape[1]):
        kept[j] = not duplicate[j, :j][kept[:j]].any()
    return float(np.count_nonzero(active[:, kept])) / (n * m)


def jacobian_rank(jacobian: np.ndarray, relative_threshold: float = 1e-15) -> int:
    """Numerical rank: singular values with sigma_k / sigma_1 above the threshold (1e-15 for the
    diagonal linear net's phi = [X diag(v), X diag(u)], 1e-4 for the ReLU teacher-student)."""
    sigma = np.linalg.svd(np.asarray(jacobian, np.float64), compute_uv=False)
    return int(np.sum(sigma > relative_threshold * sigma[0])) if sigma.size and sigma[0] > 0 else 0


def diagonal_net_jacobian(x: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Jacobian (n x 2d) of h(x) = <u * v, x> over the n inputs x (n x d) w.r.t. (u, v): [X diag(v), X diag(u)]."""
    return np.concatenate([x * v, x * u], axis=1)


def support_size(u: np.ndarray, v: np.ndarray, tolerance: float = 1e-50) -> int:
    """||u * v||_0: coordinates of the diagonal net's linear predictor with |u_i v_i| above ``tolerance``."""
    return int(np.sum(np.abs(np.asarray(u, np.float64) * np.asarray(v, np.float64)) > tolerance))
