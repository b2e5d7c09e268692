"""Adaptive eta at a glance: which cells of the gamma-eta grid were trained, inferred diverged or
skipped, and the divergence edge and eta* it found against those of a full-grid run."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from gammasweep.figures.style import label_log_axes, log_edges
from gammasweep.results.analysis import adaptive_cost, eta_max, eta_star
from gammasweep.sweep.adaptive import STATUS_MEANINGS


def adaptive_coverage(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """cubes: the adaptive experiment's, then optionally its full-grid reference (same grid).
    options: metric of eta* (default test_loss). The table has one row per gamma."""
    cube, metric = cubes[0], options.get("metric", "test_loss")
    reference = cubes[1] if len(cubes) > 1 else None
    gammas, etas = cube["gamma"].values, cube["eta"].values
    palette = sns.color_palette("colorblind")
    colors = [palette[2], palette[3], (0.92, 0.92, 0.92)]  # trained, inferred diverged, skipped
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.pcolormesh(
        log_edges(gammas),
        log_edges(etas),
        cube["cell_status"].transpose("eta", "gamma").values,
        cmap=ListedColormap(colors),
        norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3),
        alpha=0.75,
    )
    edge, best = eta_max(cube), eta_star(cube, metric)
    ax.plot(gammas, edge, color="k", lw=1.2, drawstyle="steps-mid")
    ax.plot(gammas, best, ls="none", marker="*", ms=8, color="k")
    handles = [Patch(color=c, alpha=0.75, label=m.replace("_", " ")) for c, m in zip(colors, STATUS_MEANINGS.split())]
    handles += [
        plt.Line2D([], [], color="k", lw=1.2, label=r"$\eta_{max}$ adaptive"),
        plt.Line2D([], [], color="k", ls="none", marker="*", label=r"$\eta^*$ adaptive"),
    ]
    rows = {
        "gamma": gammas,
        "trained": (cube["cell_status"] == 0).sum("eta").values,
        "bracket_cells": cube["bracket_cells"].values if "bracket_cells" in cube else 0,
        "eta_max": edge.values,
        "eta_star": best.values,
    }
    if reference is not None:
        ref_edge, ref_best = eta_max(reference), eta_star(reference, metric)
        ax.plot(gammas, ref_edge, color="w", lw=1.0, ls="--", drawstyle="steps-mid")
        ax.plot(gammas, ref_best, ls="none", marker="o", ms=9, mfc="none", mec="w", mew=1.2)
        handles += [
            plt.Line2D([], [], color="0.4", lw=1.0, ls="--", label=r"$\eta_{max}$ full grid"),
            plt.Line2D([], [], color="0.4", ls="none", marker="o", mfc="none", label=r"$\eta^*$ full grid"),
        ]
        rows |= {"eta_max_full": ref_edge.values, "eta_star_full": ref_best.values}
    ax.set_xlim(log_edges(gammas)[[0, -1]])
    ax.set_ylim(log_edges(etas)[[0, -1]])
    label_log_axes(ax, r"feature-learning strength $\gamma$", r"learning rate $\eta$ (SGD lr $= N\eta$)")
    cost = adaptive_cost(cube)
    ax.set_title(
        f"{cube.attrs['experiment']}: {cost['trained_cells']} of {cost['grid_cells']} cells trained, "
        f"{cost['cell_steps'] / cost['full_cell_steps']:.0%} of the full grid's cell-steps"
    )
    ax.legend(handles=handles, loc="upper left", framealpha=0.8, fontsize=6)
    return fig, pd.DataFrame(rows)
