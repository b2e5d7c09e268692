"""The Hessian's spectrum over training (paper Fig. 4d): the top Ritz values against steps and the
spectral density at the first and last evaluation, at eta*(gamma), for a lazy and a rich gamma."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import stability_edge
from gammasweep.results.analysis import eta_star, pick_gammas, probed


def top_ritz_values(values: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest nodes of one Lanczos start (ritz,) with positive weight, descending,
    NaN-padded."""
    nodes = np.sort(values[np.isfinite(values) & (weights > 0)])[::-1][:count]
    return np.pad(nodes, (0, count - len(nodes)), constant_values=np.nan)


def spectral_density(values: np.ndarray, weights: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
    """sum_j weight_j N(grid; value_j, width^2): the quadrature's nodes broadened by Gaussians."""
    ok = np.isfinite(values) & (weights > 0)
    z = (grid[:, None] - values[ok][None, :]) / width
    return (weights[ok][None, :] * np.exp(-0.5 * z**2)).sum(1) / (width * np.sqrt(2 * np.pi))


def hessian_spectrum(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gammas (default the smallest and largest gamma with a finite eta*), top (k, default
    5), seed (default 0), bandwidth (Gaussian width as a fraction of the node range, default 0.02),
    metric for eta* (default test_loss).

    One column per gamma at its eta*: on top the k largest Ritz values of the first Lanczos start
    against eval step + 1, with 2/eta; below the spectral density (all starts) at the first and last
    eval step. The table has the top values (kind "top") and per gamma and rank their growth from the
    first to the last eval step (kind "growth"): in the rich regime many eigenvalues grow, not just a
    few outliers. Raises ValueError for a cube recorded without the spectrum probe.
    """
    cube, top, seed = cubes[0], options.get("top", 5), options.get("seed", 0)
    values, weights = probed(cube, "hessian_ritz_value"), cube["hessian_ritz_weight"]
    best = eta_star(cube, options.get("metric", "test_loss"))
    gammas = pick_gammas(best, options.get("gammas"), count=2)
    evals = cube["eval_step"].values
    fig, axes = plt.subplots(2, len(gammas), figsize=(3.8 * len(gammas), 5.4), squeeze=False, layout="constrained")
    rows = []
    for column, gamma in enumerate(gammas):
        ax_top, ax_density = axes[0, column], axes[1, column]
        eta = float(best.sel(gamma=gamma))
        cell = {"gamma": gamma, "eta": eta, "seed": seed}
        nodes, masses = values.sel(cell).values, weights.sel(cell).values  # (eval_step, start, ritz)
        tops = np.array([top_ritz_values(nodes[v, 0], masses[v, 0], top) for v in range(len(evals))])
        for rank in range(top):
            ax_top.plot(
                evals + 1,
                tops[:, rank],
                "o-",
                ms=2.5,
                color=plt.get_cmap("viridis")(rank / max(top - 1, 1)),
                label=f"$\\lambda_{rank + 1}$" if column == 0 else None,
            )
            rows += [
                {"kind": "top", "gamma": gamma, "eta": eta, "rank": rank + 1, "eval_step": int(s), "value": v}
                for s, v in zip(evals, tops[:, rank])
            ]
            first = tops[np.isfinite(tops[:, rank]), rank]
            rows.append(
                {
                    "kind": "growth",
                    "gamma": gamma,
                    "eta": eta,
                    "rank": rank + 1,
                    "value": first[-1] / first[0] if first.size else np.nan,
                }
            )
        edge = stability_edge(cube, eta, evals)  # 2 / (scheduled eta); None for the sign-based optimizers
        if edge is not None:
            ax_top.plot(evals + 1, edge, ls="--", color="k", lw=0.9, label=r"$2/\eta$" if column == 0 else None)
        ax_top.set_xscale("log")
        ax_top.set_yscale("log")  # (a non-positive value, as at a saddle, is not drawn; it is in the table)
        ax_top.set_xlabel("SGD step t + 1")
        ax_top.set_title(
            f"{cube.attrs['experiment']}: $\\gamma$ = {gamma:.3g}, $\\eta^*$ = {eta:.3g}"
            if column == 0
            else f"$\\gamma$ = {gamma:.3g}, $\\eta^*$ = {eta:.3g}"
        )
        finite = nodes[np.isfinite(nodes)]
        if finite.size:
            span = max(finite.max() - finite.min(), abs(finite.max()), 1e-30)
            grid = np.linspace(finite.min() - 0.1 * span, finite.max() + 0.1 * span, 400)
            for v, style in ((0, "--"), (len(evals) - 1, "-")):
                density = spectral_density(
                    nodes[v].ravel(), masses[v].ravel(), grid, options.get("bandwidth", 0.02) * span
                )
                shown = np.where(density > 1e-9 * density.max(), density, np.nan)  # a log axis: no zeros
                ax_density.plot(grid, shown, style, color="C0", label=f"t = {evals[v]}")
            ax_density.set_yscale("log")
            ax_density.legend()
        ax_density.set_xlabel(r"Hessian eigenvalue (units of $1/\eta$)")
        if column == 0:
            ax_top.set_ylabel("top Ritz values")
            ax_density.set_ylabel("spectral density")
            ax_top.legend(ncol=2)
    return fig, pd.DataFrame(rows)
