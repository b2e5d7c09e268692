"""The Section-4 toy model: a width-1, depth-L linear network on one example with target 1.

With weights w_1..w_L (init 1) the centered, gamma-scaled output is f(w) = (prod_i w_i - 1) / gamma.
MSE: loss = (f - 1)^2 / 2. CE: loss = -p1 log sigmoid(f) - p0 log(1 - sigmoid(f)), p0 = 1 / (1 + e),
minimized at f = 1 too. The minimizer has prod w = 1 + gamma. Closed forms below are for balanced
weights; ``simulate_toy`` runs plain GD on the L separate weights (learning rate eta, width 1).
"""

from __future__ import annotations

import numpy as np

P0 = 1.0 / (1.0 + np.e)  # CE target weight of class 0; the CE minimum sits at f = log(p1 / p0) = 1


def sharpness_at_minimum(gamma: np.ndarray | float, depth: int, loss: str = "mse") -> np.ndarray:
    """Top Hessian eigenvalue at the balanced minimum: c L (1 + gamma)^(2 - 2/L) / gamma^2.

    c = 1 for MSE and sigma'(1) = p0 p1 for CE. Units: 1 / eta.
    """
    curvature = 1.0 if loss == "mse" else P0 * (1.0 - P0)
    gamma = np.asarray(gamma, dtype=np.float64)
    return curvature * depth * (1.0 + gamma) ** (2.0 - 2.0 / depth) / gamma**2


def eta_max(gamma: np.ndarray | float, depth: int, loss: str = "mse") -> np.ndarray:
    """Linear-stability edge at the minimum, 2 / sharpness: ~ gamma^2 (lazy), ~ gamma^(2/L) (rich)."""
    return 2.0 / sharpness_at_minimum(gamma, depth, loss)


def sharpness_at_init(gamma: np.ndarray | float, depth: int) -> np.ndarray:
    """MSE Hessian's top eigenvalue at init (w = 1, f = 0): max(L/gamma^2 - (L-1)/gamma, 1/gamma)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    return np.maximum(depth / gamma**2 - (depth - 1) / gamma, 1.0 / gamma)


def eta_crit(gamma: np.ndarray | float, depth: int) -> np.ndarray:
    """2 / sharpness at init: above it the first steps are unstable (catapult onset), ~ gamma^2 / L."""
    return 2.0 / sharpness_at_init(gamma, depth)


def plateau_escape_time(gamma: np.ndarray | float, depth: int) -> np.ndarray:
    """Rescaled time tau = eta t / gamma for dw/dtau = w^(L-1) to carry w from 1 to (1 + gamma)^(1/L)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    if depth == 2:
        return 0.5 * np.log1p(gamma)
    return (1.0 - (1.0 + gamma) ** ((2.0 - depth) / depth)) / (depth - 2)


def eta_min(gamma: np.ndarray | float, depth: int, steps: int) -> np.ndarray:
    """Smallest eta that escapes the plateau within ``steps`` steps: gamma tau* / T, ~ gamma / T."""
    return np.asarray(gamma, dtype=np.float64) * plateau_escape_time(gamma, depth) / steps


def _loss_and_output_grad(f: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Loss and dloss/df for the toy's output f."""
    if loss == "mse":
        return 0.5 * (f - 1.0) ** 2, f - 1.0
    sig = 0.5 * (1.0 + np.tanh(0.5 * f))  # overflow-free sigmoid
    log_sig, log_1m = -np.logaddexp(0.0, -f), -np.logaddexp(0.0, f)
    return -(1.0 - P0) * log_sig - P0 * log_1m, sig - (1.0 - P0)


def simulate_toy(gammas: np.ndarray, etas: np.ndarray, depth: int, steps: int, loss: str = "mse",
                 blowup: float = 1e6) -> tuple[np.ndarray, np.ndarray]:
    """GD on L scalar weights (init 1) for every (gamma, eta) pair at once, in float64.

    gammas, etas: broadcastable arrays. Returns (final loss, diverged), both of the broadcast shape;
    a run diverges when |f| exceeds ``blowup`` or turns non-finite (its loss is then NaN).
    """
    gamma, eta = np.broadcast_arrays(np.asarray(gammas, np.float64), np.asarray(etas, np.float64))
    w = np.ones(gamma.shape + (depth,))
    diverged = np.zeros(gamma.shape, bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            prod = np.prod(w, axis=-1)
            f = (prod - 1.0) / gamma
            diverged |= ~np.isfinite(f) | (np.abs(f) > blowup)
            _, dloss = _loss_and_output_grad(f, loss)
            # d prod / d w_i = prod_{j != i} w_j, computed without division (w_i may be 0).
            others = np.stack([np.prod(np.delete(w, i, axis=-1), axis=-1) for i in range(depth)], axis=-1)
            step = (eta * dloss / gamma)[..., None] * others
            w = np.where(diverged[..., None], w, w - step)
        final, _ = _loss_and_output_grad((np.prod(w, axis=-1) - 1.0) / gamma, loss)
    return np.where(diverged, np.nan, final), diverged


def measured_eta_max(gammas: np.ndarray, depth: int, steps: int, loss: str = "mse",
                     etas: np.ndarray | None = None) -> np.ndarray:
    """The divergence edge of GD on the toy: per gamma, the largest eta of an increasing log grid
    (default 20 per decade, 1e-14..1e8) below which no run diverges. NaN if the smallest eta diverges."""
    gammas = np.asarray(gammas, np.float64)
    etas = np.logspace(-14, 8, 22 * 20 + 1) if etas is None else np.sort(np.asarray(etas, np.float64))
    _, diverged = simulate_toy(gammas[:, None], etas[None, :], depth, steps, loss)
    first = np.where(diverged.any(axis=1), diverged.argmax(axis=1), len(etas))
    return np.where(first > 0, etas[np.maximum(first - 1, 0)], np.nan)


def reference_line(gammas: np.ndarray, anchor_gamma: float, anchor_eta: float, exponent: float) -> np.ndarray:
    """eta = anchor_eta (gamma / anchor_gamma)^exponent: a guide line through one point of a figure."""
    return anchor_eta * (np.asarray(gammas, np.float64) / anchor_gamma) ** exponent
