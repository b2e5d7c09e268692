"""One HDF5 file per cell: its curves, resolved parameters and provenance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np

from gammasweep.io import atomic_path
from gammasweep.train import Curves

CURVE_FIELDS = tuple(f.name for f in dataclasses.fields(Curves))


def write_cell(path: str | Path, curves: Curves, params: dict, provenance: dict) -> None:
    """Atomically write a cell: one dataset per curve field, params and provenance as JSON attributes."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in CURVE_FIELDS:
            f.create_dataset(name, data=getattr(curves, name))
        f["seed"] = np.asarray(params["seeds"], dtype=np.int64)
        f.attrs["params"] = json.dumps(params, sort_keys=True)
        f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)


def read_cell(path: str | Path) -> tuple[Curves, dict, dict]:
    """Read (curves, params, provenance) of a cell file; a missing field is a ValueError naming the file."""
    with h5py.File(path, "r") as f:
        missing = [n for n in (*CURVE_FIELDS, "seed") if n not in f] + [a for a in ("params", "provenance") if a not in f.attrs]
        if missing:
            raise ValueError(f"cell file {path} lacks {missing}: delete it and rerun the workflow to rebuild it")
        curves = Curves(**{name: f[name][()] for name in CURVE_FIELDS})
        return curves, json.loads(f.attrs["params"]), json.loads(f.attrs["provenance"])
