"""Final sharpness at eta*(gamma) against gamma, with the edge-of-stability reference 2/eta_max and
power laws fitted in the lazy (~ gamma^-2) and rich (~ gamma^(-2/L)) regimes (paper Fig. 3a)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import depth_of, label_log_axes, stability_edge
from gammasweep.results.analysis import at_eta, eta_max, eta_star, final_metric, fit_power_law, fit_windows, probed


def sharpness_vs_gamma(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric for eta* (default test_loss); lazy_max and rich_min, the fit windows (default:
    ``results.analysis.regime_windows``'s rule on each cube's eta_max).

    One panel per cube. Sharpness is the seed mean at the last eval step, in units of 1/eta. The table
    holds rows of kind "gamma" (per-gamma values) and "fit" (each fit with its standard error, its
    expected slope and the censored points left out: 2/eta_max where nothing diverged is a bound).
    Raises ValueError for a cube recorded without the sharpness probe.
    """
    metric = options.get("metric", "test_loss")
    for cube in cubes:
        probed(cube, "sharpness")
    fig, axes = plt.subplots(1, len(cubes), figsize=(3.8 * len(cubes), 3.2), squeeze=False)
    rows = []
    for ax, cube in zip(axes[0], cubes):
        gammas, depth, experiment = cube["gamma"].values, depth_of(cube), cube.attrs["experiment"]
        best, edge = eta_star(cube, metric), eta_max(cube)
        windows = fit_windows(gammas, edge.values, edge["censored"].values, options)
        quantities = {
            "sharpness": at_eta(final_metric(cube, "sharpness"), best).values,
            # the edge of stability at eta_max on the last update; NaN for the sign-based optimizers
            "two_over_eta_max": _final_edge(cube, edge.values),
        }
        bounds = {"sharpness": np.zeros(len(gammas), bool), "two_over_eta_max": edge["censored"].values}
        rows += [
            {
                "kind": "gamma",
                "experiment": experiment,
                "gamma": g,
                "eta_star": e,
                "sharpness": s,
                "two_over_eta_max": b,
            }
            for g, e, s, b in zip(gammas, best.values, *quantities.values())
        ]
        for (name, values), fmt, label, shift in zip(
            quantities.items(),
            ("o-", "--"),
            (r"sharpness at $\eta^*$", r"$2/\eta_{max}$ (edge of stability)"),
            (4, -10),
        ):
            line = ax.plot(gammas, values, fmt, ms=3, color="C0" if name == "sharpness" else "k", label=label)[0]
            for regime, lo, hi, expected in (
                ("lazy", 0.0, windows.lazy_max, -2.0),
                ("rich", windows.rich_min, np.inf, -2.0 / depth if depth else np.nan),
            ):
                fit = fit_power_law(gammas, values, lo, hi, bounds[name])
                fitted = (gammas >= lo) & (gammas <= hi) & np.isfinite(values) & (values > 0) & ~bounds[name]
                span = gammas[fitted]
                rows.append(
                    {
                        "kind": "fit",
                        "experiment": experiment,
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
                if np.isfinite(fit.slope) and np.isfinite(expected):
                    ax.plot(span, fit(span), ":", color=line.get_color(), lw=1.2, alpha=0.8)
                    ax.annotate(
                        f"{fit.slope:.2f}",
                        (span[len(span) // 2], fit(span[len(span) // 2])),
                        fontsize=7,
                        color=line.get_color(),
                        xytext=(4, shift),
                        textcoords="offset points",
                    )
        label_log_axes(ax, r"feature-learning strength $\gamma$", r"sharpness (units of $1/\eta$)")
        ax.set_title(f"{experiment} (L = {depth}): fitted slopes, theory -2 and -2/L")
        ax.legend()
    return fig, pd.DataFrame(rows)


def _final_edge(cube: xr.Dataset, etas: np.ndarray) -> np.ndarray:
    """2 / (eta x the schedule's last factor) per gamma (``stability_edge``); NaN without one."""
    last = json.loads(cube.attrs["cell_params"])["steps"]
    edge = stability_edge(cube, etas, np.full(len(etas), last))
    return np.full(len(etas), np.nan) if edge is None else edge
