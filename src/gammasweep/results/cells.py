"""One HDF5 file per cell: its curves, resolved parameters and provenance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from gammasweep.results.io import atomic_path
from gammasweep.results.curves import Curves

CURVE_FIELDS = tuple(f.name for f in dataclasses.fields(Curves) if f.name != "probes")  # arrays; probes: a group


def write_cell(path: str | Path, curves: Curves, params: dict, provenance: dict) -> None:
    """Atomically write a cell: one dataset per curve field, params and provenance as JSON attributes;
    the probes' records in group ``probes``, each with its dimensions and labelled coordinates."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in CURVE_FIELDS:
            f.create_dataset(name, data=getattr(curves, name))
        f.create_group("probes")  # no handle kept open: on a full disk, closing the file must fail as OSError
        for name, record in curves.probes.items():
            labels = {d: record[d].values.tolist() for d in record.dims if d in record.coords and d != "eval_step"}
            f.create_dataset(f"probes/{name}", data=record.values).attrs.update(
                dims=json.dumps(record.dims), labels=json.dumps(labels))
        f["seed"] = np.asarray(params["seeds"], dtype=np.int64)
        f.attrs["params"] = json.dumps(params, sort_keys=True)
        f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)


class BadCellFile(ValueError):
    """A cell file that cannot be used: unreadable, incomplete, or not the cell its path names."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"cell file {path} {problem}; rebuild it with: rm '{path}' && snakemake '{path}'")


def read_cell(path: str | Path, expected: dict | None = None) -> tuple[Curves, dict, dict]:
    """Read (curves, params, provenance) of a cell file.

    ``expected``: parameters the file must hold (e.g. the experiment, gamma and eta its path
    names). An unreadable, truncated or mismatched file raises BadCellFile naming the file.
    """
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in (*CURVE_FIELDS, "seed") if n not in f]
            missing += [a for a in ("params", "provenance") if a not in f.attrs]
            if missing:
                raise BadCellFile(path, f"lacks {missing}")
            probes = {name: _read_record(data, f["eval_step"][()]) for name, data in f.get("probes", {}).items()}
            curves = Curves(**{name: f[name][()] for name in CURVE_FIELDS}, probes=probes)
            params, provenance = json.loads(f.attrs["params"]), json.loads(f.attrs["provenance"])
    except OSError as err:
        raise BadCellFile(path, f"cannot be read ({err})") from None
    wrong = {k: (params.get(k), v) for k, v in (expected or {}).items() if params.get(k) != v}
    if wrong:
        raise BadCellFile(path, f"holds other parameters than its path names (found, expected): {wrong}")
    return curves, params, provenance


def _read_record(data: h5py.Dataset, eval_steps: np.ndarray) -> xr.DataArray:
    """A probe record of a cell file as a DataArray (member, [eval_step,] ...)."""
    dims = json.loads(data.attrs["dims"])
    coords = json.loads(data.attrs["labels"])
    if "eval_step" in dims:
        coords["eval_step"] = eval_steps
    return xr.DataArray(data[()], dims=dims, coords=coords, name=data.name.rsplit("/", 1)[-1])
