"""Heat maps of the two sides of a noise-equilibrium relation after training (Ziyin et al. 2024, B-6
and B-9): per variant, the left matrix, the right matrix and their difference on one colour scale.
Under SGD the two sides match; under GD they keep the imbalance of the initialization."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.related.noether import relative_gap


def equilibrium_heatmaps(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: matrices (required: [left, right], two cube variables over (variant, seed, row,
    col), e.g. [w_sigma_w, u_sigma_u]), variants (default all), seed (the seed drawn; default 0).

    One row of three panels per cube and variant. The table holds, per cube and variant, the
    relative gap ||left - right||_F / ||right||_F and the same for the diagonals only (median,
    minimum and maximum over seeds). Raises ValueError naming a matrix the cube lacks.
    """
    left_name, right_name = options["matrices"]
    rows_of_panels = [
        (cube, variant) for cube in cubes for variant in options.get("variants", list(cube["variant"].values))
    ]
    fig, axes = plt.subplots(len(rows_of_panels), 3, figsize=(8.4, 2.6 * len(rows_of_panels)), squeeze=False)
    table = []
    for ax_row, (cube, variant) in zip(axes, rows_of_panels):
        if missing := [m for m in (left_name, right_name) if m not in cube]:
            raise ValueError(
                f"related cube {cube.attrs.get('kind')}: no matrices {missing}; it has {sorted(cube.data_vars)}"
            )
        left, right = cube[left_name].sel(variant=variant), cube[right_name].sel(variant=variant)  # (seed, row, col)
        gap = relative_gap(left.values, right.values)
        eye = np.eye(left.shape[-1])
        diagonal_gap = relative_gap(
            *(np.diagonal(m, axis1=-2, axis2=-1)[..., None, :] * eye for m in (left.values, right.values))
        )
        table.append(
            {
                "kind": cube.attrs.get("kind"),
                "variant": variant,
                "left": left_name,
                "right": right_name,
                "relative_gap_median": float(np.median(gap)),
                "relative_gap_min": float(gap.min()),
                "relative_gap_max": float(gap.max()),
                "diagonal_gap_median": float(np.median(diagonal_gap)),
            }
        )
        seed = options.get("seed", 0)
        panels = [
            (left.sel(seed=seed).values, cube[left_name].attrs.get("long_name", left_name)),
            (right.sel(seed=seed).values, cube[right_name].attrs.get("long_name", right_name)),
            (left.sel(seed=seed).values - right.sel(seed=seed).values, "difference"),
        ]
        scale = max(float(np.abs(p).max()) for p, _ in panels[:2]) or 1.0
        for ax, (values, title) in zip(ax_row, panels):
            image = ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
            ax.set_title(textwrap.fill(title.replace(" after the last step", ""), 28), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(f"{variant}\nrelative gap {np.median(gap):.2f}", fontsize=8)
        fig.colorbar(image, ax=list(ax_row), shrink=0.8)
    return fig, pd.DataFrame(table)
