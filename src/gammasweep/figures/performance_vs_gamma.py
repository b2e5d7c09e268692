"""Best-over-eta performance against gamma after several training lengths T (paper Fig. 2b)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import SEQUENTIAL
from gammasweep.results.analysis import HIGHER_IS_BETTER, best_over_eta


def performance_vs_gamma(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric (test_accuracy | test_loss | train_loss; default test_accuracy), steps (list of
    eval steps T; default the last 3 eval steps > 0 of each cube).

    One panel per cube, one line per T: at each T, eta is chosen by the seed mean at T over cells
    with no seed diverged before T; the band spans the seeds' min..max at that eta.
    """
    metric = options.get("metric", "test_accuracy")
    fig, axes = plt.subplots(1, len(cubes), figsize=(3.8 * len(cubes), 3.2), squeeze=False)
    rows = []
    for ax, cube in zip(axes[0], cubes):
        evals = cube["eval_step"].values
        steps = [int(s) for s in options.get("steps", evals[evals > 0][-3:])]
        gammas = cube["gamma"].values
        for color, step in zip(plt.get_cmap(SEQUENTIAL)(np.linspace(0.0, 0.85, len(steps))), steps):
            best = best_over_eta(cube, metric, step)
            ax.plot(gammas, best["mean"], "o-", color=color, ms=3, label=f"T = {step}")
            ax.fill_between(gammas, best["min"], best["max"], color=color, alpha=0.25, lw=0)
            rows += [
                {
                    "experiment": cube.attrs["experiment"],
                    "steps": step,
                    "gamma": g,
                    "eta_best": e,
                    "mean": m,
                    "min": lo,
                    "max": hi,
                }
                for g, e, m, lo, hi in zip(gammas, *(best[k].values for k in ("eta_best", "mean", "min", "max")))
            ]
        ax.set_xscale("log")
        if not HIGHER_IS_BETTER[metric]:
            ax.set_yscale("log")
        ax.set_xlabel(r"feature-learning strength $\gamma$")
        ax.set_ylabel(f"{metric.replace('_', ' ')} at best $\\eta$ (seed mean, band: min..max)")
        ax.set_title(f"{cube.attrs['experiment']}: best over $\\eta$ after T steps")
        ax.legend()
    return fig, pd.DataFrame(rows)
