"""The two-parameter toy model of the paper's appendix (A9; ``docs/figures.md``, row A9), a kind of
``gammasweep.related.experiments``: catapult dynamics of GD on two weights.

f~(u, v) = (u v - u0 v0) / gamma on one example with target 1, loss (1/2)(f~ - 1)^2, full-batch
GD in float64 (deterministic: every seed of a variant runs the same trajectory). Init u0 = a,
v0 = 1/a with the imbalance a (``imbalance``): a = 1 is the balanced init of the paper's width-1
net, along which GD keeps u = v and cannot catapult (every minimum it could reach, u = v =
sqrt(1 + gamma), has the same sharpness). With a != 1 the NTK lambda = (u^2 + v^2) / gamma^2 can
fall during training: for eta_crit = 2 / lambda_0 < eta < ~4 / lambda_0 (lazy, gamma << 1) the
loss first grows, the weights move towards balance and GD settles at a minimum flatter than 2 / eta.

All quantities are dimensionless (``units: 1``): gamma, a, eta and the weights are pure numbers;
the sharpness and the NTK are in units of 1 / eta.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xarray as xr

from gammasweep.related.descent import Kind, descend

DEFAULTS = {"gamma": 0.1, "imbalance": 2.0}
ABOUT = {
    "loss": ("loss (1/2)(f~ - 1)^2, f~ = (u v - u0 v0) / gamma", "1"),
    "sharpness": ("top Hessian eigenvalue (closed form)", "1"),
    "ntk": ("NTK (u^2 + v^2) / gamma^2", "1"),
    "u": ("first weight u", "1"),
    "v": ("second weight v", "1"),
}


def ntk_at_init(gamma: float, imbalance: float) -> float:
    """lambda_0 = (a^2 + a^-2) / gamma^2, the NTK ||grad f~||^2 at init u0 = a, v0 = 1/a (units 1/eta)."""
    return (imbalance**2 + imbalance**-2) / gamma**2


def catapult_onset(gamma: float, imbalance: float) -> float:
    """eta_crit = 2 / lambda_0 (a step size, units 1): above it the lazy (linearized) residual grows,
    r_{t+1} = (1 - eta lambda_0) r_t; proportional to gamma^2. Exact as gamma -> 0; the measured
    onset lies below it by a relative O(gamma)."""
    return 2.0 / ntk_at_init(gamma, imbalance)


def lazy_divergence_edge(gamma: float, imbalance: float) -> float:
    """4 / lambda_0 = 2 eta_crit (a step size, units 1): the lazy-regime (gamma -> 0) upper edge of
    the catapult window, where the NTK's update lambda_{t+1} - lambda_t ~ eta r^2 (eta lambda - 4)
    / gamma^2 stops lowering it and GD diverges instead."""
    return 4.0 / ntk_at_init(gamma, imbalance)


def flattest_minimum_sharpness(gamma: float) -> float:
    """2 (1 + gamma) / gamma^2 (units 1/eta): the sharpness (u^2 + v^2) / gamma^2 of the balanced
    minimum u = v = sqrt(1 + gamma), the flattest of the minima u v = 1 + gamma. GD converges to no
    minimum for eta > 2 / this = gamma^2 / (1 + gamma)."""
    return 2.0 * (1.0 + gamma) / gamma**2


def hessian(u: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """The loss's Hessian grad f~ grad f~^T + r grad^2 f~ with r = f~ - 1, shape (*u.shape, 2, 2):
    [[v^2, u v], [u v, u^2]] / gamma^2 + r [[0, 1], [1, 0]] / gamma."""
    residual = (u * v - 1.0) / gamma - 1.0  # u0 v0 = 1 for every imbalance
    off = u * v / gamma**2 + residual / gamma
    return torch.stack([torch.stack([v * v / gamma**2, off], -1), torch.stack([off, u * u / gamma**2], -1)], -2)


def sharpness(u: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """The top eigenvalue of ``hessian`` (units 1/eta), shape u.shape: the exact 2x2 one,
    (h11 + h22) / 2 + sqrt(((h11 - h22) / 2)^2 + h12^2)."""
    h = hessian(u, v, gamma)
    mean, half_gap = (h[..., 0, 0] + h[..., 1, 1]) / 2, (h[..., 0, 0] - h[..., 1, 1]) / 2
    return mean + torch.sqrt(half_gap**2 + h[..., 0, 1] ** 2)


def simulate(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """GD on R = len(seeds) copies of the two-weight model with step sizes lr (R, steps); dims
    (run, step). The seeds and the data seed change nothing (one example, a fixed init)."""
    gamma, a = float(settings["gamma"]), float(settings["imbalance"])
    runs = lr.shape[0]
    params = {"u": torch.full((runs,), a, dtype=torch.float64), "v": torch.full((runs,), 1.0 / a, dtype=torch.float64)}

    def loss(p: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        return 0.5 * ((p["u"] * p["v"] - 1.0) / gamma - 1.0).square()

    def record(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u, v = p["u"], p["v"]
        return {
            "loss": loss(p, 0),
            "sharpness": sharpness(u, v, gamma),
            "ntk": (u * u + v * v) / gamma**2,
            "u": u,
            "v": v,
        }

    ds = descend(params, loss, lr, record_steps, record, log=log).dataset(ABOUT)
    # Per run, not per problem: variants with other settings (gamma, a) are simulated apart.
    for name, value, long_name in [
        ("ntk_at_init", ntk_at_init(gamma, a), "lambda_0 = (a^2 + a^-2) / gamma^2"),
        ("catapult_onset", catapult_onset(gamma, a), "eta_crit = 2 / lambda_0"),
    ]:
        ds[name] = ("run", np.full(runs, value))
        ds[name].attrs.update(long_name=long_name, units="1")
    return ds


TOY_CATAPULT = Kind(DEFAULTS, simulate)
