"""The related papers' experiments: the engine (gammasweep.related.experiments), the diagonal linear net and its
figure (the workflow rule: tests/workflow/test_related_workflow.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread
from workflow_helpers import DEFAULT_CONFIG, small_dln

from gammasweep.figures import render
from gammasweep.related.diagonal_nets import DEFAULTS, simulate, sparse_regression
from gammasweep.related.experiments import related_cube
from gammasweep.related.sparsity import diagonal_net_jacobian, jacobian_rank, support_size
from gammasweep.results.cube import write_cube

QUIET = {"log": lambda message: None}


def test_one_sgd_step_of_the_diagonal_net_is_the_hand_computed_one():
    """From (u, v) = (0.1, 0) one step on example i: v <- -eta (h(x_i) - y_i) u * x_i, u unchanged."""
    settings = {**DEFAULTS, "dim": 6, "train": 4, "test": 3, "support": 2}
    x, y, *_ = sparse_regression(6, 4, 3, 2, seed=0)
    first = np.random.default_rng(5).integers(0, 4)
    ds = simulate(settings, torch.full((1, 1), 0.3, dtype=torch.float64), [5], 0, np.array([1]), **QUIET)
    v = -0.3 * (0.0 - y[first]) * 0.1 * x[first]
    np.testing.assert_allclose(ds["predictor"].values[0], 0.1 * v, rtol=1e-12)


def test_gd_on_an_overdetermined_problem_recovers_the_teacher():
    """n > d: the interpolator is unique, GD goes to it from (0.1, 0): beta* itself (the zero
    coordinates shrink slowest, as u_i^2 + v_i^2 is small there), test loss ~ 0."""
    settings = {**DEFAULTS, "dim": 5, "train": 40, "test": 100, "support": 2, "batch_size": 40}
    lr = torch.full((1, 3000), 0.2, dtype=torch.float64)
    ds = simulate(settings, lr, [0], 3, np.array([0, 3000]), **QUIET)
    beta = sparse_regression(5, 40, 100, 2, seed=3)[-1]
    np.testing.assert_allclose(ds["predictor"].values[0], beta, atol=1e-3)
    assert ds["test_loss"].values[0, -1] < 1e-6 * ds["test_loss"].values[0, 0]
    assert ds["support_size"].values[0, 0] == 0  # v = 0 at init: the predictor is 0


def test_a_related_cube_holds_every_variant_and_seed_and_is_reproducible():
    spec = small_dln()
    cube = related_cube(spec, **QUIET)
    assert list(cube["variant"].values) == list(spec["variants"]) and cube["seed"].values.tolist() == [0, 1]
    assert cube["train_loss"].dims == ("variant", "seed", "step") and cube["step"].values[[0, -1]].tolist() == [0, 300]
    assert cube["eta"].sel(variant="decay_10") == 0.282 and "from 10 %" in str(
        cube["schedule"].sel(variant="decay_10").values
    )
    sgd = cube["train_loss"].sel(variant="constant").isel(step=-1).values
    assert sgd[0] != sgd[1]  # seeds draw different batches
    gd = cube["train_loss"].sel(variant="gd").isel(step=-1).values
    assert gd[0] == gd[1]  # GD has no noise: its seeds agree
    again = related_cube(spec, **QUIET)
    for name in cube.data_vars:
        np.testing.assert_array_equal(cube[name].values, again[name].values, err_msg=name)
    # The recorded metrics are the metric functions of the final weights.
    x = sparse_regression(30, 12, 50, 3, seed=spec["data_seed"])[0]
    predictor = cube["predictor"].sel(variant="gd", seed=0).values
    u = np.sqrt(np.abs(predictor))  # any factorization with the same u * v has the same support
    assert cube["support_size"].sel(variant="gd", seed=0).isel(step=-1) == support_size(
        u, predictor / np.where(u > 0, u, 1)
    )
    assert 0 < cube["jacobian_rank"].sel(variant="gd", seed=0).isel(step=-1) <= 12
    assert jacobian_rank(diagonal_net_jacobian(x, np.ones(30), np.ones(30))) == 12  # n < d: full row rank


def test_divergent_variants_are_recorded_not_raised():
    spec = small_dln(steps=100)
    spec["variants"] = {"huge": {"eta": 50.0}, "fine": {"eta": 0.01}}
    cube = related_cube(spec, **QUIET)
    assert (cube["diverged_step"].sel(variant="huge") >= 0).all() and (
        cube["diverged_step"].sel(variant="fine") == -1
    ).all()
    assert np.isnan(cube["train_loss"].sel(variant="huge").isel(step=-1)).all()


def test_the_trajectories_figure_renders_with_its_table(tmp_path):
    path = tmp_path / "dln.nc"
    write_cube(related_cube(small_dln(), **QUIET), path)
    options = DEFAULT_CONFIG["figures"]["sparse_features_dln"]["options"]
    outputs = {fmt: tmp_path / f"fig.{fmt}" for fmt in ("pdf", "png", "csv")}
    render("trajectories", [path], options, outputs)
    assert outputs["pdf"].read_bytes()[:5] == b"%PDF-" and imread(outputs["png"])[..., :3].std() > 0.05
    table = pd.read_csv(outputs["csv"])
    assert len(table) == 5 * 4 and set(table["variable"]) == set(options["variables"])
    with pytest.raises(ValueError, match="no variables"):
        render("trajectories", [path], {"variables": ["sharpness"]}, outputs)
