"""Representation similarity across gamma (paper Fig. 6b): linear CKA between the last hidden layer's
representations of networks at eta*(gamma), after training, on the same probe images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import SEQUENTIAL
from gammasweep.results.analysis import eta_star, probed
from gammasweep.results.kernels import centered_alignment


def representation_similarity(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: metric for eta* (default test_loss).

    Rows are seed 0 and columns seed 1 (when the cube has two seeds; else seed 0 again), so the
    diagonal is the agreement of two seeds at the same gamma. Left: the CKA matrix over the gammas
    with a finite eta*; right: each gamma's CKA with the smallest and with the largest gamma. The
    table holds the matrix in long form. Raises ValueError for a cube recorded without the
    representation probe.
    """
    cube = cubes[0]
    kernels, best = probed(cube, "feature_kernel"), eta_star(cube, options.get("metric", "test_loss"))
    gammas = best["gamma"].values[np.isfinite(best.values)]
    seeds = cube["seed"].values
    row_seed, column_seed = seeds[0], seeds[1] if len(seeds) > 1 else seeds[0]

    def network_kernels(seed: int) -> np.ndarray:
        """(gammas, P, P): each finite gamma's kernel at its eta*, in float64 (a cube stores it in float32),
        so that CKA's sums over P^2 entries do not round in float32."""
        return kernels.sel(
            gamma=xr.DataArray(gammas), eta=xr.DataArray(best.sel(gamma=gammas).values), seed=seed
        ).values.astype(np.float64)

    cka = centered_alignment(network_kernels(row_seed)[:, None], network_kernels(column_seed)[None, :])
    fig, (ax_matrix, ax_line) = plt.subplots(1, 2, figsize=(8.0, 3.4), layout="constrained")
    edges = np.arange(len(gammas) + 1) - 0.5
    mesh = ax_matrix.pcolormesh(edges, edges, cka, cmap=SEQUENTIAL, vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax_matrix, label="linear CKA")
    labels = [f"{g:.0e}" for g in gammas]
    ax_matrix.set_xticks(range(len(gammas)), labels, rotation=90)
    ax_matrix.set_yticks(range(len(gammas)), labels)
    ax_matrix.set_xlabel(f"$\\gamma$ (seed {column_seed})")
    ax_matrix.set_ylabel(f"$\\gamma$ (seed {row_seed})")
    ax_matrix.set_title(f"{cube.attrs['experiment']}: each network at its $\\eta^*$")
    if gammas.size:
        ax_line.plot(gammas, cka[:, 0], "o-", ms=3, label=f"vs $\\gamma$ = {gammas[0]:.3g}")
        ax_line.plot(gammas, cka[:, -1], "s-", ms=3, label=f"vs $\\gamma$ = {gammas[-1]:.3g}")
        ax_line.plot(gammas, np.diag(cka), ":", color="k", label="two seeds, same $\\gamma$")
        ax_line.legend()
    ax_line.set_xscale("log")
    ax_line.set_ylim(-0.05, 1.05)
    ax_line.set_xlabel(r"feature-learning strength $\gamma$")
    ax_line.set_ylabel("linear CKA of the last hidden layer")
    table = pd.DataFrame(
        [
            {"gamma_a": a, "seed_a": int(row_seed), "gamma_b": b, "seed_b": int(column_seed), "cka": cka[i, j]}
            for i, a in enumerate(gammas)
            for j, b in enumerate(gammas)
        ]
    )
    return fig, table
