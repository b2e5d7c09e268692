"""Sharpness against SGD step at eta*(gamma) and the grid etas just below, each with its
edge-of-stability level 2/eta (paper Fig. 3b-d)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import label_log_axes, stability_edge
from gammasweep.results.analysis import cell_diverged, eta_star, pick_gammas, probed


def sharpness_trajectory(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gammas (list, each read as the nearest grid gamma; default the smallest, median and
    largest gamma with a finite eta*), etas_below (grid etas below eta* to add, default 2), metric for
    eta* (default test_loss).

    One panel per gamma of the first cube; diverged cells are left out. Raises ValueError for a cube
    recorded without the sharpness probe.
    """
    cube = cubes[0]
    sharpness, best = probed(cube, "sharpness"), eta_star(cube, options.get("metric", "test_loss"))
    gammas = pick_gammas(best, options.get("gammas"))
    etas, diverged = np.sort(cube["eta"].values), cell_diverged(cube)
    steps = cube["eval_step"].values
    fig, axes = plt.subplots(1, len(gammas), figsize=(3.4 * len(gammas), 3.0), squeeze=False)
    rows = []
    for ax, gamma in zip(axes[0], gammas):
        eta_best = float(best.sel(gamma=gamma))
        j = int(np.searchsorted(etas, eta_best))
        chosen = [
            e
            for e in etas[max(j - options.get("etas_below", 2), 0) : j + 1][::-1]
            if not diverged.sel(gamma=gamma, eta=e)
        ]
        for color, eta in zip((f"C{i}" for i in range(10)), chosen):
            curve = sharpness.sel(gamma=gamma, eta=eta).mean("seed").values
            star = r" ($\eta^*$)" if eta == eta_best else ""
            ax.plot(steps + 1, curve, "o-", ms=2.5, color=color, label=f"$\\eta$ = {eta:.3g}{star}")
            edge = stability_edge(cube, eta, steps)  # 2 / (scheduled eta); None for the sign-based optimizers
            if edge is not None:
                ax.plot(steps + 1, edge, ls="--", lw=0.9, color=color)
            rows += [
                {
                    "experiment": cube.attrs["experiment"],
                    "gamma": gamma,
                    "eta": eta,
                    "eval_step": int(s),
                    "sharpness": v,
                    "two_over_eta": np.nan if edge is None else edge[i],
                    "is_eta_star": eta == eta_best,
                }
                for i, (s, v) in enumerate(zip(steps, curve))
            ]
        label_log_axes(
            ax, "SGD step t + 1", r"sharpness (units of $1/\eta$); dashed: $2/\eta$" if ax is axes[0, 0] else ""
        )
        ax.set_title(
            f"{cube.attrs['experiment']}: $\\gamma$ = {gamma:.3g}" if ax is axes[0, 0] else f"$\\gamma$ = {gamma:.3g}"
        )
        ax.legend()
    return fig, pd.DataFrame(rows)
