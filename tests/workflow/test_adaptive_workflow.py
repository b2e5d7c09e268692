"""Adaptive eta in the real workflow: the default config's sweep, full grid and adaptive, on the
micro data. The adaptive run must find the full grid's eta_max(gamma) and eta*(gamma), train the
same cells to the same numbers (up to the rounding of other pack compositions), and train fewer of
them; the DAG is re-planned after bracketing."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml
from workflow_helpers import MICRO_DATASET, REPO, rule_counts, scratch_workflow, snakemake

from gammasweep.results.analysis import adaptive_cost, cell_diverged, eta_max, eta_star
from gammasweep.results.cube import open_cube
from gammasweep.sweep.adaptive import INFERRED_DIVERGED, SKIPPED, TRAINED

ADAPTIVE = ("mlp_mse_adaptive", "mlp_mse_late")


def adaptive_config() -> dict:
    """The default config's two SGD sweeps on the micro data, and a third whose 2-step bracketing runs
    miss most divergences, so that its full-length runs must move the edge down."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    experiments = {name: config["experiments"][name] for name in ("mlp_mse", "mlp_mse_adaptive")}
    config["experiments"] = experiments
    dataset = copy.deepcopy(MICRO_DATASET)
    dataset["sampling"] |= {
        "images": experiments["mlp_mse"]["steps"] * experiments["mlp_mse"]["batch_size"],
        "batch_size": 800,
    }
    experiments["mlp_mse_adaptive"]["training"]["probes"] = {"sharpness": {"examples": 64, "iterations": 10}}
    late = copy.deepcopy(experiments["mlp_mse_adaptive"])  # (the other probes cost time and test nothing here)
    late["adaptive"]["bracket_steps"] = 2
    del late["training"]  # no probe here: only mlp_mse_adaptive (as in the default config) has them
    experiments["mlp_mse_late"] = late
    for experiment in experiments.values():
        experiment["dataset"] = "micro"
    config["datasets"] = {"micro": dataset}
    config["figures"] = {
        f"coverage_{name}": {"plot": "adaptive_coverage", "experiments": [name, "mlp_mse"]} for name in ADAPTIVE
    }
    config["figures"]["phase_mlp_mse_adaptive"] = {"plot": "phase_portrait", "experiments": ["mlp_mse_adaptive"]}
    return config


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    root = scratch_workflow(tmp_path_factory.mktemp("adaptive"), adaptive_config())
    before = snakemake(root, "--configfile", "micro.yaml", "-n", "--quiet", "rules")
    assert before.returncode == 0, before.stderr[-3000:]
    bracketed = snakemake(
        root, "--configfile", "micro.yaml", "--cores", "2", *(f"results/brackets/{name}.json" for name in ADAPTIVE)
    )
    assert bracketed.returncode == 0, bracketed.stderr[-3000:]
    after = snakemake(root, "--configfile", "micro.yaml", "-n", "--quiet", "rules")
    assert after.returncode == 0, after.stderr[-3000:]
    run = snakemake(root, "--configfile", "micro.yaml", "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    return root, rule_counts(before.stdout), rule_counts(after.stdout)


def test_the_dag_is_replanned_after_the_bracketing_checkpoint(adaptive_run):
    root, before, after = adaptive_run
    gammas = 7
    assert before["eta_brackets"] == 2 and "train_column" not in before  # one bracketing job per experiment
    assert before["train_pack"] == 4  # the full grid's packs only
    records = [json.loads((root / "results" / "brackets" / f"{name}.json").read_text())["columns"] for name in ADAPTIVE]
    assert all(len(columns) == gammas for columns in records)
    trainable = sum(record["edge"] > 0 for columns in records for record in columns.values())
    assert "eta_brackets" not in after
    assert after["train_column"] == trainable > 0 and after["aggregate_adaptive"] == 2


def test_adaptive_eta_finds_the_full_grids_edge_and_best_eta_with_fewer_cells(adaptive_run):
    root = adaptive_run[0]
    full = open_cube(root / "results" / "cubes" / "mlp_mse.nc")
    for name in ADAPTIVE:
        cube = open_cube(root / "results" / "cubes" / f"{name}.nc")
        np.testing.assert_array_equal(eta_max(cube).values, eta_max(full).values, err_msg=name)
        np.testing.assert_array_equal(eta_star(cube).values, eta_star(full).values, err_msg=name)
        status = cube["cell_status"].values
        trained = status == TRAINED
        for variable in ("diverged", "diverged_step"):
            np.testing.assert_array_equal(
                cube[variable].values[trained], full[variable].values[trained], err_msg=f"{name}: {variable}"
            )
        # Other pack compositions round differently (float64 to ~1e-15). The accuracy at step 0 is left
        # out: the centered output is 0 up to that rounding there, so its argmax is a tie broken by noise.
        after_init = {"test_accuracy": cube["eval_step"].values > 0}
        for variable in ("train_loss", "test_loss", "test_accuracy"):
            steps = after_init.get(variable, slice(None))
            np.testing.assert_allclose(
                cube[variable].values[trained][..., steps],
                full[variable].values[trained][..., steps],
                rtol=1e-6,
                atol=0,
                err_msg=f"{name}: {variable}",
            )
        if name == "mlp_mse_adaptive":  # probed, unlike the full grid, and its curves still equal the full grid's
            alive = trained & ~cube["diverged"].any("seed").values
            assert np.isfinite(cube["sharpness"].values[alive]).all() and "sharpness" not in full
        inferred = status == INFERRED_DIVERGED
        assert cell_diverged(full).values[inferred].all() and cell_diverged(cube).values[inferred].all()
        assert np.isnan(cube["test_loss"].values[status == SKIPPED]).all()
        cost = adaptive_cost(cube)
        assert cost["trained_cells"] < cost["grid_cells"] and cost["cell_steps"] < cost["full_cell_steps"]
        csv = (root / "results" / "figures" / f"coverage_{name}.csv").read_text().splitlines()
        assert len(csv) == 1 + 7 and csv[0].startswith("gamma,trained,bracket_cells,eta_max,eta_star,eta_max_full")


def test_late_divergence_moves_the_edge_down_and_the_window_with_it(adaptive_run):
    root = adaptive_run[0]
    columns = [
        json.loads(path.read_text()) for path in (root / "results" / "runs" / "mlp_mse_late").glob("*/column.json")
    ]
    moved = [c for c in columns if c["edge"] < c["bracket_edge"]]
    assert moved, "the 2-step brackets should have missed a divergence"
    for column in moved:  # the window still reaches depth_steps below the new eta_max
        status = column["status"]
        low = max(column["edge"] - 1 - column["depth_steps"], 0)
        assert all(s == TRAINED for s in status[low : column["edge"] + 1])
    logs = "".join(p.read_text() for p in (root / "results" / "logs" / "train" / "mlp_mse_late").glob("*.log"))
    assert "full-length runs move the edge" in logs


def test_a_rerun_after_the_run_has_nothing_to_do(adaptive_run):
    root = adaptive_run[0]
    plan = snakemake(root, "--configfile", "micro.yaml", "-n", "--quiet", "rules")
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]
