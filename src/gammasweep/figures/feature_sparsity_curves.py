"""Training loss, test error and the feature sparsity of each hidden layer or residual stage
against the step, one line per trained cell of each experiment: the deep experiment of *SGD with
Large Step Sizes Learns Sparse Features* (A-DEEP; small constant vs large warmed-up and decayed
step sizes, one experiment per schedule)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

from gammasweep.results.analysis import cell_diverged, eta_star, probed


def feature_sparsity_curves(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """options: at_eta_star (default false): only each gamma's eta* cell (by final test loss) instead
    of every cell that did not diverge. Seed means; the stages of the first cube.

    The table holds, per experiment and cell, the final training loss, test error and each stage's
    feature sparsity. Raises ValueError for a cube recorded without the feature_sparsity probe.
    """
    stages = list(probed(cubes[0], "feature_sparsity")["stage"].values)
    fig, axes = plt.subplots(1, 2 + len(stages), figsize=(3.0 * (2 + len(stages)), 2.8), squeeze=False)
    rows = []
    for cube in cubes:
        sparsity = probed(cube, "feature_sparsity")
        ok = ~cell_diverged(cube)
        if options.get("at_eta_star"):
            best = eta_star(cube)
            ok = ok & (cube["eta"] == best)
        for gamma in cube["gamma"].values:
            for eta in cube["eta"].values:
                if not bool(ok.sel(gamma=gamma, eta=eta)):
                    continue
                cell = {"gamma": gamma, "eta": eta}
                label = f"{cube.attrs['experiment']}" + (
                    f" (gamma {gamma:g}, eta {eta:g})" if cube.sizes["gamma"] * cube.sizes["eta"] > 1 else ""
                )
                loss = cube["train_loss"].sel(cell).mean("seed")
                error = 1 - cube["test_accuracy"].sel(cell).mean("seed")
                line = axes[0, 0].plot(cube["step"], loss, lw=1.2, label=label)[0]
                axes[0, 1].plot(cube["eval_step"], error, "o-", ms=2, lw=1.2, color=line.get_color())
                row = {
                    "experiment": cube.attrs["experiment"],
                    **cell,
                    "train_loss": float(loss[-1]),
                    "test_error": float(error[-1]),
                }
                for ax, stage in zip(axes[0, 2:], stages):
                    values = sparsity.sel(cell).sel(stage=stage).mean("seed")
                    ax.plot(cube["eval_step"], values, "o-", ms=2, lw=1.2, color=line.get_color())
                    row[f"feature_sparsity_{stage}"] = float(values[-1])
                rows.append(row)
    axes[0, 0].set(xlabel="step", ylabel="training loss", yscale="log")
    axes[0, 1].set(xlabel="step", ylabel="test error")
    for ax, stage in zip(axes[0, 2:], stages):
        ax.set(xlabel="step", ylabel="feature sparsity", title=f"features entering {stage}")
    axes[0, -1].legend(
        *axes[0, 0].get_legend_handles_labels(), fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )
    fig.tight_layout()
    return fig, pd.DataFrame(rows)
