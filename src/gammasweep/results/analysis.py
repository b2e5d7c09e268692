"""Quantities read off a cube: final metrics, the divergence edge eta_max(gamma), the best eta*(gamma),
and power-law fits in the lazy and rich regimes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from gammasweep.results.records import probe_of
from gammasweep.sweep.adaptive import TRAINED

HIGHER_IS_BETTER = {"test_accuracy": True, "test_loss": False, "train_loss": False}


def cell_diverged(cube: xr.Dataset, step: int | None = None) -> xr.DataArray:
    """(gamma, eta) mask: a cell counts as diverged if any of its seeds diverged -- by eval step ``step``
    if given (diverged_step <= step: a member diverged at step t blew up on the weights after t updates,
    which eval step t measures; the value recorded there is that blow-up, not a result)."""
    diverged = cube["diverged"] if step is None else cube["diverged"] & (cube["diverged_step"] <= step)
    return diverged.any("seed")


def metric_at(cube: xr.Dataset, metric: str, step: int | None = None) -> xr.DataArray:
    """(gamma, eta, seed): ``metric`` at eval step ``step`` (default: the last record). A train-loss
    record has no eval step: at ``step`` T it is the record of the last block before update T."""
    values = cube[metric]
    time_dim = "eval_step" if "eval_step" in values.dims else "step"
    if step is None:
        return values.isel({time_dim: -1})
    return values.sel(eval_step=step) if time_dim == "eval_step" else values.sel(step=step - 1, method="ffill")


def final_metric(cube: xr.Dataset, metric: str = "test_loss", step: int | None = None) -> xr.DataArray:
    """(gamma, eta): the seed mean of ``metric`` at the last recorded step (or at eval step ``step``);
    NaN for cells diverged by then."""
    return metric_at(cube, metric, step).mean("seed").where(~cell_diverged(cube, step))


def eta_max(cube: xr.Dataset, step: int | None = None) -> xr.DataArray:
    """(gamma,): the divergence edge, the largest eta below which no cell of that gamma diverged (by
    eval step ``step`` if given); NaN where the smallest eta diverged. Coordinate ``censored``: nothing
    of that gamma diverged, so the edge shown (the grid's top) is only a lower bound: never fit it as a
    point of a power law (``fit_power_law(..., censored=...)``)."""
    diverged = cell_diverged(cube, step).sortby("eta").values
    etas = cube["eta"].sortby("eta").values
    edge = np.full(len(cube["gamma"]), np.nan)
    for i, row in enumerate(diverged):
        first = int(row.argmax()) if row.any() else len(etas)
        if first > 0:
            edge[i] = etas[first - 1]
    censored = ("gamma", ~diverged.any(axis=1))
    return xr.DataArray(edge, coords={"gamma": cube["gamma"], "censored": censored}, dims="gamma", name="eta_max")


def eta_star(cube: xr.Dataset, metric: str = "test_loss", step: int | None = None) -> xr.DataArray:
    """(gamma,): the eta with the best final ``metric`` (or at eval step ``step``) over non-diverged
    cells; NaN if all diverged."""
    value = final_metric(cube, metric, step)
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    scores = (sign * value).fillna(np.inf).values
    best = np.where(np.isfinite(scores).any(axis=1), cube["eta"].values[scores.argmin(axis=1)], np.nan)
    return xr.DataArray(best, coords={"gamma": cube["gamma"]}, dims="gamma", name=f"eta_star_{metric}")


def at_eta(values: xr.DataArray, etas: xr.DataArray) -> xr.DataArray:
    """``values`` (gamma, eta, ...) read at one eta per gamma (``etas``, gamma,); NaN where that eta is NaN."""
    filled = etas.fillna(float(values["eta"][0]))
    return values.sel(eta=filled).drop_vars("eta").where(etas.notnull())


def best_over_eta(cube: xr.Dataset, metric: str = "test_accuracy", step: int | None = None) -> xr.Dataset:
    """(gamma,): eta_best = eta*(gamma) by ``metric`` at eval step ``step`` (default: the last), and the
    seed mean, min and max of ``metric`` there; NaN where no cell of that gamma is usable."""
    best = eta_star(cube, metric, step)
    seeds = at_eta(metric_at(cube, metric, step), best)
    return xr.Dataset(
        {"eta_best": best, "mean": seeds.mean("seed"), "min": seeds.min("seed"), "max": seeds.max("seed")}
    )


def pick_gammas(best: xr.DataArray, requested: list[float] | None = None, count: int = 3) -> list[float]:
    """Grid gammas to show, from ``best`` = eta*(gamma): each ``requested`` value read as the nearest
    grid gamma (duplicates dropped), or by default ``count`` spread evenly over the gammas with a
    finite eta*, smallest and largest included. ValueError where a gamma has no eta* (every cell of
    it diverged): a figure option naming it needs another gamma."""
    finite = best["gamma"].values[np.isfinite(best.values)]
    if requested is None:
        if not finite.size:
            raise ValueError("every cell diverged: no gamma has an eta* to show")
        requested = finite[np.unique(np.round(np.linspace(0, len(finite) - 1, count)).astype(int))]
    chosen = list(dict.fromkeys(float(best.sel(gamma=g, method="nearest")["gamma"]) for g in requested))
    if missing := [g for g in chosen if g not in finite]:
        raise ValueError(
            f"figure option gammas: every cell of gamma {missing} diverged, so it has no eta*; "
            f"gammas with one: {finite.tolist()}"
        )
    return chosen


def probed(cube: xr.Dataset, record: str) -> xr.DataArray:
    """A probe's record (``gammasweep.results.records``), e.g. (gamma, eta, seed, eval_step) for the
    sharpness; ValueError naming the probe to switch on if the experiment has no such measurements. The
    check reads the record one slice of its first dimension at a time, up to the first measured value: a
    lazily opened cube's record (``cube.open_cube``) is not read whole."""
    if record not in cube or not any(cube[record][i].notnull().any() for i in range(cube[record].shape[0])):
        probe = probe_of(record)
        raise ValueError(
            f"experiment {cube.attrs.get('experiment')!r} has no {record} measurements: switch the "
            f"{probe} probe on in its config entry (training: {{probes: {{{probe}: ...}}}}) and retrain"
        )
    return cube[record]


def adaptive_cost(cube: xr.Dataset) -> dict[str, int]:
    """Cells and cell-steps (cells x SGD steps, every seed of a cell counted once) of a cube's
    experiment: trained at full length, spent on bracketing runs, and what the full grid costs."""
    steps = int(json.loads(cube.attrs["cell_params"])["steps"])
    trained = int((cube["cell_status"] == TRAINED).sum())
    bracket_cells = int(cube["bracket_cells"].sum()) if "bracket_cells" in cube else 0
    bracket_steps = int(cube.attrs.get("bracket_steps", 0))
    grid = cube.sizes["gamma"] * cube.sizes["eta"]
    return {
        "trained_cells": trained,
        "grid_cells": grid,
        "bracket_cells": bracket_cells,
        "cell_steps": trained * steps + bracket_cells * bracket_steps,
        "full_cell_steps": grid * steps,
    }


@dataclass(frozen=True)
class PowerLaw:
    """eta = 10^intercept * gamma^slope fitted over gamma in [gamma_min, gamma_max] on ``points`` points;
    ``stderr``: the slope's standard error (NaN below 3 points), ``censored``: points left out as lower
    bounds."""

    slope: float
    intercept: float
    gamma_min: float
    gamma_max: float
    points: int
    stderr: float = np.nan
    censored: int = 0

    def __call__(self, gamma: np.ndarray) -> np.ndarray:
        return 10.0**self.intercept * np.asarray(gamma, np.float64) ** self.slope


@dataclass(frozen=True)
class RegimeWindows:
    """Where the lazy and rich power laws are fitted: gamma <= ``lazy_max`` and gamma >= ``rich_min``,
    either side of the ``crossover`` gamma where the two regimes meet."""

    lazy_max: float
    rich_min: float
    crossover: float


def regime_windows(
    gammas: np.ndarray,
    etas: np.ndarray,
    censored: np.ndarray | None = None,
    margin_decades: float = 1.0,
    min_points: int = 3,
) -> RegimeWindows:
    """The fit windows by a rule, not by hand: the crossover is the break of the continuous two-segment
    line in log10-log10 space (``log eta = a + s1 min(x - c, 0) + s2 max(x - c, 0)``, x = log10 gamma)
    that fits the uncensored points best in least squares, with c searched on a 0.05-decade grid and at
    least ``min_points`` points each side; the ``margin_decades`` either side of it, where both regimes
    contribute, are left out of both fits. Too few points for a break: the crossover is gamma = 1, where
    the theory's regimes meet (``theory.toy``)."""
    gammas, etas = np.asarray(gammas, np.float64), np.asarray(etas, np.float64)
    use = np.isfinite(etas) & (etas > 0) & (gammas > 0)
    if censored is not None:
        use &= ~np.asarray(censored, bool)
    x, y = np.log10(gammas[use]), np.log10(etas[use])
    crossover = 0.0
    if len(x) >= 2 * min_points:
        xs = np.sort(x)
        candidates = np.round(np.arange(xs[min_points - 1], xs[-min_points] + 1e-9, 0.05), 9)  # no drift off the grid
        errors = []
        for c in candidates:
            design = np.stack([np.ones_like(x), np.minimum(x - c, 0.0), np.maximum(x - c, 0.0)], axis=1)
            residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
            errors.append(residual @ residual)
        crossover = float(candidates[int(np.argmin(errors))])
    return RegimeWindows(10.0 ** (crossover - margin_decades), 10.0 ** (crossover + margin_decades), 10.0**crossover)


def fit_windows(gammas: np.ndarray, etas: np.ndarray, censored: np.ndarray, options: dict) -> RegimeWindows:
    """A figure's fit windows: options ``lazy_max`` and ``rich_min`` where given (both or neither, checked
    with the config; the crossover then their geometric mean), else ``regime_windows``'s rule on the edge
    ``etas``."""
    if "lazy_max" in options:
        lazy_max, rich_min = options["lazy_max"], options["rich_min"]
        return RegimeWindows(lazy_max, rich_min, float(np.sqrt(lazy_max * rich_min)))
    return regime_windows(gammas, etas, censored)


def fit_power_law(
    gammas: np.ndarray, etas: np.ndarray, gamma_min: float, gamma_max: float, censored: np.ndarray | None = None
) -> PowerLaw:
    """Least-squares line in log10-log10 space through the finite points with gamma in [min, max],
    leaving out the ``censored`` ones (bool per point: a bound, not a value)."""
    gammas, etas = np.asarray(gammas, np.float64), np.asarray(etas, np.float64)
    window = (gammas >= gamma_min) & (gammas <= gamma_max) & np.isfinite(etas) & (etas > 0)
    left_out = window & (np.zeros(len(gammas), bool) if censored is None else np.asarray(censored, bool))
    use = window & ~left_out
    n = int(use.sum())
    if n < 2:
        return PowerLaw(np.nan, np.nan, gamma_min, gamma_max, n, censored=int(left_out.sum()))
    x, y = np.log10(gammas[use]), np.log10(etas[use])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    stderr = np.sqrt(residual @ residual / (n - 2) / ((x - x.mean()) @ (x - x.mean()))) if n > 2 else np.nan
    return PowerLaw(float(slope), float(intercept), gamma_min, gamma_max, n, float(stderr), int(left_out.sum()))
