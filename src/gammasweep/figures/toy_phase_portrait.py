"""Phase portraits of the Section-4 toy (Fig. 7): simulated final loss over (gamma, eta) with the
measured divergence edge and the theory lines eta_max, eta_crit (MSE) and eta_min(T) (Table 1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import LogNorm

from gammasweep.figures.style import SEQUENTIAL, label_log_axes, log_edges
from gammasweep.results.analysis import fit_power_law
from gammasweep.theory.toy import divergence_slopes

LOSS_NAMES = {"mse": "MSE", "cross_entropy": "cross-entropy"}
LINES = (
    ("eta_max_theory", "--", "C3", r"theory $\eta_{max}$"),
    ("eta_crit_theory", ":", "C0", r"theory $\eta_{crit}$"),
    ("eta_min_theory", "-.", "C1", r"theory $\eta_{min}(T)$"),
)


def toy_phase_portrait(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """One panel per toy cube (``theory.toy_cube``), e.g. MSE and cross-entropy side by side.

    Colour: final loss minus the loss at the minimum (0 for MSE, H(p) for CE), log scale clipped
    below at option ``loss_floor`` (default 1e-10); diverged cells grey. options: lazy_max (default
    1e-2) and rich_min (default 1e2) bound the power-law fits of the measured edge. Table: per
    (loss, gamma) a ``kind = "edge"`` row with the measured and theory etas, and per (loss, regime)
    a ``kind = "fit"`` row with the fitted and expected slopes (lazy: 2 MSE, 1 CE; rich: 2/L).
    """
    lazy_max, rich_min = options.get("lazy_max", 1e-2), options.get("rich_min", 1e2)
    floor = options.get("loss_floor", 1e-10)
    fig, axes = plt.subplots(1, len(cubes), figsize=(5.2 * len(cubes), 4.0), squeeze=False, layout="constrained")
    rows = []
    for ax, cube in zip(axes[0], cubes):
        loss, depth, steps = cube.attrs["loss"], int(cube.attrs["depth"]), int(cube.attrs["steps"])
        gammas, etas = cube["gamma"].values, cube["eta"].values
        excess = (cube["final_loss"] - float(cube.attrs.get("minimum_loss", 0.0))).transpose("eta", "gamma").values
        excess = np.where(np.isfinite(excess), np.maximum(excess, floor), np.nan)
        top = np.nanmax(excess) if np.isfinite(excess).any() else 1.0
        mesh = ax.pcolormesh(
            log_edges(gammas),
            log_edges(etas),
            np.ma.masked_invalid(excess),
            cmap=plt.get_cmap(SEQUENTIAL + "_r").with_extremes(bad="0.85"),
            norm=LogNorm(floor, max(top, 10 * floor)),
        )
        fig.colorbar(mesh, ax=ax, label="final loss − minimum")
        edge = cube["eta_max_measured"].values
        fits = {
            regime: fit_power_law(gammas, edge, lo, hi)
            for regime, lo, hi in (("lazy", 0.0, lazy_max), ("rich", rich_min, np.inf))
        }
        expected = dict(zip(("lazy", "rich"), divergence_slopes(loss, "sgd", depth)))
        slopes = ", ".join(f"{f.slope:.2f} ({r})" for r, f in fits.items() if np.isfinite(f.slope))
        ax.plot(
            gammas,
            edge,
            color="k",
            lw=1.2,
            drawstyle="steps-mid",
            label="measured edge" + (f", slopes {slopes}" if slopes else ""),
        )
        for name, style, color, label in LINES:
            if np.isfinite(cube[name].values).any():
                ax.plot(gammas, cube[name].values, style, color=color, lw=1.3, label=label)
        ax.set_xlim(log_edges(gammas)[[0, -1]])
        ax.set_ylim(log_edges(etas)[[0, -1]])
        label_log_axes(ax, r"feature-learning strength $\gamma$", r"learning rate $\eta$")
        ax.set_title(f"toy, {LOSS_NAMES.get(loss, loss)}: L = {depth}, T = {steps} steps (grey = diverged)")
        ax.legend(loc="lower right", framealpha=0.8)
        common = {"loss": loss, "depth": depth, "steps": steps}
        rows += [
            common
            | {"kind": "edge", "gamma": g}
            | {
                name: cube[name].values[i]
                for name in ("eta_max_measured", "eta_max_theory", "eta_crit_theory", "eta_min_theory")
            }
            for i, g in enumerate(gammas)
        ]
        for regime, fit in fits.items():
            span = gammas[(gammas >= fit.gamma_min) & (gammas <= fit.gamma_max) & np.isfinite(edge)]
            rows.append(
                common
                | {
                    "kind": "fit",
                    "regime": regime,
                    "slope": fit.slope,
                    "expected_slope": expected[regime],
                    "points": fit.points,
                    "gamma_min": span.min() if span.size else np.nan,
                    "gamma_max": span.max() if span.size else np.nan,
                }
            )
    return fig, pd.DataFrame(rows)
