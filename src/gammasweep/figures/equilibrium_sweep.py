"""A final-state quantity of a related experiment against the setting its variants sweep, one line per
group of variants (e.g. SGD, SGD + weight decay, GD + weight decay), with theory curves from the cube:
the noise-equilibrium paper's norm balance and sharpness against the input anisotropy phi_x (B-3 / B-8)."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr


def final_state(cube: xr.Dataset, name: str) -> xr.DataArray:
    """The variable after training, (variant, seed): its last record if it is over step."""
    return cube[name].isel(step=-1) if "step" in cube[name].dims else cube[name]


def sweep_values(cube: xr.Dataset, x: str | dict) -> pd.Series:
    """The swept value of every variant: the mapping variant -> value, or a cube variable over variant
    (or over (variant, seed), constant across seeds, e.g. phi_x)."""
    if isinstance(x, dict):
        return pd.Series({v: float(x[v]) for v in cube["variant"].values if v in x})
    values = cube[x]
    if "seed" in values.dims:
        values = values.median("seed")
    return values.to_series().astype(float)


def equilibrium_sweep(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: which (required: a cube variable or a list of them, one panel each: its final state,
    the median over seeds with min-max bars), x (required: a cube variable over variant such as phi_x
    or eta, or a mapping variant -> x value; variants without one are left out), groups (label ->
    variants, one line each; default one line of all variants), theory (which -> cube variables
    drawn dashed against x, e.g. the noise-equilibrium prediction of each variant's problem),
    x_label, log_x (default false).

    One row of panels per cube. The table holds one row per cube, panel and variant (kind "run":
    median, min, max, diverged runs) and per theory variable and x (kind "theory").
    """
    which = [options["which"]] if isinstance(options["which"], str) else list(options["which"])
    fig, axes = plt.subplots(len(cubes), len(which), figsize=(3.6 * len(which), 3.0 * len(cubes)), squeeze=False)
    rows = []
    for ax_row, cube in zip(axes, cubes):
        wanted = which + [t for w in which for t in options.get("theory", {}).get(w, [])]
        if isinstance(options["x"], str):
            wanted.append(options["x"])
        if missing := [v for v in wanted if v not in cube]:
            raise ValueError(
                f"related cube {cube.attrs.get('kind')}: no variables {missing}; it has {sorted(cube.data_vars)}"
            )
        xs = sweep_values(cube, options["x"])
        groups = options.get("groups") or {"all": list(xs.index)}
        for ax, name in zip(ax_row, which):
            final = final_state(cube, name)
            for label, variants in groups.items():
                variants = sorted((v for v in variants if v in xs.index), key=lambda v: xs[v])
                values = final.sel(variant=variants)
                median, low, high = (values.median("seed"), values.min("seed"), values.max("seed"))
                ax.errorbar(
                    xs[variants], median, yerr=[median - low, high - median], fmt="o-", ms=3, capsize=2, label=label
                )
                rows += [
                    {
                        "kind": "run",
                        "cube": cube.attrs.get("kind"),
                        "quantity": name,
                        "group": label,
                        "variant": v,
                        "x": xs[v],
                        "median": float(median.sel(variant=v)),
                        "min": float(low.sel(variant=v)),
                        "max": float(high.sel(variant=v)),
                        "diverged_runs": int((cube["diverged_step"].sel(variant=v) >= 0).sum()),
                    }
                    for v in variants
                ]
            for i, theory in enumerate(options.get("theory", {}).get(name, [])):
                per_x = (
                    pd.Series(
                        final_state(cube, theory).median("seed").sel(variant=list(xs.index)).values, index=xs.values
                    )
                    .groupby(level=0)
                    .median()
                    .sort_index()
                )
                ax.plot(
                    per_x.index,
                    per_x.values,
                    ls=("--", ":", "-.")[i % 3],
                    color="k",
                    lw=1,
                    label=cube[theory].attrs.get("long_name", theory),
                )
                rows += [
                    {
                        "kind": "theory",
                        "cube": cube.attrs.get("kind"),
                        "quantity": name,
                        "group": theory,
                        "x": x,
                        "median": value,
                    }
                    for x, value in per_x.items()
                ]
            ax.set_xlabel(options.get("x_label", options["x"] if isinstance(options["x"], str) else "setting"))
            ax.set_ylabel(name)
            ax.set_title(textwrap.fill(cube[name].attrs.get("long_name", name), 45), fontsize=7)
            if options.get("log_x"):
                ax.set_xscale("log")
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)
