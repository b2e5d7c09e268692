"""The figures that read the probes (Figs. 4a, 4d, 5, 6a, 6b and the weight movement), each on a
hand-built cube whose answer is known."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gammasweep.figures.catapult import catapult
from gammasweep.figures.curvature_measures import curvature_measures
from gammasweep.figures.hessian_spectrum import hessian_spectrum, spectral_density, top_ritz_values
from gammasweep.figures.output_agreement import agreement, output_agreement
from gammasweep.figures.representation_similarity import representation_similarity
from gammasweep.figures.silent_alignment import first_crossing, silent_alignment
from gammasweep.figures.style import theme
from gammasweep.figures.weight_movement import weight_movement
from gammasweep.results.cube import open_cube, write_cube
from gammasweep.results.records import RECORDS, stored_dtype

GAMMAS, ETAS, SEEDS = np.array([1e-3, 1e-2, 1.0, 100.0]), np.array([1e-2, 1e-1, 1.0]), [0, 1]
EVALS, STEPS = np.array([0, 1, 2, 5, 10, 20, 50, 100]), np.arange(100)
LAYERS = ["hidden.0", "readout"]
GEN = np.random.default_rng(0)
FEATURES = GEN.normal(size=(len(GAMMAS), 12, 5))  # per gamma, the final representation of 12 probe images


def _cube(drop_step: float = 40.0, rise_step: float = 4.0) -> xr.Dataset:
    """eta* = 0.1 at every gamma (test loss smallest there); eta = 1 diverges at step 0. Train loss
    falls from 1 to 0.01 around ``drop_step``, the NTK alignment rises from 0.1 to 0.9 around
    ``rise_step`` (the feature alignment twice as late). Weight movement 3 gamma (layer 0) and
    gamma (layer 1), capped at 1. Top Ritz values 1..5 x gamma^-1, each growing from the
    first to the last eval step (1 + rank / 10). Outputs: gamma 1 and 100 nearly agree, 1e-3 is unrelated."""
    g, e, s = len(GAMMAS), len(ETAS), len(SEEDS)
    diverged_step = np.full((g, e, s), -1)
    diverged_step[:, 2] = 0
    alive_eval = diverged_step[..., None] < 0
    loss = 1.0 / (1.0 + (STEPS / drop_step) ** 4) * 0.99 + 0.01
    ntk = 0.1 + 0.8 / (1.0 + np.exp(-(EVALS - rise_step)))
    feature = 0.1 + 0.8 / (1.0 + np.exp(-(EVALS - 2 * rise_step)))
    full = lambda a, *extra: np.broadcast_to(a, (g, e, s, *extra)).copy()  # noqa: E731
    nan_if_diverged = lambda a: np.where(alive_eval.reshape(g, e, s, *[1] * (a.ndim - 3)), a, np.nan)  # noqa: E731
    ritz = np.zeros((g, e, s, len(EVALS), 1, 8))
    ritz[..., 5:] = np.nan  # a Krylov space of 5
    for rank in range(5):
        growth = 1.0 + 0.1 * rank * EVALS / EVALS[-1]  # the rank-r value grows by 1 + r / 10 (they stay in order)
        ritz[..., rank] = ((5 - rank) * growth[None, None, None, :] / GAMMAS[:, None, None, None])[..., None]
    weights = np.where(np.isfinite(ritz), 0.2, 0.0)
    outputs = np.stack(
        [
            GEN.normal(size=(12, 3)) if gamma < 0.1 else np.linspace(-1, 1, 36).reshape(12, 3) + 0.01 * k
            for k, gamma in enumerate(GAMMAS)
        ]
    )
    kernels = np.einsum("gpf,gqf->gpq", FEATURES, FEATURES) / FEATURES.shape[-1]
    movement = np.minimum(np.stack([3 * GAMMAS, GAMMAS], -1), 1.0)[:, None, None, None, :]
    data = {
        "train_loss": full(loss, len(STEPS)),
        "train_loss_at_step": full(loss, len(STEPS)),
        "test_loss": nan_if_diverged(full(np.array([2.0, 1.0, 3.0])[None, :, None, None], len(EVALS))),
        "ntk_alignment": nan_if_diverged(full(ntk, len(EVALS))),
        "feature_alignment": nan_if_diverged(full(feature, len(EVALS))),
        "sharpness": nan_if_diverged(full(np.geomspace(50.0, 5.0, len(EVALS)), len(EVALS))),
        "hessian_ritz_value": nan_if_diverged(ritz),
        "hessian_ritz_weight": weights,
        "probe_output": nan_if_diverged(full(outputs[:, None, None], 12, 3)),
        "feature_kernel": nan_if_diverged(full(kernels[:, None, None], 12, 12)),
        "weight_movement": nan_if_diverged(np.broadcast_to(movement, (g, e, s, len(EVALS), 2)).copy()),
    }
    data |= {
        "readout_sharpness": 0.5 * data["sharpness"],
        "hessian_trace": 10.0 * data["sharpness"],
        "ntk_eigenvalue": np.stack([data["sharpness"], 0.25 * data["sharpness"]], -1),
    }
    dims = {
        "train_loss": ("step",),
        "train_loss_at_step": ("step",),
        "hessian_ritz_value": ("eval_step", "start", "ritz"),
        "hessian_ritz_weight": ("eval_step", "start", "ritz"),
        "probe_output": ("output_example", "class"),
        "feature_kernel": ("kernel_example", "kernel_example_b"),
        "weight_movement": ("eval_step", "layer"),
        "ntk_eigenvalue": ("eval_step", "ntk_mode"),
    }
    variables = {k: (("gamma", "eta", "seed", *dims.get(k, ("eval_step",))), v) for k, v in data.items()}
    variables |= {
        "diverged": (("gamma", "eta", "seed"), diverged_step >= 0),
        "diverged_step": (("gamma", "eta", "seed"), diverged_step),
        "cell_status": (("gamma", "eta"), np.zeros((g, e), np.int8)),
    }
    params = {"model": {"name": "mlp", "depth": 2, "width": 16}, "loss": "mse", "steps": 100, "seeds": SEEDS}
    return xr.Dataset(
        variables,
        coords={"gamma": GAMMAS, "eta": ETAS, "seed": SEEDS, "step": STEPS, "eval_step": EVALS, "layer": LAYERS},
        attrs={"experiment": "synthetic", "cell_params": json.dumps(params)},
    )


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return _cube()


def _draw(plot, cube: xr.Dataset, options: dict):
    with theme():
        fig, table = plot([cube], options)
        fig.canvas.draw()
        axes = fig.axes
        plt.close(fig)
    return axes, table


def test_first_crossing_halfway_in_linear_and_log_space():
    steps = np.array([0, 1, 2, 3, 4])
    assert first_crossing(steps, np.array([0.0, 0.2, 0.6, 1.0, 0.9]), rising=True) == 2
    assert first_crossing(steps, np.array([1.0, 0.5, 0.2, 0.1, 0.01]), rising=False, log=True) == 3  # 10^-1 is halfway
    assert np.isnan(first_crossing(steps, np.full(5, np.nan), rising=True))
    assert np.isnan(first_crossing(steps, np.array([0.5, 0.51, 0.49, 0.52, 0.5]), rising=True))  # flat: no halfway


def test_silent_alignment_times_the_alignment_before_the_loss(cube):
    axes, table = _draw(silent_alignment, cube, {})
    summary = table[table["kind"] == "summary"].set_index("gamma")
    assert summary.index.tolist() == [1e-3, 100.0] and len(axes) == 4  # default: smallest and largest gamma
    assert (summary["eta"] == 0.1).all()
    # NTK alignment 0.1 -> 0.9 centred on step 4: halfway reached at eval step 5; the features (at 8) at 10.
    assert summary["ntk_half_rise_step"].tolist() == [5.0, 5.0]
    assert summary["feature_half_rise_step"].tolist() == [10.0, 10.0]
    # loss 1 -> ~0.01: halfway in log is ~0.1, first reached after the drop at step 40
    expected = STEPS[
        np.argmax(
            np.log10(_cube()["train_loss"].values[0, 0, 0])
            <= np.log10(1.0) + 0.5 * np.log10(_cube()["train_loss"].values[0, 0, 0].min())
        )
    ]
    assert summary["loss_half_drop_step"].tolist() == [expected, expected] and expected > 40
    late = _draw(silent_alignment, _cube(drop_step=3.0, rise_step=50.0), {"gammas": [1.0]})[1]
    row = late[late["kind"] == "summary"].iloc[0]
    assert row["ntk_half_rise_step"] > row["loss_half_drop_step"]  # no silent alignment: the loss drops first


def test_hessian_spectrum_tracks_the_top_ritz_values_and_their_growth(cube):
    axes, table = _draw(hessian_spectrum, cube, {"top": 3})
    growth = table[table["kind"] == "growth"].set_index(["gamma", "rank"])["value"]
    for gamma in (1e-3, 100.0):
        np.testing.assert_allclose([growth[(gamma, r)] for r in (1, 2, 3)], [1.0, 1.1, 1.2])
    top = table[(table["kind"] == "top") & (table["eval_step"] == 0)].set_index(["gamma", "rank"])["value"]
    np.testing.assert_allclose(top[(100.0, 1)], 5 / 100.0)  # the largest of 1..5 x gamma^-1
    assert len(axes) == 4
    values, weights = np.array([3.0, 1.0, np.nan, 2.0]), np.array([0.5, 0.25, 0.0, 0.25])
    np.testing.assert_array_equal(top_ritz_values(values, weights, 5), [3.0, 2.0, 1.0, np.nan, np.nan])
    grid = np.linspace(-5, 10, 3001)
    assert np.trapezoid(spectral_density(values, weights, grid, 0.1), grid) == pytest.approx(1.0, rel=1e-6)


def test_output_agreement_scores_pairs_of_networks(cube):
    axes, table = _draw(output_agreement, cube, {})
    pairs = table.set_index(["gamma_a", "gamma_b"])
    assert pairs.index.tolist() == [(1.0, 100.0), (1e-3, 100.0)] and len(axes) == 2
    assert pairs.loc[(1.0, 100.0), "pearson_r"] == pytest.approx(1.0)
    assert pairs.loc[(1.0, 100.0), "r_squared"] > 0.99 and pairs.loc[(1e-3, 100.0), "r_squared"] < 0.5
    a = np.linspace(-1, 1, 36)
    r, r2 = agreement(a, 2 * a)
    assert r == pytest.approx(1.0) and r2 == pytest.approx(1 - (a**2).sum() / ((2 * a) ** 2).sum())
    assert _draw(output_agreement, cube, {"pairs": [[0.011, 1.1]]})[1][["gamma_a", "gamma_b"]].values.tolist() == [
        [1e-2, 1.0]
    ]


def test_representation_similarity_is_linear_cka_of_the_final_features(cube):
    _, table = _draw(representation_similarity, cube, {})
    matrix = table.pivot(index="gamma_a", columns="gamma_b", values="cka")
    assert matrix.shape == (4, 4) and set(table["seed_a"]) == {0} and set(table["seed_b"]) == {1}
    np.testing.assert_allclose(np.diag(matrix.values), 1.0)  # the same features for both seeds
    x, y = FEATURES[0] - FEATURES[0].mean(0), FEATURES[3] - FEATURES[3].mean(0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert matrix.loc[1e-3, 100.0] == pytest.approx(expected)


def test_weight_movement_fits_the_lazy_slope(cube):
    _, table = _draw(weight_movement, cube, {"lazy_max": 0.1, "rich_min": 10.0})
    fits = table[table["kind"] == "fit"].set_index("layer")
    np.testing.assert_allclose(fits["slope"], 1.0)
    assert (fits["points"] == 2).all() and (fits["expected_slope"] == 1.0).all()
    rows = table[(table["kind"] == "gamma") & (table["layer"] == "hidden.0")]
    np.testing.assert_allclose(rows["weight_movement"], np.minimum(3 * GAMMAS, 1.0))


def test_catapult_flags_learning_rates_above_two_over_the_initial_sharpness(cube):
    _, table = _draw(catapult, cube, {"etas": 2})
    assert table["gamma"].unique().tolist() == [1e-3] and table["eta"].tolist() == [0.1, 0.01]  # eta = 1 diverged
    np.testing.assert_allclose(table["sharpness_init"], 50.0)
    assert table["catapult"].tolist() == [True, False]  # 2 / 0.1 = 20 < 50 < 2 / 0.01
    np.testing.assert_allclose(table["loss_spike"], 1.0)  # this synthetic loss never rises


def test_curvature_measures_draw_each_recorded_measure_at_eta_star(cube):
    axes, table = _draw(curvature_measures, cube, {})
    assert len(axes) == 6 and set(table["gamma"]) == {1e-3, 1.0, 100.0} and (table["eta"] == 0.1).all()
    assert len(axes[0].get_lines()) == 5  # Hessian, readout block, two NTK modes, and 2 / eta*
    first = table[table["eval_step"] == 0].set_index(["gamma", "measure", "mode"])["value"]
    np.testing.assert_allclose(
        [first[(1.0, m, 1)] for m in ("sharpness", "readout_sharpness", "hessian_trace")], [50.0, 25.0, 500.0]
    )
    np.testing.assert_allclose(first[(1.0, "ntk_eigenvalue", 2)], 12.5)
    without_trace = _draw(curvature_measures, cube.drop_vars(["hessian_trace", "ntk_eigenvalue"]), {"gammas": [1.0]})
    assert len(without_trace[0]) == 1 and set(without_trace[1]["measure"]) == {"sharpness", "readout_sharpness"}
    assert axes[3].get_yscale() == "log"
    saddle = cube.copy(deep=True)
    saddle["hessian_trace"][{"eval_step": 0}] = -5.0  # Hutchinson's estimate below zero near a saddle
    assert _draw(curvature_measures, saddle, {})[0][3].get_yscale() == "symlog"
    with pytest.raises(ValueError, match="ntk_spectrum"):
        _draw(
            curvature_measures,
            cube.drop_vars(["sharpness", "readout_sharpness", "hessian_trace", "ntk_eigenvalue"]),
            {},
        )


@pytest.mark.parametrize(
    "plot,options",
    [
        (silent_alignment, {}),
        (hessian_spectrum, {"top": 3}),
        (output_agreement, {}),
        (representation_similarity, {}),
        (weight_movement, {"lazy_max": 0.1, "rich_min": 10.0}),
        (catapult, {"etas": 2}),
        (curvature_measures, {}),
    ],
    ids=lambda p: getattr(p, "__name__", ""),
)
def test_a_written_cube_read_lazily_draws_the_float64_cubes_numbers(cube, tmp_path, plot, options):
    """A cube written as stored (probe records in ``stored_dtype``, compressed) and opened lazily gives the
    numbers of the in-memory float64 cube, to float32's precision."""
    stored = cube.assign({name: cube[name].astype(stored_dtype(name)) for name in RECORDS if name in cube})
    write_cube(stored, tmp_path / "cube.nc")
    expected = _draw(plot, cube, options)[1]
    with open_cube(tmp_path / "cube.nc") as lazy:
        assert not lazy["feature_kernel"].variable._in_memory  # nothing read yet (xarray's lazy backend array)
        got = _draw(plot, lazy, options)[1]
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    for column in expected:
        if pd.api.types.is_numeric_dtype(expected[column]) and not pd.api.types.is_bool_dtype(expected[column]):
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-5, atol=1e-9, err_msg=column)
        else:
            assert got[column].tolist() == expected[column].tolist(), column
