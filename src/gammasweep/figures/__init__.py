"""Figures: one plotting function per figure kind, each reading only cubes.

A plotting function takes ``(cubes, options)`` -- the cubes of the figure's experiments, opened lazily, and
the figure's ``options`` from the config -- and returns ``(figure, table)``: a matplotlib Figure and
a pandas DataFrame of the numbers it shows (written as CSV beside the PDF and PNG).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from gammasweep.data.preview import pool_preview  # noqa: E402
from gammasweep.figures import style  # noqa: E402
from gammasweep.figures.adaptive_coverage import adaptive_coverage  # noqa: E402
from gammasweep.figures.catapult import catapult  # noqa: E402
from gammasweep.figures.curvature_measures import curvature_measures  # noqa: E402
from gammasweep.figures.equilibrium_heatmaps import equilibrium_heatmaps  # noqa: E402
from gammasweep.figures.equilibrium_sweep import equilibrium_sweep  # noqa: E402
from gammasweep.figures.eta_star_scaling import eta_star_scaling  # noqa: E402
from gammasweep.figures.feature_sparsity_curves import feature_sparsity_curves  # noqa: E402
from gammasweep.figures.hessian_spectrum import hessian_spectrum  # noqa: E402
from gammasweep.figures.loss_curves import loss_curves  # noqa: E402
from gammasweep.figures.neuron_directions import neuron_directions  # noqa: E402
from gammasweep.figures.output_agreement import output_agreement  # noqa: E402
from gammasweep.figures.performance_vs_gamma import performance_vs_gamma  # noqa: E402
from gammasweep.figures.phase_portrait import phase_portrait  # noqa: E402
from gammasweep.figures.regime_diagram import regime_diagram  # noqa: E402
from gammasweep.figures.representation_similarity import representation_similarity  # noqa: E402
from gammasweep.figures.sample_grid import PER_CLASS, sample_grid  # noqa: E402
from gammasweep.figures.sharpness_trajectory import sharpness_trajectory  # noqa: E402
from gammasweep.figures.sharpness_vs_gamma import sharpness_vs_gamma  # noqa: E402
from gammasweep.figures.silent_alignment import silent_alignment  # noqa: E402
from gammasweep.figures.toy_phase_portrait import toy_phase_portrait  # noqa: E402
from gammasweep.figures.trajectories import trajectories  # noqa: E402
from gammasweep.figures.weight_movement import weight_movement  # noqa: E402
from gammasweep.plan.plots import plots_reading  # noqa: E402
from gammasweep.results.cube import open_cube  # noqa: E402
from gammasweep.results.io import atomic_path  # noqa: E402
from gammasweep.results.provenance import versions  # noqa: E402

PlotFunction = Callable[[list[xr.Dataset], dict], tuple[plt.Figure, pd.DataFrame]]
PLOTS: dict[str, PlotFunction] = {
    "phase_portrait": phase_portrait,
    "loss_curves": loss_curves,
    "eta_star_scaling": eta_star_scaling,
    "adaptive_coverage": adaptive_coverage,
    "performance_vs_gamma": performance_vs_gamma,
    "sharpness_vs_gamma": sharpness_vs_gamma,
    "sharpness_trajectory": sharpness_trajectory,
    "curvature_measures": curvature_measures,
    "toy_phase_portrait": toy_phase_portrait,
    "regime_diagram": regime_diagram,
    "catapult": catapult,
    "hessian_spectrum": hessian_spectrum,
    "silent_alignment": silent_alignment,
    "output_agreement": output_agreement,
    "representation_similarity": representation_similarity,
    "weight_movement": weight_movement,
    "feature_sparsity_curves": feature_sparsity_curves,
    "trajectories": trajectories,
    "neuron_directions": neuron_directions,
    "equilibrium_heatmaps": equilibrium_heatmaps,
    "equilibrium_sweep": equilibrium_sweep,
    "sample_grid": sample_grid,
}
# What each kind reads is declared in ``plan.plots.PLOT_KINDS`` (with its options), checked before any job runs:
TOY_PLOTS = plots_reading("toy_models")  # toy-model cubes (``theory.toy_cube``), not experiment cubes
RELATED_PLOTS = plots_reading("related")  # related experiments' cubes (``related.related_cube``)
DATASET_PLOTS = plots_reading("datasets")  # previews of pool and test-set files (``open_input``), not cubes


def open_input(path: str | Path, options: dict) -> xr.Dataset:
    """A figure's input: a cube (.nc), or the class-balanced preview of a pool or test-set file (.h5;
    ``options``' per_class, default ``sample_grid.PER_CLASS``, and seed, default 0)."""
    if Path(path).suffix == ".h5":
        return pool_preview(path, options.get("per_class", PER_CLASS), options.get("seed", 0))
    return open_cube(path)


def render(
    plot: str, cube_paths: Sequence[str | Path], options: dict, outputs: dict[str, str | Path], title: str | None = None
) -> None:
    """Draw figure kind ``plot`` from its inputs (``open_input``) and atomically write outputs['pdf'],
    ['png'], ['csv']. The cubes are read lazily (``open_cube``), only what the figure selects, and closed
    at the end."""
    with contextlib.ExitStack() as opened, style.theme():
        cubes = [opened.enter_context(open_input(p, options)) for p in cube_paths]
        fig, table = PLOTS[plot](cubes, options)
        if title:
            fig.suptitle(title)
        about = json.dumps(
            {"plot": plot, "options": options, "cubes": [str(p) for p in cube_paths], "versions": versions()},
            sort_keys=True,
        )
        for fmt, meta in (("pdf", {"Subject": about, "Creator": "gammasweep"}), ("png", {"Description": about})):
            with atomic_path(outputs[fmt]) as tmp:
                fig.savefig(tmp, format=fmt, metadata=meta, bbox_inches="tight", dpi=150)
        plt.close(fig)
    with atomic_path(outputs["csv"]) as tmp:
        table.to_csv(tmp, index=False)
