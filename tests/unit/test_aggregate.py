"""The aggregation jobs check every cell file against the params the plan gives its cell: a stale file of another
configuration fails the cube, naming the file and the keys (cube contents: test_cube_and_figures.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from gammasweep.jobs.aggregate import aggregate, aggregate_adaptive
from gammasweep.plan import paths
from gammasweep.plan.plan import Plan
from gammasweep.results.cells import BadCellFile, write_cell
from gammasweep.results.cube import open_cube
from gammasweep.results.curves import Curves
from gammasweep.sweep.adaptive import TRAINED, statuses

CURVES = Curves(  # two seeds, three records, two evaluations: what a cell file holds, made up
    step=np.array([0, 1, 2]),
    train_loss=np.ones((2, 3)),
    train_loss_at_step=np.ones((2, 3)),
    eval_step=np.array([0, 3]),
    test_loss=np.ones((2, 2)),
    test_accuracy=np.full((2, 2), 0.5),
    diverged=np.zeros(2, bool),
    diverged_step=np.full(2, -1),
)


@pytest.fixture(scope="module")
def plan(repo) -> Plan:
    return Plan.from_files(repo / "config" / "config.yaml", repo / "config" / "schema.yaml")


def _grid_job(plan: Plan, root: Path, out: Path):
    """The first two cells of the default config's grid experiment: (their files, their params as the training
    rule passes them, the aggregate job with the params the aggregate rule passes)."""
    files = [root / Path(f).name for f in plan.cell_files("mlp_mse")[:2]]
    params = [plan.cell_params("mlp_mse", *cell) for cell in plan.cells("mlp_mse")[:2]]
    expected = plan.cell_identities("mlp_mse")[:2]
    return files, params, lambda: aggregate([str(f) for f in files], expected, {}, str(out))


def _adaptive_job(plan: Plan, root: Path, out: Path):
    """The first two etas of the first column of the default config's adaptive experiment, every gamma
    bracketed: (their files, their params as train_column gets them, the aggregate_adaptive job with the params
    its rule passes)."""
    experiment = "mlp_mse_adaptive"
    gammas, etas = (list(axis.values()) for axis in plan.grids[experiment])
    columns = plan.columns(experiment)
    cells = {str(root / c.directory): plan.column_cells(experiment, c.gamma_key) for c in columns}
    brackets = root / paths.BRACKETS.format(experiment=experiment)
    brackets.parent.mkdir(parents=True)
    records = {c.gamma_key: {"gamma": gamma, "trials": {}, "edge": 2} for c, gamma in zip(columns, gammas, strict=True)}
    brackets.write_text(json.dumps({"trial_steps": 20, "columns": records}))
    directory = root / columns[0].directory
    files = [directory / Path(f).name for f in plan.column_files(experiment, columns[0].gamma_key)[:2]]
    directory.mkdir(parents=True)
    column = {"gamma": gammas[0], "status": statuses(len(etas), 2, {0: False, 1: False})}
    (directory / "column.json").write_text(json.dumps(column | {"files": {"0": files[0].name, "1": files[1].name}}))
    return (
        files,
        cells[str(directory)][:2],
        lambda: aggregate_adaptive(str(brackets), [str(directory)], (gammas, etas), cells, {}, str(out)),
    )


@pytest.mark.parametrize(
    "key,value",
    [("model", {"name": "mlp", "width": 64, "depth": 3}), ("loss", "cross_entropy"), ("data_seed", 1)],
    ids=["width", "loss", "data_seed"],
)
@pytest.mark.parametrize("job", [_grid_job, _adaptive_job], ids=["grid", "adaptive"])
def test_a_cell_of_another_configuration_fails_the_cube_naming_file_and_key(plan, tmp_path, job, key, value):
    """Cell files with the params the plan gives their cells aggregate into a cube; one written for another
    width, loss or data seed (same steps and seeds) fails it, naming the file, the key and the way out."""
    out = tmp_path / "cube.nc"
    files, params, run = job(plan, tmp_path, out)
    for path, cell in zip(files, params, strict=True):
        write_cell(path, CURVES, cell, {})
    run()
    assert int((open_cube(out)["cell_status"] == TRAINED).sum()) == 2
    write_cell(files[1], CURVES, params[1] | {key: value}, {})
    path = re.escape(str(files[1]))
    with pytest.raises(BadCellFile, match=rf"cell file {path} holds other parameters .*\{{'{key}': .*rm '{path}'"):
        run()
