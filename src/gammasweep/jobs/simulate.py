"""The simulation rules (workflow/rules/toy.smk, related.smk): the Section-4 toy model and the related
papers' experiments, one cube each."""

from __future__ import annotations

import json
import time

import torch

from gammasweep.results.cube import write_cube
from gammasweep.results.provenance import versions
from gammasweep.theory.toy import toy_cube


def simulate_toy_cube(settings: dict, out: str) -> None:
    """Simulate the Section-4 toy over a (gamma, eta) grid (``theory.toy_cube``) and write its cube.

    settings: {"loss": "mse" | "cross_entropy", "depth": L, "steps": T, "gamma": grid spec,
    "eta": grid spec}, grid specs as experiments' ({min, max, per_decade} or a list).
    """
    from gammasweep.plan.config import grid_values

    start = time.time()
    gammas, etas = grid_values(settings["gamma"], "gamma"), grid_values(settings["eta"], "eta")
    cube = toy_cube(gammas, etas, int(settings["depth"]), int(settings["steps"]), settings["loss"])
    cube.attrs.update(
        toy_settings=json.dumps(settings, sort_keys=True), versions=json.dumps(versions(), sort_keys=True)
    )
    write_cube(cube, out)
    print(
        f"toy cube {out}: {settings['loss']}, L = {settings['depth']}, T = {settings['steps']}, "
        f"{len(gammas)} x {len(etas)} grid, {int(cube['diverged'].sum())} diverged, {time.time() - start:.1f} s",
        flush=True,
    )


def simulate_related_cube(spec: dict, out: str) -> None:
    """Simulate a related experiment (config ``related:`` entry, ``gammasweep.related.experiments``) and
    write its cube."""
    from gammasweep.related.experiments import related_cube

    start = time.time()
    torch.set_num_threads(1)  # small nets: one thread is fastest (two were 2x slower per step)
    cube = related_cube(spec, log=lambda msg: print(msg, flush=True))
    cube.attrs.update(
        kind=spec["kind"],
        related_settings=json.dumps(spec, sort_keys=True),
        versions=json.dumps(versions(), sort_keys=True),
    )
    write_cube(cube, out)
    diverged = int((cube["diverged_step"] >= 0).sum())
    print(
        f"related cube {out}: {spec['kind']}, {cube.sizes['variant']} variants x {cube.sizes['seed']} seeds x "
        f"{spec['steps']} steps, {diverged} runs diverged, {time.time() - start:.1f} s",
        flush=True,
    )
