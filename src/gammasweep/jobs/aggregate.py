"""The aggregation rules (workflow/rules/aggregate.smk, adaptive.smk): cell files into one cube per experiment."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gammasweep.results.cube import build_cube, set_column_status, write_cube
from gammasweep.sweep.adaptive import statuses


def aggregate(cell_files: Sequence[str], expected: Sequence[dict], experiment_config: dict, out: str) -> None:
    """Validate every cell file against the params the plan gives its cell (``expected``, per file: its
    ``Plan.cell_params``; a stale file of another configuration fails, naming itself and the keys), then write
    the experiment's cube."""
    cube = build_cube(cell_files, experiment_config, expected)
    write_cube(cube, out)
    print(f"cube {out}: {dict(cube.sizes)}; {int(cube['diverged'].any('seed').sum())} diverged cells")


def aggregate_adaptive(
    brackets: str,
    columns: Sequence[str],
    grid: tuple[list[float], list[float]],
    cells: Mapping[str, Sequence[dict]],
    experiment_config: dict,
    out: str,
) -> None:
    """The cube of an adaptive experiment from its bracketing records (``brackets``, one per gamma) and trained
    columns (the directories of the gammas with something to train): the trained cells, every
    point's ``cell_status``, and the bracketing cost (``bracket_cells`` short runs of ``bracket_steps``).
    ``cells``: per column directory, the params of its cells, eta ascending (``Plan.column_cells``), which
    each trained cell file must hold (as ``aggregate``)."""
    gammas, etas = grid
    trials, status = {}, {}
    bracketing = json.loads(Path(brackets).read_text())
    for record in bracketing["columns"].values():
        trials[record["gamma"]] = {int(i): step for i, step in record["trials"].items()}
        status[record["gamma"]] = statuses(len(etas), record["edge"], {})
    files, expected = [], []
    for path in columns:
        column = json.loads((Path(path) / "column.json").read_text())
        status[column["gamma"]] = column["status"]
        for i, name in column["files"].items():
            files.append(str(Path(path) / name))
            expected.append(cells[path][int(i)])
    if missing := sorted(set(gammas) - set(trials)):
        raise ValueError(f"{out}: no bracketing record for gamma {missing}")
    cube = build_cube(files, experiment_config, expected, grid)
    for gamma in gammas:
        set_column_status(cube, gamma, status[gamma], trials[gamma])
    cube["bracket_cells"] = ("gamma", np.array([len(trials[g]) for g in cube["gamma"].values]))
    cube["bracket_cells"].attrs.update(
        long_name="short bracketing runs of the column (cells x bracket_steps)", units="1"
    )
    cube.attrs["bracket_steps"] = bracketing["trial_steps"]
    write_cube(cube, out)
    counts = np.bincount(cube["cell_status"].values.ravel(), minlength=3)
    print(f"cube {out}: {dict(cube.sizes)}; trained {counts[0]}, inferred diverged {counts[1]}, skipped {counts[2]}")
