"""Training-loss curves at eta*(gamma) across gamma, against steps and against tau = eta t / gamma."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import gamma_colors, label_log_axes
from gammasweep.results.analysis import eta_star


def loss_curves(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gammas (list; default every gamma with a finite eta*), metric for eta* (default test_loss)."""
    cube = cubes[0]
    best = eta_star(cube, options.get("metric", "test_loss"))
    gammas = [
        g for g in options.get("gammas", cube["gamma"].values) if np.isfinite(best.sel(gamma=g, method="nearest"))
    ]
    fig, (ax_t, ax_tau) = plt.subplots(1, 2, figsize=(7.5, 3.2), sharey=True)
    rows = []
    for color, gamma in zip(gamma_colors(np.array(gammas)), gammas):
        eta = float(best.sel(gamma=gamma, method="nearest"))
        curve = cube["train_loss"].sel(gamma=gamma, eta=eta, method="nearest").mean("seed")
        steps = cube["step"].values + 1  # loss of step t is the loss after t updates: plot at t + 1 on a log axis
        tau = eta * steps / gamma
        ax_t.plot(steps, curve, color=color, label=f"$\\gamma$={gamma:.3g}")
        ax_tau.plot(tau, curve, color=color)
        rows += [
            {"gamma": gamma, "eta_star": eta, "step": int(s) - 1, "tau": t, "train_loss": float(v)}
            for s, t, v in zip(steps, tau, curve.values)
        ]
    label_log_axes(ax_t, "SGD step t + 1", "train loss (block mean, seed mean)")
    label_log_axes(ax_tau, r"rescaled time $\tau = \eta\,(t+1)/\gamma$", "")
    ax_t.legend(ncol=2)
    ax_t.set_title(f"{cube.attrs['experiment']}: each $\\gamma$ at its $\\eta^*$")
    ax_tau.set_title("large $\\gamma$ collapse in $\\tau$")
    return fig, pd.DataFrame(rows)
