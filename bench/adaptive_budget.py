"""What adaptive eta would spend on a config, by dry-run arithmetic: no training.

For every experiment of the config (as if it set `eta_grid: adaptive`, with its `adaptive:`
settings or the defaults), each gamma column's edge is assumed to sit where the theory guess puts
it shifted by ``--offset`` decades; the bracketing search (``adaptive.find_edges``) is run on that
synthetic column to count its short runs, and the window gives the full-length cells. Compares
cells and cell-steps (cells x SGD steps) with the full grid.

    python bench/adaptive_budget.py config/paper.yaml            # the guess is right
    python bench/adaptive_budget.py config/paper.yaml --offset 2  # the edge is 2 decades above it
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import yaml

from gammasweep.plan.config import load_schema
from gammasweep.plan.plan import Plan
from gammasweep.sweep.adaptive import find_edges, window_indices

REPO = Path(__file__).resolve().parents[1]


def budget(plan: Plan, experiment: str, offset_decades: float) -> dict[str, int]:
    """Cells and cell-steps of an experiment: full grid, and adaptive with edges ``offset_decades``
    above the theory guess."""
    exp = plan.config["experiments"][experiment]
    settings = plan.adaptive_settings(experiment)
    gammas, etas = plan.grids[experiment]
    n = len(etas)
    shift = round(offset_decades / float(np.median(np.diff(np.log10(sorted(etas.values()))))))  # in grid steps
    starts = {gamma_key: plan.bracket_start(experiment, gamma_key) for gamma_key in gammas}
    edges = {key: min(max(start + 1 + shift, 0), n) for key, start in starts.items()}  # one step above the guess
    found = find_edges(
        {key: (n, start) for key, start in starts.items()},
        settings.window,
        lambda todo: {key: {i: 3 if i >= edges[key] else -1 for i in idx} for key, idx in todo.items()},
        log=lambda msg: None,
    )
    trials = sum(len(results) for _, results in found.values())
    trained = sum(len(window_indices(n, edge, plan.depth_steps(experiment, key))) for key, (edge, _) in found.items())
    return {
        "full_cells": len(gammas) * n,
        "full_cell_steps": len(gammas) * n * exp["steps"],
        "trained_cells": trained,
        "bracket_cells": trials,
        "adaptive_cell_steps": trained * exp["steps"] + trials * settings.bracket_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--offset", type=float, default=0.0, help="decades between the true edge and the guess")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    for exp in config["experiments"].values():  # every experiment as if adaptive, with its settings
        exp["eta_grid"] = "adaptive"
    plan = Plan(copy.deepcopy(config), load_schema(REPO / "config" / "schema.yaml"))
    print(
        "| experiment | full cells | full cell-steps | adaptive cells (+ bracket runs) | adaptive cell-steps | ratio |"
    )
    print("|---|---|---|---|---|---|")
    totals = {"full": 0, "adaptive": 0}
    for name in plan.config["experiments"]:
        if len(plan.grids[name][1]) < 2:  # one eta (A-DEEP's runs): no column to bracket
            print(f"| {name} | single eta: nothing to adapt | | | | |")
            continue
        b = budget(plan, name, args.offset)
        totals["full"] += b["full_cell_steps"]
        totals["adaptive"] += b["adaptive_cell_steps"]
        print(
            f"| {name} | {b['full_cells']} | {b['full_cell_steps']:.3g} "
            f"| {b['trained_cells']} (+ {b['bracket_cells']}) "
            f"| {b['adaptive_cell_steps']:.3g} | {b['adaptive_cell_steps'] / b['full_cell_steps']:.2f} |"
        )
    print(f"| all | | {totals['full']:.3g} | | {totals['adaptive']:.3g} | {totals['adaptive'] / totals['full']:.2f} |")


if __name__ == "__main__":
    main()
