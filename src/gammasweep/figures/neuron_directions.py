"""A two-layer ReLU student's first-layer neurons in the input plane against the teacher's
(Andriushchenko et al. 2023, A-TS2): with a large step size kept longer, the active neurons gather
on fewer directions, near the teacher's."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr


def direction_clusters(vectors: np.ndarray, angle_tolerance: float) -> int:
    """How many directions the rows of ``vectors`` (k x d, nonzero) gather on: greedily in row order,
    a row within ``angle_tolerance`` degrees of a kept row's direction joins it, else it is kept."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    kept: list[np.ndarray] = []
    for u in unit:
        if not any(np.degrees(np.arccos(np.clip(u @ k, -1.0, 1.0))) <= angle_tolerance for k in kept):
            kept.append(u)
    return len(kept)


def neuron_magnitudes(cube: xr.Dataset) -> xr.DataArray:
    """Each first-layer neuron's weight in the output (variant, seed, neuron): |a_j| ||w_j|| when the readout
    acts on the first layer (h = sum_j a_j ||w_j|| relu(<w_j / ||w_j||, x>)), else ||w_j||."""
    norms = np.sqrt((cube["first_layer"] ** 2).sum("coordinate"))
    return abs(cube["readout"]) * norms if "neuron" in cube["readout"].dims else norms


def neuron_directions(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: variants (default all), seed (the seed drawn per variant: an integer, or ``median``, the
    seed of the median final test loss among the runs that did not diverge; default median),
    angle_tolerance (degrees within which neurons count as one direction; default 10), min_magnitude
    (a neuron is active when its magnitude, ``neuron_magnitudes``, exceeds this fraction of the run's
    largest; default 0.01).

    One row of panels per cube (with 2-d inputs), one panel per variant: each active neuron an arrow
    from the origin along w_j, as long as its magnitude (red a_j > 0, blue a_j < 0), the teacher's
    neurons dashed black. The table holds, per cube, variant and seed, the active neurons, the
    directions they gather on, the teacher's neurons and the final test loss (NaN if diverged).
    """
    tolerance, floor = float(options.get("angle_tolerance", 10.0)), float(options.get("min_magnitude", 0.01))
    for cube in cubes:
        if cube.sizes["coordinate"] != 2:
            raise ValueError(
                f"neuron_directions draws the input plane: the cube's inputs have {cube.sizes['coordinate']} "
                "coordinates, not 2"
            )
    columns = max(len(options.get("variants", cube["variant"].values)) for cube in cubes)
    fig, axes = plt.subplots(len(cubes), columns, figsize=(2.8 * columns, 2.9 * len(cubes)), squeeze=False)
    rows = []
    for ax_row, cube in zip(axes, cubes):
        variants = list(options.get("variants", cube["variant"].values))
        magnitudes = neuron_magnitudes(cube)
        readout = cube["readout"] if "neuron" in cube["readout"].dims else xr.ones_like(magnitudes)
        for ax in ax_row[len(variants) :]:
            ax.set_axis_off()
        for ax, variant in zip(ax_row, variants):
            test_loss = (
                cube["test_loss"]
                .sel(variant=variant)
                .isel(step=-1)
                .where(cube["diverged_step"].sel(variant=variant) < 0)
            )
            counts = {}
            for seed in cube["seed"].values:
                magnitude = magnitudes.sel(variant=variant, seed=seed).values
                active = magnitude > floor * magnitude.max()
                order = np.argsort(-magnitude[active])
                weights = cube["first_layer"].sel(variant=variant, seed=seed).values[active][order]
                counts[seed] = (
                    direction_clusters(weights, tolerance) if np.isfinite(test_loss.sel(seed=seed)) else np.nan
                )
                rows.append(
                    {
                        "kind": cube.attrs.get("kind"),
                        "variant": variant,
                        "seed": int(seed),
                        "active_neurons": int(active.sum()),
                        "directions": counts[seed],
                        "teacher_neurons": cube.sizes["teacher_neuron"],
                        "final_test_loss": float(test_loss.sel(seed=seed)),
                    }
                )
            shown = _shown_seed(test_loss, options.get("seed", "median"))
            _draw(
                ax,
                cube["first_layer"].sel(variant=variant, seed=shown).values,
                magnitudes.sel(variant=variant, seed=shown).values,
                readout.sel(variant=variant, seed=shown).values,
                cube["teacher_first_layer"].values,
                floor,
            )
            ax.set_title(f"{variant}, seed {shown}: {counts[shown]:g} directions", fontsize=8)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def _shown_seed(test_loss: xr.DataArray, seed: int | str) -> int:
    """The seed to draw: ``seed`` itself, or the one of the median final test loss (test_loss over seed,
    NaN for diverged runs); seed 0 if every run diverged."""
    if seed != "median":
        return int(seed)
    finite = test_loss.dropna("seed")
    if not finite.sizes["seed"]:
        return int(test_loss["seed"][0])
    return int(finite["seed"][int(np.argsort(finite.values)[(finite.sizes["seed"] - 1) // 2])])


def _draw(
    ax: plt.Axes, weights: np.ndarray, magnitude: np.ndarray, readout: np.ndarray, teacher: np.ndarray, floor: float
) -> None:
    """The active neurons (weights (m, 2)) as arrows of length ``magnitude`` coloured by the sign of the
    readout, the teacher's (teacher (k, 2)) as dashed unit lines, on the unit circle."""
    reach = max(float(magnitude.max()), 1.0) * 1.1
    angle = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(angle), np.sin(angle), color="0.8", lw=0.8)
    for t in teacher / np.linalg.norm(teacher, axis=1, keepdims=True):
        ax.plot([0, reach * t[0]], [0, reach * t[1]], "k--", lw=1.0)
    for w, size, a in zip(weights, magnitude, readout):
        if size > floor * magnitude.max():
            tip = size * w / np.linalg.norm(w)
            ax.annotate(
                "",
                xy=tip,
                xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "lw": 1.0, "color": "tab:red" if a > 0 else "tab:blue"},
            )
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
