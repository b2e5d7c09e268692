"""The ReLU teacher-student kind (gammasweep.related.teacher_student, A-TS2 / A-TS3) on hand-computed cases,
and its figures (trajectories, neuron_directions) from small cubes of the default config's entries."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from workflow_helpers import DEFAULT_CONFIG

from gammasweep.figures import render
from gammasweep.figures.neuron_directions import direction_clusters, neuron_directions
from gammasweep.figures.trajectories import trajectories
from gammasweep.related.experiments import related_cube
from gammasweep.related.teacher_student import output_jacobians, relu_net, teacher_problem
from gammasweep.results.cube import write_cube


def _entry(repo, name: str, **changes) -> dict:
    spec = copy.deepcopy(DEFAULT_CONFIG["related"][name])
    spec.update(changes)
    return spec


def _two_layer() -> dict[str, torch.Tensor]:
    return {
        "layer1": torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -2.0]], dtype=torch.float64),
        "readout": torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64),
    }


def test_the_relu_net_and_its_jacobian_match_the_closed_form():
    weights = _two_layer()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]], dtype=torch.float64)
    outputs, features = relu_net(weights, x)
    # Pre-activations: x1 -> (1, -1, 0); x2 -> (0, 1, -2); x3 -> (-0.6, -0.2, 1.6).
    expected_features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.6]])
    np.testing.assert_allclose(features[0].numpy(), expected_features)
    np.testing.assert_allclose(outputs.numpy(), [2.0, -1.0, 0.5 * 1.6])
    # Stacked over R = 2 runs (the second with every weight doubled):
    # dh/dW_j = a_j 1[w_j x > 0] x, dh/da_j = relu(w_j x).
    stacked = {k: torch.stack([v, 2 * v]) for k, v in weights.items()}
    jacobian = output_jacobians(stacked, x).numpy()
    assert jacobian.shape == (2, 3, 6 + 3)
    a = weights["readout"].numpy()
    for i, xi in enumerate(x.numpy()):
        d_w = (a * (expected_features[i] > 0))[:, None] * xi[None, :]
        np.testing.assert_allclose(jacobian[0, i], np.concatenate([d_w.ravel(), expected_features[i]]), atol=1e-15)
        np.testing.assert_allclose(jacobian[1, i], 2 * np.concatenate([d_w.ravel(), expected_features[i]]), atol=1e-15)
    # Depth 3: relu(W2 relu(W1 x)) read out.
    deep = {
        "layer1": weights["layer1"],
        "layer2": torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64),
        "readout": torch.tensor([3.0], dtype=torch.float64),
    }
    np.testing.assert_allclose(relu_net(deep, x)[0].numpy(), 3 * np.maximum(expected_features @ [1.0, 1.0, -1.0], 0))


def test_the_teacher_problem_lies_on_the_sphere():
    teacher, x, y, x_test, y_test = teacher_problem(3, [4], 20, 30, normalized=True, seed=5)
    np.testing.assert_allclose(x.norm(dim=1).numpy(), 1.0)
    np.testing.assert_allclose(x_test.norm(dim=1).numpy(), 1.0)
    np.testing.assert_allclose(teacher["layer1"].norm(dim=1).numpy(), 1.0)
    assert set(np.abs(teacher["readout"].numpy())) == {1.0}
    np.testing.assert_allclose(
        y.numpy(), np.maximum(x.numpy() @ teacher["layer1"].numpy().T, 0) @ teacher["readout"].numpy()
    )
    assert y_test.shape == (30,)
    raw = teacher_problem(3, [4, 2], 20, 30, normalized=False, seed=5)[0]
    assert not np.allclose(raw["layer1"].norm(dim=1).numpy(), 1.0) and set(raw) == {"layer1", "layer2", "readout"}


def test_direction_clusters_counts_directions_within_the_tolerance():
    angles = np.radians([0.0, 5.0, 90.0, 180.0, 183.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], 1) * [[1.0], [3.0], [0.5], [2.0], [1.0]]
    assert direction_clusters(vectors, 10.0) == 3
    assert direction_clusters(vectors, 1.0) == 5
    assert direction_clusters(vectors, 100.0) == 2  # 5 and 90 join 0; 180 (180 from 0) starts a second, 183 joins it


def test_the_first_record_of_a_zero_readout_student_is_its_feature_matrix(repo):
    """With a = 0 the Jacobian is [0 | relu(X W^T)], so its rank is that of the features at init."""
    spec = _entry(repo, "sparse_ts2_sgd", steps=2, seeds=2, record_points=2)
    spec["variants"] = {"constant": spec["variants"]["constant"]}
    cube = related_cube(spec, log=lambda _: None)
    settings = spec["settings"]
    _, x, y, _, _ = teacher_problem(
        settings["dim"], settings["teacher_hidden"], settings["train"], settings["test"], True, spec["data_seed"]
    )
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        w = settings["init_scale"] * rng.standard_normal((settings["hidden"][0], settings["dim"]))
        phi = np.maximum(x.numpy() @ w.T, 0)
        first = cube.sel(variant="constant", seed=seed).isel(step=0)
        assert float(first["jacobian_rank"]) == np.linalg.matrix_rank(phi, tol=1e-4 * np.linalg.norm(phi, 2))
        assert float(first["train_loss"]) == pytest.approx(float((y**2).mean()))
        assert float(first["active_fraction"].sel(layer=1)) == pytest.approx((phi > 0).any(0).mean())
        assert float(first["activation_rate"].sel(layer=1)) == pytest.approx((phi > 0).mean())
    assert cube["first_layer"].dims == ("variant", "seed", "neuron", "coordinate")
    assert cube["readout"].dims == ("variant", "seed", "neuron")
    assert cube.sizes["teacher_neuron"] == 3


def test_the_two_layer_figures_render_and_the_large_step_size_sparsifies(repo, tmp_path):
    spec = _entry(repo, "sparse_ts2_sgd", steps=2500, seeds=3, record_points=6)
    spec["variants"] = {k: spec["variants"][k] for k in ("constant", "decay_50")}
    cube = related_cube(spec, log=lambda _: None)
    figures = {
        "trajectories": {
            "variables": ["train_loss", "test_loss", "jacobian_rank", "feature_sparsity"],
            "log_y": ["train_loss", "test_loss"],
        },
        "neuron_directions": {"angle_tolerance": 10},
    }
    path = tmp_path / "ts2.nc"
    write_cube(cube, path)  # as the workflow writes it (xarray's default engine differs between versions)
    for plot, options in figures.items():
        outputs = {fmt: tmp_path / f"{plot}.{fmt}" for fmt in ("pdf", "png", "csv")}
        render(plot, [path], options, outputs)
        assert all(p.stat().st_size > 0 for p in outputs.values())
    _, table = trajectories([cube], figures["trajectories"])
    final = table.set_index(["variant", "variable"])["final_median"]
    # Among the runs that survive the large step size, its features are sparser and the Jacobian of lower rank.
    assert final["decay_50", "feature_sparsity"] < final["constant", "feature_sparsity"]
    assert final["decay_50", "jacobian_rank"] < final["constant", "jacobian_rank"]
    _, neurons = neuron_directions([cube], figures["neuron_directions"])
    directions = neurons.groupby("variant")["directions"].median()
    assert directions["decay_50"] < directions["constant"]
    assert (neurons["teacher_neurons"] == 3).all()


def test_the_three_layer_figure_draws_a_panel_per_layer(repo, tmp_path):
    spec = _entry(repo, "sparse_ts3_sgd", steps=600, seeds=1, record_points=4)
    spec["variants"] = {
        k: {**v, **({"warmup": {"steps": 30, "start": 0.1}} if "warmup" in v else {})}
        for k, v in spec["variants"].items()
        if k in ("constant", "decay_50")
    }
    cube = related_cube(spec, log=lambda _: None)
    assert cube["activation_rate"].dims == ("variant", "seed", "step", "layer")
    assert cube["readout"].dims == ("variant", "seed", "last_neuron")
    options = {"variables": ["activation_rate", "active_fraction", "test_loss"], "log_y": ["test_loss"]}
    fig, table = trajectories([cube], options)
    assert len([ax for ax in fig.axes if ax.axison]) == 5
    assert {"activation_rate [layer=1]", "activation_rate [layer=2]", "test_loss"} <= set(table["variable"])
    _, selected = trajectories([cube], {**options, "select": {"layer": [2]}})
    assert set(selected["variable"]) == {"activation_rate [layer=2]", "active_fraction [layer=2]", "test_loss"}
    last = cube["test_loss"].isel(step=-1)
    assert (last < cube["test_loss"].isel(step=0)).all()
    with pytest.raises(ValueError, match="not 2"):
        neuron_directions([cube], {})
