"""Networks of different gamma compute nearly the same function (paper Fig. 6a): the centered
outputs of two networks, each at its eta*, on the same probe images, scattered against each other."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.results.analysis import eta_star, pick_gammas, probed


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson r, R^2 of the identity b = a: 1 - sum (b - a)^2 / sum (b - mean b)^2) of two flat arrays."""
    r = float(np.corrcoef(a, b)[0, 1])
    return r, float(1.0 - ((b - a) ** 2).sum() / ((b - b.mean()) ** 2).sum())


def output_agreement(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: pairs (list of [gamma_a, gamma_b], each read as the nearest grid gamma; default the
    two largest gammas with a finite eta*, and the smallest against the largest), seed (default 0),
    metric for eta* (default test_loss).

    One panel per pair: every output (probe image x class) of network a against network b, with the
    diagonal. The table has one row per pair: both gammas and etas, Pearson r and R^2 of the
    identity. Raises ValueError for a cube recorded without the outputs probe.
    """
    cube, seed = cubes[0], options.get("seed", 0)
    outputs, best = probed(cube, "probe_output"), eta_star(cube, options.get("metric", "test_loss"))
    if "pairs" in options:
        pairs = [tuple(pick_gammas(best, [gamma])[0] for gamma in pair) for pair in options["pairs"]]
    else:
        finite = pick_gammas(best, count=len(best))
        pairs = [(finite[-2], finite[-1]), (finite[0], finite[-1])] if len(finite) > 1 else [(finite[0], finite[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.3 * len(pairs), 3.3), squeeze=False)
    rows = []
    for ax, pair in zip(axes[0], pairs):
        etas = [float(best.sel(gamma=g)) for g in pair]
        a, b = (outputs.sel(gamma=g, eta=e, seed=seed).values.ravel() for g, e in zip(pair, etas))
        r, r2 = agreement(a, b)
        ax.scatter(a, b, s=3, alpha=0.4, lw=0)
        low, high = min(a.min(), b.min()), max(a.max(), b.max())
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        ax.set_xlabel(f"f(x), $\\gamma$ = {pair[0]:.3g}")
        ax.set_ylabel(f"f(x), $\\gamma$ = {pair[1]:.3g}")
        ax.set_title(f"r = {r:.3f}, $R^2$ = {r2:.3f}")
        rows.append(
            {
                "experiment": cube.attrs["experiment"],
                "gamma_a": pair[0],
                "eta_a": etas[0],
                "gamma_b": pair[1],
                "eta_b": etas[1],
                "seed": seed,
                "pearson_r": r,
                "r_squared": r2,
                "outputs": a.size,
            }
        )
    fig.suptitle(f"{cube.attrs['experiment']}: outputs on the probe images, each network at its $\\eta^*$")
    return fig, pd.DataFrame(rows)
