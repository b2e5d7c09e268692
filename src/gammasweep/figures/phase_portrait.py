"""The gamma-eta phase portrait: a final metric over the grid, with the divergence edge, eta* and
the theory slopes eta ~ gamma^2 (lazy) and eta ~ gamma^(2/L) (rich)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import LogNorm, Normalize

from gammasweep.adaptive import SKIPPED
from gammasweep.analysis import HIGHER_IS_BETTER, cell_diverged, eta_max, eta_star, final_metric
from gammasweep.figures.style import SEQUENTIAL, depth_of, label_log_axes, log_edges
from gammasweep.theory import reference_line


def phase_portrait(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric (test_loss | test_accuracy | train_loss; default test_loss)."""
    cube, metric = cubes[0], options.get("metric", "test_loss")
    value = final_metric(cube, metric).transpose("eta", "gamma")
    gammas, etas = cube["gamma"].values, cube["eta"].values
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    cmap = plt.get_cmap(SEQUENTIAL if HIGHER_IS_BETTER[metric] else SEQUENTIAL + "_r").with_extremes(bad="0.85")
    finite = value.values[np.isfinite(value.values)]
    positive = finite[finite > 0]
    norm = (LogNorm(positive.min(), positive.max()) if not HIGHER_IS_BETTER[metric] and positive.size
            else Normalize(*(np.nanmin(finite), np.nanmax(finite)) if finite.size else (0, 1)))
    mesh = ax.pcolormesh(log_edges(gammas), log_edges(etas), np.ma.masked_invalid(value.values), cmap=cmap, norm=norm)
    fig.colorbar(mesh, ax=ax, label=f"final {metric.replace('_', ' ')}")
    skipped = (cube["cell_status"] == SKIPPED).transpose("eta", "gamma").values
    if skipped.any():  # adaptive eta: cells below the trained window
        ax.pcolormesh(log_edges(gammas), log_edges(etas), np.ma.masked_where(~skipped, skipped), cmap="binary",
                      vmin=0, vmax=1e9)
    edge, best = eta_max(cube), eta_star(cube, metric)
    ax.plot(gammas, edge, color="k", lw=1.2, drawstyle="steps-mid", label=r"divergence edge $\eta_{max}$")
    ax.plot(gammas, best, ls="none", marker="*", ms=7, color="white", mec="k", mew=0.5, label=r"$\eta^*$")
    depth, ok = depth_of(cube), np.isfinite(edge.values)
    if ok.any():
        lo, hi = np.nonzero(ok)[0][[0, -1]]
        lazy, rich = gammas[gammas <= 1.0], gammas[gammas >= 1.0]  # each guide line over its own regime
        ax.plot(lazy, reference_line(lazy, gammas[lo], edge.values[lo], 2.0), "--", color="C3", lw=1,
                label=r"$\propto\gamma^2$ (lazy)")
        if depth:
            ax.plot(rich, reference_line(rich, gammas[hi], edge.values[hi], 2.0 / depth), ":", color="C1",
                    lw=1.4, label=rf"$\propto\gamma^{{2/{depth}}}$ (rich)")
    ax.set_xlim(log_edges(gammas)[[0, -1]])
    ax.set_ylim(log_edges(etas)[[0, -1]])
    label_log_axes(ax, r"feature-learning strength $\gamma$", r"learning rate $\eta$ (SGD lr $= N\eta$)")
    untrained = ", white = not trained (adaptive)" if skipped.any() else ""
    ax.set_title(f"{cube.attrs['experiment']}: grey = diverged{untrained}")  # masked cells: the colormap's 'bad' colour
    ax.legend(loc="upper left", framealpha=0.8)
    table = value.to_dataframe(name=metric).reset_index()
    table["diverged"] = cell_diverged(cube).transpose("eta", "gamma").values.ravel()
    table["is_eta_max"] = np.isclose(table["eta"], edge.sel(gamma=table["gamma"].values).values)
    table["is_eta_star"] = np.isclose(table["eta"], best.sel(gamma=table["gamma"].values).values)
    return fig, table
