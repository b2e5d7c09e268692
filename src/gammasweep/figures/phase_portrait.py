"""The gamma-eta phase portrait: a final metric over the grid, with the divergence edge, eta* and
the theory slopes eta ~ gamma^2 (lazy) and eta ~ gamma^(2/L) (rich); optionally read after several
training lengths T, one panel each (the region of optimizability closes as T shrinks)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.colors import Colormap, LogNorm, Normalize

from gammasweep.figures.style import SEQUENTIAL, edge_slopes, eta_label, label_log_axes, log_edges
from gammasweep.results.analysis import HIGHER_IS_BETTER, cell_diverged, eta_max, eta_star, final_metric
from gammasweep.sweep.adaptive import SKIPPED
from gammasweep.theory.toy import reference_line


def phase_portrait(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric (test_loss | test_accuracy | train_loss; default test_loss), steps (list of eval
    steps T: one panel each, the metric, eta* and divergence read at T; a cell counts as diverged at
    T if a seed diverged before step T; default: one panel, the final step).

    One row of panels per cube (several cubes: the same sweep at other widths or batch sizes, the
    appendix's robustness check), one shared colour scale; for a loss it ends at the loss at init, and
    larger losses (catapults that have not come down) take its top colour. The table has an
    ``experiment`` column.
    """
    metric, steps = options.get("metric", "test_loss"), options.get("steps", [None])
    values = [[final_metric(cube, metric, step).transpose("eta", "gamma") for step in steps] for cube in cubes]
    fig, axes = plt.subplots(len(cubes), len(steps), figsize=(4.8 * len(steps), 3.6 * len(cubes)), squeeze=False)
    cmap = plt.get_cmap(SEQUENTIAL if HIGHER_IS_BETTER[metric] else SEQUENTIAL + "_r").with_extremes(bad="0.85")
    finite = np.concatenate([v.values[np.isfinite(v.values)] for row in values for v in row])
    positive = finite[finite > 0]
    # A loss above the loss at init (a catapult that has not come down, counted as not diverged) gets the
    # top colour, so that one 1e50 does not flatten the scale; the table keeps every value.
    initial = np.concatenate(
        [final_metric(cube, metric, 0).values.ravel() for cube in cubes if 0 in cube["eval_step"].values] + [[np.nan]]
    )
    top = min(positive.max(), np.nanmax(initial)) if positive.size and np.isfinite(initial).any() else np.nan
    norm = (
        LogNorm(positive.min(), top if np.isfinite(top) and top > positive.min() else positive.max())
        if not HIGHER_IS_BETTER[metric] and positive.size
        else Normalize(*(np.nanmin(finite), np.nanmax(finite)) if finite.size else (0, 1))
    )
    tables = []
    for r, (cube, row) in enumerate(zip(cubes, values)):
        for i, (ax, step, value) in enumerate(zip(axes[r], steps, row)):
            mesh, table = _draw(ax, cube, metric, step, value, cmap, norm, legend=r == 0 and i == 0)
            table.insert(0, "experiment", cube.attrs["experiment"])
            tables.append(table if step is None else table.assign(steps=step))
            if i:
                ax.set_ylabel("")
    at = f"final {metric.replace('_', ' ')}" if steps == [None] else f"{metric.replace('_', ' ')} at T"
    clipped = not HIGHER_IS_BETTER[metric] and positive.size and positive.max() > norm.vmax
    fig.colorbar(
        mesh,
        ax=axes.ravel().tolist(),
        label=at + (" (top: its value at init)" if clipped else ""),
        extend="max" if clipped else "neither",
    )
    return fig, pd.concat(tables, ignore_index=True)


def _draw(
    ax: plt.Axes,
    cube: xr.Dataset,
    metric: str,
    step: int | None,
    value: xr.DataArray,
    cmap: Colormap,
    norm: Normalize,
    legend: bool,
) -> tuple[QuadMesh, pd.DataFrame]:
    """One portrait of ``value`` (eta, gamma) read at eval step ``step`` (None: the last) into ``ax``."""
    gammas, etas = cube["gamma"].values, cube["eta"].values
    mesh = ax.pcolormesh(log_edges(gammas), log_edges(etas), np.ma.masked_invalid(value.values), cmap=cmap, norm=norm)
    skipped = (cube["cell_status"] == SKIPPED).transpose("eta", "gamma").values
    if skipped.any():  # adaptive eta: cells below the trained window
        ax.pcolormesh(
            log_edges(gammas), log_edges(etas), np.ma.masked_where(~skipped, skipped), cmap="binary", vmin=0, vmax=1e9
        )
    edge, best = eta_max(cube, step), eta_star(cube, metric, step)
    ax.plot(gammas, edge, color="k", lw=1.2, drawstyle="steps-mid", label=r"divergence edge $\eta_{max}$")
    censored = edge["censored"].values  # nothing diverged on the grid: the edge is above its top
    if censored.any():
        ax.plot(
            gammas[censored],
            edge.values[censored],
            ls="none",
            marker="^",
            ms=5,
            mfc="none",
            color="k",
            label=r"$\eta_{max}$ above the grid",
        )
    ax.plot(gammas, best, ls="none", marker="*", ms=7, color="white", mec="k", mew=0.5, label=r"$\eta^*$")
    (lazy_slope, rich_slope), ok = edge_slopes(cube), np.isfinite(edge.values) & ~censored  # anchors: measured edges
    if ok.any():
        lo, hi = np.nonzero(ok)[0][[0, -1]]
        lazy, rich = gammas[gammas <= 1.0], gammas[gammas >= 1.0]  # each guide line over its own regime
        ax.plot(
            lazy,
            reference_line(lazy, gammas[lo], edge.values[lo], lazy_slope),
            "--",
            color="C3",
            lw=1,
            label=rf"$\propto\gamma^{{{lazy_slope:.3g}}}$ (lazy)",
        )
        if np.isfinite(rich_slope):
            ax.plot(
                rich,
                reference_line(rich, gammas[hi], edge.values[hi], rich_slope),
                ":",
                color="C1",
                lw=1.4,
                label=rf"$\propto\gamma^{{{rich_slope:.3g}}}$ (rich)",
            )
    ax.set_xlim(log_edges(gammas)[[0, -1]])
    ax.set_ylim(log_edges(etas)[[0, -1]])
    label_log_axes(ax, r"feature-learning strength $\gamma$", eta_label(cube))
    untrained = ", white = not trained (adaptive)" if skipped.any() else ""
    at = "" if step is None else f", T = {step}"
    params = json.loads(cube.attrs["cell_params"])
    ax.set_title(
        f"{cube.attrs['experiment']} (N = {params['model'].get('width')}, B = {params.get('batch_size')}){at}\n"
        f"grey = diverged{untrained}",
        fontsize=8,
    )  # masked cells: the colormap's 'bad' colour
    if legend:
        ax.legend(loc="upper left", framealpha=0.8)
    table = value.to_dataframe(name=metric).reset_index()
    table["diverged"] = cell_diverged(cube, step).transpose("eta", "gamma").values.ravel()
    table["is_eta_max"] = np.isclose(table["eta"], edge.sel(gamma=table["gamma"].values).values)
    table["eta_max_censored"] = edge["censored"].sel(gamma=table["gamma"].values).values
    table["is_eta_star"] = np.isclose(table["eta"], best.sel(gamma=table["gamma"].values).values)
    return mesh, table
