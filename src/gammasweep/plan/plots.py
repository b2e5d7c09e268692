"""What each plot kind reads and which options it takes: the one declaration the plan checks a figure's
config against before any job runs. The plotting functions are in ``gammasweep.figures`` (``PLOTS``),
their options documented there; this module imports neither matplotlib nor torch."""

from __future__ import annotations

from dataclasses import dataclass

INPUT_KEYS = ("experiments", "toy_models", "related", "datasets")  # a figure's keys naming what it reads


@dataclass(frozen=True)
class PlotKind:
    """A plot kind's input (one of ``INPUT_KEYS``: experiment cubes, toy-model cubes, related experiments'
    cubes, or previews of datasets' pool and test files), the names of the options it reads, those a
    figure must give, and groups of options given together or not at all."""

    reads: str
    options: frozenset[str]
    required: frozenset[str] = frozenset()
    together: tuple[frozenset[str], ...] = ()


FIT_WINDOWS = ("lazy_max", "rich_min")  # ``results.analysis.fit_windows``: both, or the windows by its rule


def _kind(reads: str, *options: str, required: tuple[str, ...] = ()) -> PlotKind:
    together = (frozenset(FIT_WINDOWS),) if set(FIT_WINDOWS) <= set(options) else ()
    return PlotKind(reads, frozenset(options) | frozenset(required), frozenset(required), together)


PLOT_KINDS: dict[str, PlotKind] = {
    "phase_portrait": _kind("experiments", "metric", "steps"),
    "loss_curves": _kind("experiments", "gammas", "metric"),
    "eta_star_scaling": _kind("experiments", "metric", *FIT_WINDOWS),
    "adaptive_coverage": _kind("experiments", "metric"),
    "performance_vs_gamma": _kind("experiments", "metric", "steps"),
    "sharpness_vs_gamma": _kind("experiments", "metric", *FIT_WINDOWS),
    "sharpness_trajectory": _kind("experiments", "gammas", "etas_below", "metric"),
    "curvature_measures": _kind("experiments", "gammas", "metric"),
    "toy_phase_portrait": _kind("toy_models", "loss_floor", *FIT_WINDOWS),
    "regime_diagram": _kind("toy_models", "points"),
    "catapult": _kind("experiments", "gamma", "etas", "seed"),
    "hessian_spectrum": _kind("experiments", "gammas", "top", "seed", "bandwidth", "metric"),
    "silent_alignment": _kind("experiments", "gammas", "metric"),
    "output_agreement": _kind("experiments", "pairs", "seed", "metric"),
    "representation_similarity": _kind("experiments", "metric"),
    "weight_movement": _kind("experiments", "metric", *FIT_WINDOWS),
    "feature_sparsity_curves": _kind("experiments", "at_eta_star"),
    "trajectories": _kind("related", "log_y", "variants", "select", "stability_edge", required=("variables",)),
    "neuron_directions": _kind("related", "variants", "seed", "angle_tolerance", "min_magnitude"),
    "equilibrium_heatmaps": _kind("related", "variants", "seed", required=("matrices",)),
    "equilibrium_sweep": _kind("related", "groups", "theory", "x_label", "log_x", required=("which", "x")),
    "sample_grid": _kind("datasets", "per_class", "seed"),  # read where the previews are opened, too
}


def plots_reading(key: str) -> set[str]:
    """The plot kinds whose figures read ``key`` (one of ``INPUT_KEYS``)."""
    return {plot for plot, kind in PLOT_KINDS.items() if kind.reads == key}
