"""The Section-4 toy model: a width-1, depth-L linear network on one example with target 1.

With weights w_1..w_L (init 1) the centered, gamma-scaled output is f(w) = (prod_i w_i - 1) / gamma.
MSE: loss = (f - 1)^2 / 2. CE: loss = -p1 log sigmoid(f) - p0 log(1 - sigmoid(f)), p0 = 1 / (1 + e),
minimized at f = 1 too. The minimizer has prod w = 1 + gamma. Closed forms below are for balanced
weights; ``simulate_toy`` runs plain GD on the L separate weights (learning rate eta, width 1),
``toy_cube`` runs it over a (gamma, eta) grid and stores the result with the theory lines (Fig. 7).
Loss names are the project's (``gammasweep.sweep.losses``): "mse" and "cross_entropy".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

P0 = 1.0 / (1.0 + np.e)  # CE target weight of class 0; the CE minimum sits at f = log(p1 / p0) = 1
LOSSES = ("mse", "cross_entropy")


def check_loss(loss: str) -> str:
    """``loss`` if the toy knows it (one of ``LOSSES``), else ValueError."""
    if loss not in LOSSES:
        raise ValueError(f"unknown toy loss {loss!r}; known: {list(LOSSES)}")
    return loss


def sharpness_at_minimum(gamma: np.ndarray | float, depth: int, loss: str = "mse") -> np.ndarray:
    """Top Hessian eigenvalue at the balanced minimum: c L (1 + gamma)^(2 - 2/L) / gamma^2.

    c = 1 for MSE and sigma'(1) = p0 p1 for CE. Units: 1 / eta.
    """
    curvature = 1.0 if check_loss(loss) == "mse" else P0 * (1.0 - P0)
    gamma = np.asarray(gamma, dtype=np.float64)
    return curvature * depth * (1.0 + gamma) ** (2.0 - 2.0 / depth) / gamma**2


def eta_max(gamma: np.ndarray | float, depth: int, loss: str = "mse") -> np.ndarray:
    """The divergence edge. MSE: the linear-stability edge at the minimum, 2 / sharpness, ~ gamma^2
    (lazy), ~ gamma^(2/L) (rich). Cross-entropy: the same edge for gamma > 1 (rich), and below it the
    bounded-gradient edge ``ce_lazy_edge`` ~ gamma (the loss is not quadratic there: a step far past the
    minimum moves the weights by at most eta/gamma, whatever the curvature)."""
    curvature_edge = 2.0 / sharpness_at_minimum(gamma, depth, loss)
    if loss == "mse":
        return curvature_edge
    gamma = np.asarray(gamma, dtype=np.float64)
    return np.where(gamma > 1.0, curvature_edge, ce_lazy_edge(depth) * gamma)


def ce_lazy_edge(depth: int) -> float:
    """a_L with eta_max = a_L gamma for cross-entropy at gamma << 1, from the balanced map at small gamma.

    There the output saturates the loss's slope: a step from just below the minimum (slope -p1) carries
    w from 1 to 1 + a p1 (a = eta / gamma); the step back (slope p0) multiplies w by 1 - a p0 w^(L-2),
    and GD blows up once that factor is below -1: a p0 (1 + a p1)^(L-2) = 2. Exact for L = 2
    (a = 2 / p0); for L = 3..6 within 15% of the simulated edge (tests/unit/test_theory.py).
    """
    p1 = 1.0 - P0
    lo, hi = 0.0, 2.0 / P0  # the left side grows with a; at 2 / p0 it is >= 2
    for _ in range(100):  # bisection to float precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mid * P0 * (1.0 + mid * p1) ** (depth - 2) < 2.0 else (lo, mid)
    return hi


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
    if check_loss(loss) == "mse":
        return 0.5 * (f - 1.0) ** 2, f - 1.0
    sig = 0.5 * (1.0 + np.tanh(0.5 * f))  # overflow-free sigmoid
    log_sig, log_1m = -np.logaddexp(0.0, -f), -np.logaddexp(0.0, f)
    return -(1.0 - P0) * log_sig - P0 * log_1m, sig - (1.0 - P0)


def simulate_toy(
    gammas: np.ndarray, etas: np.ndarray, depth: int, steps: int, loss: str = "mse", blowup: float = 1e6
) -> tuple[np.ndarray, np.ndarray]:
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


def minimum_loss(loss: str) -> float:
    """The toy's loss at its minimum f = 1: 0 for MSE, the target entropy H(p0) for CE."""
    return float(_loss_and_output_grad(np.float64(1.0), loss)[0])


