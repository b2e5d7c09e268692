"""Quantities of a related experiment against the iteration, one line per variant (the median over
seeds, shaded between the smallest and largest seed): the sparse-features papers' loss, Jacobian
rank and support curves, the noise-equilibrium paper's gaps, charges and Hessian traces, the
two-weight toy's catapults (its sharpness against 2 / eta)."""

from __future__ import annotations

import itertools
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr


def trajectories(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: variables (required: the cube variables over (variant, seed, step), one panel
    each), log_y (the variables drawn on a log y axis; default none), variants (default all),
    select ({dim: [coordinates]}: of a variable with a further dim such as ``layer`` -- drawn in one
    panel per coordinate -- only these; default all), stability_edge (variables, e.g. sharpness,
    whose panels get each variant's edge of stability 2 / eta, eta its peak step size, as a dashed
    line of its colour; default none).

    One row of panels per cube. The table holds, per cube, variant and variable, the median,
    minimum and maximum over seeds of the last record and the runs that diverged. Raises
    ValueError naming a requested variable the cube lacks.
    """
    variables, log_y = options["variables"], set(options.get("log_y", []))
    edges = set(options.get("stability_edge", []))
    panels = [_panels(cube, variables, options.get("select", {})) for cube in cubes]
    columns = max(len(p) for p in panels)
    fig, axes = plt.subplots(len(cubes), columns, figsize=(3.2 * columns, 2.8 * len(cubes)), squeeze=False)
    rows = []
    for ax_row, cube, cube_panels in zip(axes, cubes, panels):
        variants = options.get("variants", list(cube["variant"].values))
        for ax in ax_row[len(cube_panels) :]:
            ax.set_axis_off()
        for ax, (name, where) in zip(ax_row, cube_panels):
            for variant in variants:
                values = cube[name].sel(variant=variant, **where)  # (seed, step)
                median = values.median("seed")
                line = ax.plot(cube["step"], median, lw=1.2, label=_label(cube, variant))[0]
                ax.fill_between(
                    cube["step"], values.min("seed"), values.max("seed"), color=line.get_color(), alpha=0.2, lw=0
                )
                if name in edges:
                    ax.axhline(
                        2.0 / float(cube["eta"].sel(variant=variant)),
                        color=line.get_color(),
                        ls="--",
                        lw=0.8,
                        gid=f"stability_edge:{variant}",
                    )
                last = values.isel(step=-1)
                rows.append(
                    {
                        "kind": cube.attrs.get("kind"),
                        "variant": variant,
                        "variable": _name(name, where),
                        "final_median": float(last.median()),
                        "final_min": float(last.min()),
                        "final_max": float(last.max()),
                        "diverged_runs": int((cube["diverged_step"].sel(variant=variant) >= 0).sum()),
                    }
                )
            ax.set_xlabel("iteration")
            ax.set_ylabel(_name(name, where))
            ax.set_title(textwrap.fill(cube[name].attrs.get("long_name", name), 40), fontsize=7)
            if name in log_y:
                ax.set_yscale("log")
        ax_row[len(cube_panels) - 1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def _panels(cube: xr.Dataset, variables: list[str], select: dict) -> list[tuple[str, dict]]:
    """(variable, {dim: coordinate}) of each panel: one per coordinate of a variable's dims beyond
    (variant, seed, step), restricted to ``select``. Raises ValueError naming a variable the cube lacks."""
    if missing := [v for v in variables if v not in cube]:
        raise ValueError(
            f"related cube {cube.attrs.get('kind')}: no variables {missing}; it has {sorted(cube.data_vars)}"
        )
    panels = []
    for name in variables:
        extra = [d for d in cube[name].dims if d not in ("variant", "seed", "step")]
        grid = [select.get(d, cube[d].values.tolist()) for d in extra]
        panels += [(name, dict(zip(extra, point))) for point in itertools.product(*grid)]
    return panels


def _name(name: str, where: dict) -> str:
    """'variable' or 'variable [dim=coordinate]' for a panel."""
    return name + (f" [{', '.join(f'{d}={c}' for d, c in where.items())}]" if where else "")


def _label(cube: xr.Dataset, variant: str) -> str:
    """'variant (eta, schedule)' for the legend."""
    entry = cube.sel(variant=variant)
    schedule = str(entry["schedule"].values) if "schedule" in cube else ""
    eta = float(entry["eta"]) if "eta" in cube else np.nan
    return f"{variant}: eta {eta:g}" + (f", {schedule}" if schedule and schedule != "constant" else "")
