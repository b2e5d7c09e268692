"""How far each layer's weights move from init, at eta*(gamma), against gamma: ~ gamma in the lazy
regime (linearized training moves the weights by O(gamma)), O(1) in the rich one."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import label_log_axes
from gammasweep.results.analysis import at_eta, eta_max, eta_star, final_metric, fit_power_law, fit_windows, probed


def weight_movement(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: lazy_max bounds the fitted lazy power law, theory slope 1 (default:
    ``results.analysis.regime_windows``'s rule on the cube's eta_max), metric for eta* (default test_loss).

    One panel per cube, one line per layer: the final |theta - theta_0| / |theta_0| at eta*(gamma),
    seed mean. The table has kind "gamma" rows (per gamma and layer) and kind "fit" rows. Raises
    ValueError for a cube recorded without the weight_movement probe.
    """
    fig, axes = plt.subplots(1, len(cubes), figsize=(3.8 * len(cubes), 3.2), squeeze=False)
    rows = []
    for ax, cube in zip(axes[0], cubes):
        probed(cube, "weight_movement")
        best = eta_star(cube, options.get("metric", "test_loss"))
        moved = at_eta(final_metric(cube, "weight_movement"), best)  # (gamma, layer)
        gammas, edge = cube["gamma"].values, eta_max(cube)
        lazy_max = fit_windows(gammas, edge.values, edge["censored"].values, options).lazy_max
        for layer in moved["layer"].values:
            values = moved.sel(layer=layer).values
            line = ax.plot(gammas, values, "o-", ms=3, label=str(layer))[0]
            fit = fit_power_law(gammas, values, 0.0, lazy_max)
            rows += [
                {
                    "kind": "gamma",
                    "experiment": cube.attrs["experiment"],
                    "layer": layer,
                    "gamma": g,
                    "eta_star": e,
                    "weight_movement": v,
                }
                for g, e, v in zip(gammas, best.values, values)
            ]
            rows.append(
                {
                    "kind": "fit",
                    "experiment": cube.attrs["experiment"],
                    "layer": layer,
                    "regime": "lazy",
                    "slope": fit.slope,
                    "slope_stderr": fit.stderr,
                    "expected_slope": 1.0,
                    "points": fit.points,
                }
            )
            if np.isfinite(fit.slope):
                span = gammas[(gammas <= lazy_max) & np.isfinite(values)]
                ax.plot(span, fit(span), ":", color=line.get_color(), lw=1.2)
        label_log_axes(ax, r"feature-learning strength $\gamma$", r"$|\theta-\theta_0|\,/\,|\theta_0|$ at $\eta^*$")
        ax.set_title(f"{cube.attrs['experiment']}: lazy fit dotted (theory slope 1)")
        ax.legend()
    return fig, pd.DataFrame(rows)
