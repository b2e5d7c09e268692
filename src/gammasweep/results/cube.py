"""Aggregate the cell files of an experiment into one xarray Dataset (a 'cube') stored as NetCDF4.

Dimensions: gamma, eta, seed, step (train-loss records) and eval_step (test evaluations), plus
those of the probes' records (``gammasweep.probes.recorder``: e.g. layer, ritz, output_example), which are
variables of the cube only where the experiment switched their probe on. Values after a member's
divergence are NaN; ``diverged`` and ``diverged_step`` say when.

Storage: losses, accuracies and divergence in float64, the probes' records in their stored dtype (float32
but for the Noether charge: ``records.stored_dtype``, which says why). Every numeric variable is compressed
(gzip with byte shuffle) in chunks of at most ``CHUNK_BYTES``, one (gamma, eta) cell's worth or a gamma
row's, so that a figure reading a few cells decompresses only those. ``open_cube`` reads lazily: a
variable, or the part of it a figure selects, is read when its values are used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from gammasweep.results.cells import read_cell, read_params
from gammasweep.results.io import BadResultFile, atomic_path
from gammasweep.results.records import RECORDS, stored_dtype
from gammasweep.sweep.adaptive import INFERRED_DIVERGED, SKIPPED, STATUS_MEANINGS, TRAINED

_ATTRS = {
    "train_loss": ("training loss, mean over the steps since the previous record", "1"),
    "train_loss_at_step": ("training loss of the batch at this step", "1"),
    "test_loss": ("test loss (MSE: squared error summed over the outputs, mean over the test images)", "1"),
    "test_accuracy": ("test accuracy", "1"),
    "diverged": ("loss became non-finite or exceeded the divergence cap", "1"),
    "diverged_step": ("first diverged step, -1 if none (or, for an inferred-diverged cell, never run)", "1"),
    "wall_time": ("wall-clock time of the job that trained the cell (its whole pack)", "s"),
}
EVAL_VARIABLES = ("test_loss", "test_accuracy")  # recorded at the eval steps
CHUNK_BYTES = 1 << 20  # a chunk's most: one paper cell's feature kernels (3 x 256 x 256 float32, 0.75 MiB) fit
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}  # gzip level 4 after byte shuffling (bench/cube_size.py)


def build_cube(
    cell_files: Sequence[str | Path],
    experiment_config: dict | None = None,
    expected: Sequence[dict] | None = None,
    grid: tuple[Sequence[float], Sequence[float]] | None = None,
) -> xr.Dataset:
    """Read every cell file of one experiment into a Dataset over (gamma, eta, seed, step/eval_step).

    ``expected``: per file, the parameters it must hold (see ``cells.read_cell``). ``grid``: the
    experiment's (gammas, etas) when not every cell was trained (adaptive eta): the others are NaN,
    not diverged, and ``cell_status`` SKIPPED until ``set_column_status`` says otherwise. Memory: the
    cube's arrays, the probes' in their stored dtype, and one cell file's records at a time.
    """
    expected = expected or [None] * len(cell_files)
    if not cell_files:
        raise ValueError("no cell files to aggregate")
    if grid is None:
        params = [read_params(p) for p in cell_files]
        grid = ({c["gamma"] for c in params}, {c["eta"] for c in params})
    gammas, etas = (sorted(axis) for axis in grid)
    first, params0, prov0 = read_cell(cell_files[0], expected[0])
    seeds, steps, evals = np.asarray(params0["seeds"]), first.step, first.eval_step
    shape = (len(gammas), len(etas), len(seeds))
    data = {name: np.full(shape + (len(steps),), np.nan) for name in ("train_loss", "train_loss_at_step")}
    data |= {name: np.full(shape + (len(evals),), np.nan) for name in EVAL_VARIABLES}
    probes = {
        name: (record.dims[1:], np.full(shape + record.shape[1:], np.nan, stored_dtype(name)), record.coords)
        for name, record in first.probes.items()
    }
    diverged, diverged_step = np.zeros(shape, bool), np.full(shape, -1, np.int64)
    wall_time, status = np.full(shape[:2], np.nan), np.full(shape[:2], SKIPPED, np.int8)
    for k, (path, wanted) in enumerate(zip(cell_files, expected)):
        curves, params, prov = read_cell(path, wanted) if k else (first, params0, prov0)
        if not (
            np.array_equal(curves.step, steps)
            and np.array_equal(curves.eval_step, evals)
            and params["seeds"] == params0["seeds"]
        ):
            raise ValueError(f"cell file {path} has other steps or seeds than {cell_files[0]}: rebuild it")
        if sorted(curves.probes) != sorted(probes):
            raise ValueError(
                f"cell file {path} holds the probe records {sorted(curves.probes)}, {cell_files[0]} "
                f"{sorted(probes)}: rebuild it"
            )
        i, j = gammas.index(params["gamma"]), etas.index(params["eta"])
        for name in data:
            data[name][i, j] = getattr(curves, name)
        for name, (_, values, _) in probes.items():
            values[i, j] = curves.probes[name].values
        diverged[i, j], diverged_step[i, j] = curves.diverged, curves.diverged_step
        wall_time[i, j], status[i, j] = prov.get("wall_time_s", np.nan), TRAINED
    dims3, coords = (
        ("gamma", "eta", "seed"),
        {"gamma": gammas, "eta": etas, "seed": seeds, "step": steps, "eval_step": evals},
    )
    variables = {name: ((*dims3, "step"), values) for name, values in data.items() if name.startswith("train")}
    variables |= {name: ((*dims3, "eval_step"), values) for name, values in data.items() if name in EVAL_VARIABLES}
    variables |= {
        "diverged": (dims3, diverged),
        "diverged_step": (dims3, diverged_step),
        "wall_time": (("gamma", "eta"), wall_time),
        "cell_status": (("gamma", "eta"), status),
    }
    variables |= {name: ((*dims3, *dims), values) for name, (dims, values, _) in probes.items()}
    for _, _, labelled in probes.values():
        coords |= {d: labelled[d].values for d in labelled if d not in coords}
    cube = xr.Dataset(variables, coords=coords)
    for name, (long_name, units) in (_ATTRS | {r: RECORDS[r][1:] for r in probes}).items():
        cube[name].attrs.update(long_name=long_name, units=units)
    cube["cell_status"].attrs.update(
        long_name="how the cell's result was obtained (adaptive eta)",
        flag_values=np.array([TRAINED, INFERRED_DIVERGED, SKIPPED], np.int8),
        flag_meanings=STATUS_MEANINGS,
    )
    cube["gamma"].attrs.update(long_name="feature-learning strength gamma", units="1")
    cube["eta"].attrs.update(long_name="learning rate eta (SGD lr = width x eta)", units="1")
    cube["step"].attrs.update(long_name="SGD step", units="1")
    cube["eval_step"].attrs.update(long_name="SGD updates before the test evaluation", units="1")
    shared = {k: v for k, v in params0.items() if k not in ("gamma", "eta", "dtype")}
    cube.attrs.update(
        Conventions="CF-1.8",
        experiment=params0["experiment"],
        cell_params=json.dumps(shared, sort_keys=True),
        provenance=json.dumps(prov0, sort_keys=True),
        experiment_config=json.dumps(experiment_config or {}, sort_keys=True),
    )
    return cube


def set_column_status(cube: xr.Dataset, gamma: float, status: Sequence[int], trial_steps: dict[int, int]) -> None:
    """Record an adaptive column's per-eta ``status`` (``gammasweep.sweep.adaptive``): inferred-diverged
    cells get ``diverged`` for every seed, at their bracketing run's divergence step if they had one
    (``trial_steps``: eta index -> step), else -1 (never run)."""
    column = {"gamma": gamma}
    cube["cell_status"].loc[column] = np.asarray(status, np.int8)
    for j, flag in enumerate(status):
        if flag == INFERRED_DIVERGED:
            cell = {"gamma": gamma, "eta": cube["eta"].values[j]}
            cube["diverged"].loc[cell] = True
            cube["diverged_step"].loc[cell] = max(trial_steps.get(j, -1), -1)


def encoding(variable: xr.Variable) -> dict:
    """How ``write_cube`` stores a variable: a numeric array ``COMPRESSION``-compressed in chunks of the whole
    array with its leading dimensions cut to 1, left to right, until a chunk holds at most ``CHUNK_BYTES``
    (a (gamma, eta, seed, ...) record: one cell, or one gamma row, per chunk); anything else as it is."""
    if variable.dtype.kind not in "biuf" or variable.ndim == 0 or variable.size == 0:
        return {}
    chunks = list(variable.shape)
    for axis in range(variable.ndim - 1):
        if math.prod(chunks) * variable.dtype.itemsize <= CHUNK_BYTES:
            break
        chunks[axis] = 1
    return COMPRESSION | {"chunksizes": tuple(chunks)}


def write_cube(cube: xr.Dataset, path: str | Path) -> None:
    """Atomically write a cube as NetCDF4 through h5netcdf, its data variables compressed (``encoding``)."""
    with atomic_path(path) as tmp:
        cube.to_netcdf(
            tmp, engine="h5netcdf", encoding={name: encoding(v.variable) for name, v in cube.data_vars.items()}
        )


class BadCubeFile(BadResultFile):
    """A cube that cannot be read."""

    what = "cube"


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube lazily: its coordinates and attributes now, a variable's values (or the part of them that a
    selection names: ``cube["feature_kernel"].sel(gamma=g, eta=e)``) when they are used. The file stays open
    until the Dataset is closed, so use it as a context manager (``with open_cube(path) as cube:``) where
    the file may be replaced or many are opened. BadCubeFile naming a file that cannot be opened."""
    try:
        return xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as err:  # missing, truncated, not NetCDF
        raise BadCubeFile(path, f"cannot be read ({type(err).__name__}: {err})") from None
