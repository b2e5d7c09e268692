"""The measured effect of a fidelity choice (docs/fidelity.md) on one experiment's numbers.

Trains an experiment's full (gamma, eta) grid directly, with no workflow, optionally with cell
parameters overridden, and prints per gamma the divergence edge eta_max, the best eta* (test loss at
T) and the diverged cells, as JSON. Run it twice, on two versions of the code or with two overrides,
and compare the outputs:

    python bench/fidelity_effects.py config/config.yaml mlp_mse POOL TEST                      # as configured
    python bench/fidelity_effects.py config/config.yaml mlp_mse POOL TEST divergence_cap=inf   # NaN/inf only

POOL and TEST are the experiment's pool and test files (after `snakemake`: results/data/digits/pool.h5
and results/data/sources/sklearn_digits/test.h5 for the default config).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import numpy as np
import yaml

from gammasweep.jobs.train import run_cells
from gammasweep.plan.plan import Plan


def main(config_path: str, experiment: str, pool: str, test: str, *overrides: str) -> None:
    plan = Plan.from_files(config_path, "config/schema.yaml")
    changes = {key: yaml.safe_load(value) for key, value in (o.split("=", 1) for o in overrides)}
    cells = [{**plan.cell_params(experiment, *cell), **changes} for cell in plan.cells(experiment)]
    start, results = time.time(), {}
    for dtype in sorted({c["dtype"] for c in cells}):
        group = [c for c in cells if c["dtype"] == dtype]
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress; stdout is the JSON
            curves = run_cells(group, pool, test, f"{experiment} ({dtype})")
        seeds = len(group[0]["seeds"])
        for i, cell in enumerate(group):
            rows = slice(i * seeds, (i + 1) * seeds)
            diverged = bool(curves.diverged[rows].any())
            loss = float(np.nanmean(curves.test_loss[rows, -1])) if not diverged else float("nan")
            results.setdefault(cell["gamma"], {})[cell["eta"]] = (diverged, loss)
    summary = {}
    for gamma, by_eta in sorted(results.items()):
        etas = sorted(by_eta)
        first = next((i for i, e in enumerate(etas) if by_eta[e][0]), len(etas))
        finite = {e: v[1] for e, v in by_eta.items() if not v[0] and np.isfinite(v[1])}
        summary[f"{gamma:.3e}"] = {
            "eta_max": etas[first - 1] if first > 0 else None,
            "censored": first == len(etas),
            "eta_star": min(finite, key=finite.get) if finite else None,
            "diverged_cells": [e for e in etas if by_eta[e][0]],
        }
    print(
        json.dumps(
            {
                "experiment": experiment,
                "overrides": changes,
                "seconds": round(time.time() - start, 1),
                "by_gamma": summary,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
