"""One HDF5 file per cell: its curves, resolved parameters and provenance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from gammasweep.results.curves import Curves
from gammasweep.results.io import BadResultFile, atomic_path

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
                dims=json.dumps(record.dims), labels=json.dumps(labels)
            )
        f["seed"] = np.asarray(params["seeds"], dtype=np.int64)
        f.attrs["params"] = json.dumps(params, sort_keys=True)
        f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)


class BadCellFile(BadResultFile):
    """A cell file that cannot be used: unreadable, incomplete, or not the cell its path names."""

    what = "cell file"


def read_cell(path: str | Path, expected: dict | None = None) -> tuple[Curves, dict, dict]:
    """Read (curves, params, provenance) of a cell file.

    ``expected``: the parameters the file must hold, all of them: what the plan resolves for the cell its
    path names (``Plan.cell_params``). A file whose params differ in any key (another width, loss or data
    seed: a stale file of another configuration; or a file in the wrong place) is never aggregated. An
    unreadable, truncated, broken or mismatched file raises BadCellFile naming the file (and the keys).
    """
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in (*CURVE_FIELDS, "seed") if n not in f]
            missing += [a for a in ("params", "provenance") if a not in f.attrs]
            if missing:
                raise BadCellFile(path, f"lacks {missing}")
            probes = {name: _read_record(path, data, f["eval_step"][()]) for name, data in f.get("probes", {}).items()}
            curves = Curves(**{name: f[name][()] for name in CURVE_FIELDS}, probes=probes)
            params, provenance = (_json_attribute(path, f, name, dict) for name in ("params", "provenance"))
    except OSError as err:
        raise BadCellFile(path, f"cannot be read ({err})") from None
    if expected is not None:
        wanted = json.loads(json.dumps(expected))  # as the file stores them: lists, not tuples
        pairs = {k: (params.get(k, "(absent)"), wanted.get(k, "(absent)")) for k in params.keys() | wanted.keys()}
        if wrong := {k: pair for k, pair in sorted(pairs.items()) if pair[0] != pair[1]}:
            raise BadCellFile(
                path,
                f"holds other parameters than the config gives its cell (found, expected): {wrong}: it was "
                "written for another configuration (or is misplaced) and is stale",
            )
    return curves, params, provenance


def read_params(path: str | Path) -> dict:
    """The resolved parameters a cell file holds (its ``params`` attribute) without its curves: what a cube
    needs of every file before it reads any one whole (``cube.build_cube``). BadCellFile as ``read_cell``."""
    try:
        with h5py.File(path, "r") as f:
            return _json_attribute(path, f, "params", dict)
    except OSError as err:
        raise BadCellFile(path, f"cannot be read ({err})") from None


def _json_attribute(path: str | Path, item: h5py.HLObject, name: str, kind: type) -> Any:
    """Attribute ``name`` of a cell file's ``item``, JSON of a ``kind``; BadCellFile naming both when it is
    missing or broken."""
    where = f"attribute {name!r}" + ("" if item.name == "/" else f" of {item.name}")
    try:
        value = json.loads(item.attrs[name])
    except (KeyError, TypeError, ValueError) as err:
        raise BadCellFile(path, f"has no readable JSON in {where} ({type(err).__name__}: {err})") from None
    if not isinstance(value, kind):
        raise BadCellFile(path, f"holds a {type(value).__name__} in {where}, not a {kind.__name__}")
    return value


def _read_record(path: str | Path, data: h5py.Dataset, eval_steps: np.ndarray) -> xr.DataArray:
    """A probe record of cell file ``path`` as a DataArray (member, [eval_step,] ...)."""
    dims, coords = _json_attribute(path, data, "dims", list), _json_attribute(path, data, "labels", dict)
    if "eval_step" in dims:
        coords["eval_step"] = eval_steps
    try:
        return xr.DataArray(data[()], dims=dims, coords=coords, name=data.name.rsplit("/", 1)[-1])
    except ValueError as err:  # dims or labels that do not fit the array
        raise BadCellFile(
            path, f"has a probe record {data.name} that does not fit its dims and labels ({err})"
        ) from None
