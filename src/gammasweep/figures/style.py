"""The one house style: seaborn's colour-blind palette, no LaTeX, log axes labelled with units."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr

from gammasweep.sweep.schedules import Schedule
from gammasweep.theory.toy import divergence_slopes

SEQUENTIAL = "viridis"  # perceptually uniform and colour-blind safe
RC = {
    "text.usetex": False,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "figure.dpi": 150,
    "pdf.fonttype": 42,
}


@contextlib.contextmanager
def theme() -> Iterator[None]:
    """Apply the house style inside the block only."""
    with plt.rc_context(), sns.axes_style("ticks"):
        sns.set_palette("colorblind")
        plt.rcParams.update(RC)
        yield


def log_edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges for pcolormesh on a log axis: geometric midpoints, extended half a step outside."""
    logs = np.log10(np.asarray(centers, np.float64))
    step = np.diff(logs)
    mids = logs[:-1] + step / 2
    first, last = logs[0] - (step[0] if len(step) else 0.5) / 2, logs[-1] + (step[-1] if len(step) else 0.5) / 2
    return 10.0 ** np.concatenate([[first], mids, [last]])


def gamma_colors(gammas: np.ndarray) -> list:
    """One colour per gamma on the sequential palette, ordered by log gamma."""
    return sns.color_palette(SEQUENTIAL, n_colors=len(gammas))


def depth_of(cube: xr.Dataset) -> int | None:
    """The model depth L recorded in a cube's cell parameters (None for depth-free models)."""
    return json.loads(cube.attrs["cell_params"])["model"].get("depth")


def optimizer_of(cube: xr.Dataset) -> str:
    """The optimizer a cube's cells were trained with ('sgd' for cubes from before the option)."""
    return json.loads(cube.attrs["cell_params"]).get("optimizer", {}).get("name", "sgd")


def stability_edge(cube: xr.Dataset, eta: float | np.ndarray, eval_steps: np.ndarray) -> np.ndarray | None:
    """GD's edge of stability for the cube's cells at learning rate ``eta``, at each eval step (units of
    1/eta, as the sharpness): 2 / (eta x the schedule's factor on the update that follows the
    measurement). None for SignSGD and Adam: their steps do not scale with the gradient, so no 2/eta
    bounds their sharpness."""
    if optimizer_of(cube) != "sgd":
        return None
    params = json.loads(cube.attrs["cell_params"])
    factors = Schedule.from_config(params.get("schedule")).factors(params["steps"])
    return 2.0 / (np.asarray(eta, np.float64) * factors[np.clip(np.asarray(eval_steps, int), 0, len(factors) - 1)])


def edge_slopes(cube: xr.Dataset) -> tuple[float, float]:
    """The theory's (lazy, rich) exponents of eta_max(gamma) for a cube's loss, optimizer and depth
    (``theory.divergence_slopes``)."""
    return divergence_slopes(json.loads(cube.attrs["cell_params"])["loss"], optimizer_of(cube), depth_of(cube))


def eta_label(cube: xr.Dataset) -> str:
    """The learning-rate axis label: what eta means for the cube's optimizer."""
    return (
        r"learning rate $\eta$ (SGD lr $= N\eta$)"
        if optimizer_of(cube) == "sgd"
        else rf"learning rate $\eta$ ({optimizer_of(cube)}, muP per layer)"
    )


def label_log_axes(ax: plt.Axes, x: str, y: str) -> None:
    """Log-log axes labelled ``x`` and ``y``."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
