"""Curvature beyond the top eigenvalue, at eta*(gamma) over training (the paper's appendix A7): the
sharpness against the readout-only Hessian's top eigenvalue and the NTK's top eigenvalues, with
the edge of stability 2/eta, and the Hessian's trace."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.figures.style import label_log_axes, stability_edge
from gammasweep.results.analysis import eta_star, pick_gammas

TOP = {"sharpness": "Hessian", "readout_sharpness": "readout-only Hessian", "ntk_eigenvalue": "NTK"}
TRACE = "hessian_trace"


def curvature_measures(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gammas (list, each read as the nearest grid gamma; default the smallest, median and
    largest gamma with a finite eta*), metric for eta* (default test_loss).

    One column per gamma of the first cube, at its eta* and the seeds' mean. Top row: the top
    eigenvalue of the Hessian, of its readout block and the NTK's top eigenvalues (mode 1 bold)
    against 2/eta; bottom row: the Hessian's trace. A measure the experiment did not record is left
    out; ValueError if it recorded none of them.
    """
    cube = cubes[0]
    recorded = [name for name in (*TOP, TRACE) if name in cube and cube[name].notnull().any()]
    if not recorded:
        raise ValueError(
            f"experiment {cube.attrs.get('experiment')!r} has no curvature measurements: switch on "
            "one of the probes sharpness, readout_sharpness, ntk_spectrum, hessian_trace "
            "(training: {probes: ...}) and retrain"
        )
    best = eta_star(cube, options.get("metric", "test_loss"))
    gammas = pick_gammas(best, options.get("gammas"))
    rows_of_panels = 2 if TRACE in recorded else 1
    fig, axes = plt.subplots(
        rows_of_panels, len(gammas), figsize=(3.4 * len(gammas), 2.9 * rows_of_panels), squeeze=False, sharex="col"
    )
    steps = cube["eval_step"].values + 1
    rows = []
    for column, gamma in enumerate(gammas):
        eta = float(best.sel(gamma=gamma))
        cell = cube.sel(gamma=gamma, eta=eta).mean("seed")
        top = axes[0, column]
        for color, name in zip(("C0", "C1", "C2"), TOP):
            if name not in recorded:
                continue
            values = cell[name]
            modes = values.transpose("eval_step", ...).values.reshape(len(steps), -1)  # (eval_step, modes)
            for mode in range(modes.shape[1]):
                top.plot(
                    steps,
                    modes[:, mode],
                    "o-" if mode == 0 else "-",
                    ms=2.5,
                    lw=1.4 if mode == 0 else 0.7,
                    alpha=1.0 if mode == 0 else 0.5,
                    color=color,
                    label=TOP[name] if mode == 0 else None,
                )
            rows += _table_rows(cube, gamma, eta, name, steps, modes)
        edge = stability_edge(cube, eta, steps - 1)  # 2 / (scheduled eta); None for the sign-based optimizers
        if edge is not None:
            top.plot(steps, edge, ls="--", lw=0.9, color="k", label=r"$2/\eta^*$")
        label_log_axes(
            top,
            "" if rows_of_panels == 2 else "SGD step t + 1",
            r"top eigenvalues (units of $1/\eta$)" if column == 0 else "",
        )
        top.set_title(f"$\\gamma$ = {gamma:.3g}, $\\eta^*$ = {eta:.3g}")
        if column == 0:
            top.legend(fontsize=6)
        if TRACE in recorded:
            trace = cell[TRACE].values
            axes[1, column].plot(steps, trace, "o-", ms=2.5, color="C3")
            label_log_axes(
                axes[1, column], "SGD step t + 1", r"Hessian trace (units of $1/\eta$)" if column == 0 else ""
            )
            finite = trace[np.isfinite(trace)]
            if (finite <= 0).any():  # Hutchinson's estimate of a trace near a saddle can be negative
                axes[1, column].set_yscale("symlog", linthresh=1e-3 * np.abs(finite).max())
            rows += _table_rows(cube, gamma, eta, TRACE, steps, trace[:, None])
    fig.suptitle(f"{cube.attrs.get('experiment', '')}: curvature at $\\eta^*$", fontsize=9)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def _table_rows(
    cube: xr.Dataset, gamma: float, eta: float, measure: str, steps: np.ndarray, modes: np.ndarray
) -> list[dict]:
    """One row per eval step and mode of a measure's seed-mean values (eval_step, modes), with the edge of
    stability at that step (NaN for the sign-based optimizers)."""
    edge = stability_edge(cube, eta, steps - 1)
    return [
        {
            "experiment": cube.attrs.get("experiment"),
            "gamma": gamma,
            "eta": eta,
            "measure": measure,
            "mode": mode + 1,
            "eval_step": int(step - 1),
            "value": float(value),
            "two_over_eta": np.nan if edge is None else edge[i],
        }
        for i, step in enumerate(steps)
        for mode, value in enumerate(modes[i])
    ]
