"""Quantities read off a cube: final metrics, the divergence edge eta_max(gamma), the best eta*(gamma),
and power-law fits in the lazy and rich regimes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from gammasweep.adaptive import TRAINED

HIGHER_IS_BETTER = {"test_accuracy": True, "test_loss": False, "train_loss": False}


def cell_diverged(cube: xr.Dataset) -> xr.DataArray:
    """(gamma, eta) mask: a cell counts as diverged if any of its seeds diverged."""
    return cube["diverged"].any("seed")


def final_metric(cube: xr.Dataset, metric: str = "test_loss") -> xr.DataArray:
    """(gamma, eta): the seed mean of ``metric`` at the last recorded step; NaN for diverged cells."""
    time_dim = "eval_step" if metric.startswith("test") else "step"
    value = cube[metric].isel({time_dim: -1}).mean("seed")
    return value.where(~cell_diverged(cube))


def eta_max(cube: xr.Dataset) -> xr.DataArray:
    """(gamma,): the divergence edge, the largest eta below which no cell of that gamma diverged."""
    diverged = cell_diverged(cube).sortby("eta").values
    etas = cube["eta"].sortby("eta").values
    edge = np.full(len(cube["gamma"]), np.nan)
    for i, row in enumerate(diverged):
        first = int(row.argmax()) if row.any() else len(etas)
        if first > 0:
            edge[i] = etas[first - 1]
    return xr.DataArray(edge, coords={"gamma": cube["gamma"]}, dims="gamma", name="eta_max")


def eta_star(cube: xr.Dataset, metric: str = "test_loss") -> xr.DataArray:
    """(gamma,): the eta with the best final ``metric`` (over non-diverged cells); NaN if all diverged."""
    value = final_metric(cube, metric)
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    scores = (sign * value).fillna(np.inf).values
    best = np.where(np.isfinite(scores).any(axis=1), cube["eta"].values[scores.argmin(axis=1)], np.nan)
    return xr.DataArray(best, coords={"gamma": cube["gamma"]}, dims="gamma", name=f"eta_star_{metric}")


def adaptive_cost(cube: xr.Dataset) -> dict[str, int]:
    """Cells and cell-steps (cells x SGD steps, every seed of a cell counted once) of a cube's
    experiment: trained at full length, spent on bracketing runs, and what the full grid costs."""
    steps = int(json.loads(cube.attrs["cell_params"])["steps"])
    trained = int((cube["cell_status"] == TRAINED).sum())
    bracket_cells = int(cube["bracket_cells"].sum()) if "bracket_cells" in cube else 0
    bracket_steps = int(cube.attrs.get("bracket_steps", 0))
    grid = cube.sizes["gamma"] * cube.sizes["eta"]
    return {"trained_cells": trained, "grid_cells": grid, "bracket_cells": bracket_cells,
            "cell_steps": trained * steps + bracket_cells * bracket_steps, "full_cell_steps": grid * steps}


@dataclass(frozen=True)
class PowerLaw:
    """eta = 10^intercept * gamma^slope fitted over gamma in [gamma_min, gamma_max] on ``points`` points."""

    slope: float
    intercept: float
    gamma_min: float
    gamma_max: float
    points: int

    def __call__(self, gamma: np.ndarray) -> np.ndarray:
        return 10.0**self.intercept * np.asarray(gamma, np.float64) ** self.slope


def fit_power_law(gammas: np.ndarray, etas: np.ndarray, gamma_min: float, gamma_max: float) -> PowerLaw:
    """Least-squares line in log10-log10 space through the finite points with gamma in [min, max]."""
    gammas, etas = np.asarray(gammas, np.float64), np.asarray(etas, np.float64)
    use = (gammas >= gamma_min) & (gammas <= gamma_max) & np.isfinite(etas) & (etas > 0)
    if use.sum() < 2:
        return PowerLaw(np.nan, np.nan, gamma_min, gamma_max, int(use.sum()))
    slope, intercept = np.polyfit(np.log10(gammas[use]), np.log10(etas[use]), 1)
    return PowerLaw(float(slope), float(intercept), gamma_min, gamma_max, int(use.sum()))