def divergence_edge(etas: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """The edge of a diverged mask (..., eta) over increasing ``etas``: per row, the largest eta
    below which nothing diverged (the last eta if nothing did); NaN if the smallest eta diverges."""
    etas, diverged = np.asarray(etas, np.float64), np.asarray(diverged, bool)
    first = np.where(diverged.any(axis=-1), diverged.argmax(axis=-1), len(etas))
    return np.where(first > 0, etas[np.maximum(first - 1, 0)], np.nan)


def measured_eta_max(
    gammas: np.ndarray, depth: int, steps: int, loss: str = "mse", etas: np.ndarray | None = None
) -> np.ndarray:
    """The divergence edge of GD on the toy: per gamma, the largest eta of an increasing log grid
    (default 20 per decade, 1e-14..1e8) below which no run diverges. NaN if the smallest eta diverges."""
    gammas = np.asarray(gammas, np.float64)
    etas = np.logspace(-14, 8, 22 * 20 + 1) if etas is None else np.sort(np.asarray(etas, np.float64))
    _, diverged = simulate_toy(gammas[:, None], etas[None, :], depth, steps, loss)
    return divergence_edge(etas, diverged)


_TOY_ATTRS = {
    "final_loss": ("toy loss after the last GD step, NaN if the run diverged", "1"),
    "diverged": ("|f| exceeded 1e6 or turned non-finite during the run", "1"),
    "eta_max_theory": (
        "divergence edge: 2 / sharpness at the minimum; for CE below gamma = 1 the bounded-gradient edge",
        "1",
    ),
    "eta_min_theory": ("smallest eta escaping the plateau within the run's steps, gamma tau* / T", "1"),
    "eta_crit_theory": ("catapult onset, 2 / MSE sharpness at init (NaN for cross-entropy)", "1"),
    "eta_max_measured": ("largest grid eta below which no run diverged (NaN if the smallest diverges)", "1"),
}


def toy_cube(gammas: Sequence[float], etas: Sequence[float], depth: int, steps: int, loss: str) -> xr.Dataset:
    """GD on the toy over the whole (gamma, eta) grid (float64, ``simulate_toy``) as a Dataset.

    Coordinates gamma and eta are sorted ascending. Variables: ``final_loss`` and ``diverged`` over
    (gamma, eta); per gamma the theory lines ``eta_max_theory``, ``eta_min_theory`` (for ``steps``)
    and ``eta_crit_theory`` (MSE only: all NaN for cross-entropy, whose init sharpness has no closed
    form here), and the measured divergence edge ``eta_max_measured``. Learning rates in units of
    eta, losses dimensionless. Memory: simulate_toy holds a few (gamma, eta, depth) float64 arrays.
    """
    check_loss(loss)
    gammas, etas = np.sort(np.asarray(gammas, np.float64)), np.sort(np.asarray(etas, np.float64))
    final, diverged = simulate_toy(gammas[:, None], etas[None, :], depth, steps, loss)
    crit = eta_crit(gammas, depth) if loss == "mse" else np.full(len(gammas), np.nan)
    grid, line = ("gamma", "eta"), ("gamma",)
    cube = xr.Dataset(
        {
            "final_loss": (grid, final),
            "diverged": (grid, diverged),
            "eta_max_theory": (line, eta_max(gammas, depth, loss)),
            "eta_min_theory": (line, eta_min(gammas, depth, steps)),
            "eta_crit_theory": (line, crit),
            "eta_max_measured": (line, divergence_edge(etas, diverged)),
        },
        coords={"gamma": gammas, "eta": etas},
    )
    for name, (long_name, units) in _TOY_ATTRS.items():
        cube[name].attrs.update(long_name=long_name, units=units)
    cube["gamma"].attrs.update(long_name="feature-learning strength gamma", units="1")
    cube["eta"].attrs.update(long_name="GD learning rate eta", units="1")
    cube.attrs.update(
        Conventions="CF-1.8",
        model="toy",
        loss=loss,
        depth=int(depth),
        steps=int(steps),
        minimum_loss=minimum_loss(loss),
    )
    return cube


def divergence_slopes(loss: str, optimizer: str = "sgd", depth: int | None = None) -> tuple[float, float]:
    """(lazy, rich) exponents of the divergence edge, eta_max ~ gamma^slope, for gamma << 1 and >> 1:
    SGD with MSE gamma^2 and gamma^(2/L) (``eta_max``); with cross-entropy the bounded gradient makes
    the lazy edge gamma^1; SignSGD and Adam, whose steps do not scale with the gradient, gamma^1 and
    gamma^(1/L) (the paper's appendix). The rich slope is NaN without a depth L."""
    check_loss(loss)
    sign_based = optimizer != "sgd"
    lazy = 1.0 if sign_based or loss == "cross_entropy" else 2.0
    rich = (1.0 if sign_based else 2.0) / depth if depth else np.nan
    return lazy, rich


def reference_line(gammas: np.ndarray, anchor_gamma: float, anchor_eta: float, exponent: float) -> np.ndarray:
    """eta = anchor_eta (gamma / anchor_gamma)^exponent: a guide line through one point of a figure."""
    return anchor_eta * (np.asarray(gammas, np.float64) / anchor_gamma) ** exponent
