"""Catapults at small gamma (paper Fig. 4a): for learning rates above 2 / (sharpness at init) that
still converge, the loss spikes early while the sharpness falls below 2/eta, then training goes on."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import stability_edge
from gammasweep.results.analysis import cell_diverged, eta_star, pick_gammas, probed


def catapult(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gamma (read as the nearest grid gamma; default the smallest with a finite eta*), etas
    (how many of the largest etas that did not diverge, default 3), seed (default 0).

    Left: the loss of the batch at each recorded step; right: the sharpness at the eval steps with
    each eta's 2/eta. The table has one row per eta: the sharpness at init and at the end, 2/eta,
    the loss spike (largest recorded batch loss over the first one) and ``catapult``: eta above
    2/sharpness at init, yet not diverged. Raises ValueError for a cube recorded without the
    sharpness probe.
    """
    cube, seed = cubes[0], options.get("seed", 0)
    sharpness = probed(cube, "sharpness")
    best = eta_star(cube)
    requested = [options["gamma"]] if "gamma" in options else None
    gamma = pick_gammas(best, requested, count=1)[0]
    stable = [float(e) for e in np.sort(cube["eta"].values) if not cell_diverged(cube).sel(gamma=gamma, eta=e)]
    etas = stable[-options.get("etas", 3) :][::-1]
    fig, (ax_loss, ax_sharp) = plt.subplots(1, 2, figsize=(7.4, 3.2))
    rows = []
    for color, eta in zip((f"C{i}" for i in range(10)), etas):
        cell = {"gamma": gamma, "eta": eta, "seed": seed}
        loss, lam = cube["train_loss_at_step"].sel(cell).values, sharpness.sel(cell).values
        ax_loss.plot(cube["step"].values + 1, loss, color=color, label=f"$\\eta$ = {eta:.3g}")
        ax_sharp.plot(cube["eval_step"].values + 1, lam, "o-", ms=2.5, color=color)
        edge = stability_edge(cube, eta, cube["eval_step"].values)  # None for the sign-based optimizers
        if edge is not None:
            ax_sharp.plot(cube["eval_step"].values + 1, edge, ls="--", lw=0.9, color=color)
        onset = np.nan if edge is None else edge[0]  # 2 / eta on the first update
        rows.append(
            {
                "experiment": cube.attrs["experiment"],
                "gamma": gamma,
                "eta": eta,
                "seed": seed,
                "sharpness_init": lam[0],
                "sharpness_final": lam[-1],
                "two_over_eta": onset,
                "loss_spike": float(np.nanmax(loss) / loss[0]),
                "catapult": bool(onset < lam[0]),
            }
        )
    ax_loss.set_xscale("log")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("SGD step t + 1")
    ax_loss.set_ylabel(f"batch loss (seed {seed})")
    ax_loss.set_title(f"{cube.attrs['experiment']}: $\\gamma$ = {gamma:.3g}, the largest stable $\\eta$")
    ax_loss.legend()
    ax_sharp.set_xscale("log")
    ax_sharp.set_yscale("log")
    ax_sharp.set_xlabel("SGD step t + 1")
    ax_sharp.set_ylabel(r"sharpness (units of $1/\eta$); dashed: $2/\eta$")
    return fig, pd.DataFrame(rows)
