"""eta* and eta_max against gamma with power laws fitted in the lazy and rich regimes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import depth_of, edge_slopes, label_log_axes
from gammasweep.results.analysis import eta_max, eta_star, fit_power_law, fit_windows


def eta_star_scaling(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric for eta* (default test_loss); lazy_max and rich_min, the fit windows (default:
    ``results.analysis.regime_windows``'s rule on each cube's eta_max).

    One panel per cube (e.g. one per depth L). The table lists every fit with its standard error, its
    expected slope, its window and the crossover gamma the rule found, and the censored points left
    out of it (gammas where nothing diverged on the grid: their eta_max is a lower bound, drawn as an
    open triangle).
    """
    fig, axes = plt.subplots(1, len(cubes), figsize=(3.8 * len(cubes), 3.2), squeeze=False)
    rows = []
    for ax, cube in zip(axes[0], cubes):
        gammas, depth = cube["gamma"].values, depth_of(cube)
        edge = eta_max(cube)
        windows = fit_windows(gammas, edge.values, edge["censored"].values, options)
        for name, values, censored, marker in (
            ("eta_max", edge.values, edge["censored"].values, "o"),
            ("eta_star", eta_star(cube, options.get("metric", "test_loss")).values, np.zeros(len(gammas), bool), "*"),
        ):
            line = ax.plot(gammas[~censored], values[~censored], marker, label=name.replace("_", " "))[0]
            if censored.any():  # nothing diverged up to the grid's top: a lower bound, left out of the fits
                ax.plot(
                    gammas[censored],
                    values[censored],
                    "^",
                    mfc="none",
                    color=line.get_color(),
                    label=f"{name.replace('_', ' ')} above the grid (bound)",
                )
            for regime, lo, hi, expected in zip(
                ("lazy", "rich"), (0.0, windows.rich_min), (windows.lazy_max, np.inf), edge_slopes(cube)
            ):
                fit, span = fit_power_law(gammas, values, lo, hi, censored), gammas[(gammas >= lo) & (gammas <= hi)]
                rows.append(
                    {
                        "experiment": cube.attrs["experiment"],
                        "depth": depth,
                        "quantity": name,
                        "regime": regime,
                        "slope": fit.slope,
                        "slope_stderr": fit.stderr,
                        "expected_slope": expected,
                        "gamma_min": span.min() if span.size else np.nan,
                        "gamma_max": span.max() if span.size else np.nan,
                        "points": fit.points,
                        "censored_left_out": fit.censored,
                        "gamma_crossover": windows.crossover,
                    }
                )
                if np.isfinite(fit.slope):
                    ax.plot(span, fit(span), "-", color=line.get_color(), lw=0.8, alpha=0.8)
                    error = f" ± {fit.stderr:.2f}" if np.isfinite(fit.stderr) else ""
                    ax.annotate(
                        f"{fit.slope:.2f}{error}",
                        (span[len(span) // 2], fit(span[len(span) // 2])),
                        fontsize=7,
                        color=line.get_color(),
                        xytext=(4, -10),
                        textcoords="offset points",
                    )
        label_log_axes(ax, r"$\gamma$", r"$\eta$")
        lazy, rich = edge_slopes(cube)
        ax.set_title(f"{cube.attrs['experiment']} (L = {depth}): fitted slopes, theory {lazy:.3g} and {rich:.3g}")
        ax.legend()
    return fig, pd.DataFrame(rows)
