"""A schematic of the regimes in the (gamma, eta) plane from the toy model's closed forms (our reading
of the paper's Fig. 1a, b, whose content is not recovered): where GD diverges, learns, or is too
slow to leave the plateau in T steps, lazy (gamma << 1) and rich (gamma >> 1), with the catapult
onset eta_crit = 2 / the sharpness at init. In this toy eta_crit lies above eta_max at every gamma
(the sharpness at init is below that of the flattest minimum, so no catapult window opens below
the divergence edge): the line is drawn, no region is claimed for it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import label_log_axes
from gammasweep.theory.toy import eta_crit, eta_max, eta_min

REGIONS = (("diverges", "C3"), ("learns", "C2"), ("too slow", "0.6"))


def regime_diagram(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """One panel per MSE toy cube (``theory.toy_cube``: its gamma range, depth L and steps T): the
    theory lines eta_max (divergence), eta_crit (catapult onset) and eta_min(T) (plateau escape in T
    steps) over ``points`` log-spaced gammas (option, default 400), the regions between them shaded.

    Table: per cube and gamma a ``kind = "line"`` row with the three etas and the width in decades of
    the region that learns (eta_min..eta_max), and
    a ``kind = "closing"`` row with the smallest large gamma where eta_min(T) reaches eta_max: beyond
    it nothing trains in T steps (the region of optimizability closes; NaN if it stays open).
    ValueError for a cross-entropy cube (eta_crit has no closed form there).
    """
    fig, axes = plt.subplots(1, len(cubes), figsize=(5.0 * len(cubes), 4.0), squeeze=False, layout="constrained")
    rows = []
    for ax, cube in zip(axes[0], cubes):
        if cube.attrs["loss"] != "mse":
            raise ValueError(f"the regime diagram needs an MSE toy cube (eta_crit), got loss {cube.attrs['loss']!r}")
        depth, steps = int(cube.attrs["depth"]), int(cube.attrs["steps"])
        g = cube["gamma"].values
        gammas = np.geomspace(g.min(), g.max(), options.get("points", 400))
        top, crit, bottom = eta_max(gammas, depth), eta_crit(gammas, depth), eta_min(gammas, depth, steps)
        ceiling, floor = 10 * top.max(), 0.1 * bottom.min()
        bands = (
            (top, np.full_like(top, ceiling)),
            (bottom, top),
            (np.full_like(top, floor), np.minimum(bottom, top)),
        )  # above eta_max it diverges first
        for (name, color), (lo, hi) in zip(REGIONS, bands):
            ax.fill_between(gammas, lo, np.maximum(lo, hi), color=color, alpha=0.35, lw=0, label=name)
        for values, style, label in (
            (top, "--", r"$\eta_{max}$"),
            (crit, ":", r"$\eta_{crit}$ = 2 / sharpness at init"),
            (bottom, "-.", rf"$\eta_{{min}}$(T = {steps})"),
        ):
            ax.plot(gammas, values, style, color="k", lw=1.1, label=label)
        ax.axvline(1.0, color="k", lw=0.6)
        for x, text in ((np.sqrt(gammas[0]), "lazy"), (np.sqrt(gammas[-1]), "rich")):
            ax.text(x, np.sqrt(floor * ceiling), text, ha="center", fontsize=9, style="italic")
        ax.set_xlim(gammas[0], gammas[-1])
        ax.set_ylim(floor, ceiling)
        label_log_axes(ax, r"feature-learning strength $\gamma$", r"learning rate $\eta$")
        ax.set_title(f"regimes of the toy model, MSE, L = {depth}, T = {steps} (theory)", fontsize=8)
        ax.legend(loc="upper left", fontsize=6, framealpha=0.8)
        common = {"depth": depth, "steps": steps}
        rows += [
            common
            | {
                "kind": "line",
                "gamma": float(gi),
                "eta_max": float(a),
                "eta_crit": float(b),
                "eta_min": float(c),
                "learns_decades": float(np.log10(max(a / c, 1.0))),
            }
            for gi, a, b, c in zip(gammas, top, crit, bottom)
        ]
        closed = (gammas > 1.0) & (bottom >= top)
        rows.append(common | {"kind": "closing", "gamma": float(gammas[closed][0]) if closed.any() else np.nan})
    return fig, pd.DataFrame(rows)
