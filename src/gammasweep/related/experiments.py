"""The related papers' experiments (``docs/related.md``; config ``related:``): small nets
trained by (S)GD in several *variants* (a step size and schedule, optionally other settings) and
seeds, one cube each (``results/cubes/related/<name>.nc``, dims variant x seed x step, ...).

A kind (``KINDS``, a ``descent.Kind``) has ``DEFAULTS`` (its settings) and
``simulate(settings, lr, seeds, data_seed, record_steps, log) -> xr.Dataset`` over dims
(run, step, ...): R = variants x seeds runs with their (R, steps) step sizes, all on one problem
(drawn from ``data_seed``); each run draws its initialization and batches from its own seed.
Variants that differ only in step size and schedule are trained together in one call.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr

from gammasweep.related import diagonal_nets, linear_equilibrium, nonlinear_equilibrium, teacher_student, toy_catapult
from gammasweep.related.descent import Kind, record_schedule
from gammasweep.sweep.schedules import Schedule

KINDS: dict[str, Kind] = {
    "diagonal_net": diagonal_nets.DIAGONAL_NET,
    "relu_teacher_student": teacher_student.RELU_TEACHER_STUDENT,
    "linear_net": linear_equilibrium.LINEAR_NET,
    "matrix_factorization": linear_equilibrium.MATRIX_FACTORIZATION,
    "autoencoder": nonlinear_equilibrium.AUTOENCODER,
    "scale_invariant": nonlinear_equilibrium.SCALE_INVARIANT,
    "toy_catapult": toy_catapult.TOY_CATAPULT,
}


def variant_settings(spec: dict, variant: str) -> dict:
    """The settings a variant runs with: the kind's defaults, the experiment's, the variant's overrides."""
    kind = KINDS[spec["kind"]]
    return {**kind.DEFAULTS, **spec.get("settings", {}), **spec["variants"][variant].get("settings", {})}


def step_sizes(spec: dict, variant: str) -> np.ndarray:
    """The variant's step size at each step (float64, shape (steps,)): eta x its schedule."""
    entry = spec["variants"][variant]
    return entry["eta"] * Schedule.from_config(entry).factors(spec["steps"])


def related_cube(spec: dict, log: Callable[[str], None] = print) -> xr.Dataset:
    """Simulate every variant and seed of a related experiment; the cube (variant, seed, step, ...)."""
    kind = KINDS[spec["kind"]]
    seeds = list(range(spec["seeds"]))
    record_steps = record_schedule(spec["steps"], spec["record_points"])
    groups: dict[str, list[str]] = {}
    for variant in spec["variants"]:
        groups.setdefault(json.dumps(variant_settings(spec, variant), sort_keys=True), []).append(variant)
    parts = []
    for variants in groups.values():
        log(f"variants {', '.join(variants)}: {len(variants) * len(seeds)} runs of {spec['steps']} steps")
        lr = torch.from_numpy(np.stack([step_sizes(spec, v) for v in variants for _ in seeds]))
        ds = kind.simulate(
            variant_settings(spec, variants[0]), lr, seeds * len(variants), spec["data_seed"], record_steps, log
        )
        index = {"variant": ("run", np.repeat(variants, len(seeds))), "seed": ("run", np.tile(seeds, len(variants)))}
        parts.append(ds.assign_coords(index).set_index(run=["variant", "seed"]).unstack("run"))
    # Variables without a variant dim (the problem: data, teacher) are the same in every part.
    cube = (
        parts[0]
        if len(parts) == 1
        else xr.concat(parts, dim="variant", data_vars="minimal", coords="minimal", compat="override")
    )
    cube = cube.sel(variant=list(spec["variants"]))
    cube["eta"] = ("variant", [float(spec["variants"][v]["eta"]) for v in cube.variant.values])
    cube["eta"].attrs.update(long_name="peak step size", units="1")
    cube["schedule"] = ("variant", [Schedule.from_config(spec["variants"][v]).describe() for v in cube.variant.values])
    return cube.transpose("variant", "seed", ...)
