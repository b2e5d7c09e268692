"""Silent alignment (paper Fig. 5): the train loss and the kernel-target alignment of the last hidden
layer's kernel and of the empirical NTK on one time axis, at eta*(gamma), for a lazy and a rich gamma."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gammasweep.results.analysis import eta_star, pick_gammas, probed


def first_crossing(
    steps: np.ndarray, values: np.ndarray, rising: bool, log: bool = False, min_change: float = 0.05
) -> float:
    """The first step at which ``values`` has made half its way from its first value to its extreme
    (max if ``rising``, else min; halfway in log10 if ``log``); NaN without finite values or where the
    change is below ``min_change`` (in log10 if ``log``): a flat curve has no halfway step."""
    ok = np.isfinite(values) & ((values > 0) if log else True)
    if not ok.any():
        return np.nan
    steps, values = steps[ok], np.log10(values[ok]) if log else values[ok]
    extreme = values.max() if rising else values.min()
    if abs(extreme - values[0]) < min_change:
        return np.nan
    level = values[0] + 0.5 * (extreme - values[0])
    reached = values >= level if rising else values <= level
    return float(steps[np.argmax(reached)])


def silent_alignment(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: gammas (list; default the smallest and largest gamma with a finite eta*), metric for
    eta* (default test_loss).

    One column per gamma, each at its eta* and seed mean: on top the train loss against step + 1,
    below the feature and NTK alignments against eval step + 1. The table has the curves (kind
    "loss" and "alignment") and per gamma a kind "summary" row: the steps where the NTK and feature
    alignments have made half their rise and where the loss has made half its fall (in log); NaN
    where the curve moves less than 0.05 (alignment) or 0.05 decades (loss). Silent
    alignment puts the alignment's step well before the loss's. Raises ValueError for a cube recorded
    without the alignment probe.
    """
    cube = cubes[0]
    ntk, features = probed(cube, "ntk_alignment"), probed(cube, "feature_alignment")
    best = eta_star(cube, options.get("metric", "test_loss"))
    gammas = pick_gammas(best, options.get("gammas"), count=2)
    fig, axes = plt.subplots(2, len(gammas), figsize=(3.6 * len(gammas), 4.6), squeeze=False, sharex="col")
    steps, evals, rows = cube["step"].values, cube["eval_step"].values, []
    for column, gamma in enumerate(gammas):
        ax_loss, ax_align = axes[0, column], axes[1, column]
        eta = float(best.sel(gamma=gamma))
        cell = {"gamma": gamma, "eta": eta}
        loss = cube["train_loss"].sel(cell).mean("seed").values
        alignments = {"ntk": ntk.sel(cell).mean("seed").values, "feature": features.sel(cell).mean("seed").values}
        ax_loss.plot(steps + 1, loss, color="k")
        ax_loss.set_xscale("log")
        ax_loss.set_yscale("log")
        ax_loss.set_title(
            f"{cube.attrs['experiment']}: $\\gamma$ = {gamma:.3g}, $\\eta^*$ = {eta:.3g}"
            if column == 0
            else f"$\\gamma$ = {gamma:.3g}, $\\eta^*$ = {eta:.3g}"
        )
        for (name, values), color in zip(alignments.items(), ("C0", "C1")):
            ax_align.plot(evals + 1, values, "o-", ms=3, color=color, label=f"{name} kernel")
            rows += [
                {"kind": "alignment", "gamma": gamma, "eta": eta, "kernel": name, "step": int(s), "value": v}
                for s, v in zip(evals, values)
            ]
        rows += [{"kind": "loss", "gamma": gamma, "eta": eta, "step": int(s), "value": v} for s, v in zip(steps, loss)]
        summary = {
            "ntk_half_rise_step": first_crossing(evals, alignments["ntk"], rising=True),
            "feature_half_rise_step": first_crossing(evals, alignments["feature"], rising=True),
            "loss_half_drop_step": first_crossing(steps, loss, rising=False, log=True),
        }
        rows.append({"kind": "summary", "gamma": gamma, "eta": eta, **summary})
        for name, color in (("ntk_half_rise_step", "C0"), ("loss_half_drop_step", "k")):
            if np.isfinite(summary[name]):
                for ax in (ax_loss, ax_align):
                    ax.axvline(summary[name] + 1, color=color, ls=":", lw=0.9)
        ax_align.set_xscale("log")
        ax_align.set_ylim(-0.05, 1.05)
        ax_align.set_xlabel("SGD step t + 1")
        if column == 0:
            ax_loss.set_ylabel("train loss (seed mean)")
            ax_align.set_ylabel("kernel-target alignment")
            ax_align.legend(title="dotted: half rise / half drop")
    return fig, pd.DataFrame(rows)
