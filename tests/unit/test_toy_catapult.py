"""The two-weight toy of App. A9 (gammasweep.related.toy_catapult): its closed forms, the catapult
phenomenology of GD on it, its config entry and the trajectories figure's 2 / eta lines."""

from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import xarray as xr
from workflow_helpers import DEFAULT_CONFIG

from gammasweep.figures.trajectories import trajectories
from gammasweep.related.experiments import related_cube
from gammasweep.related.toy_catapult import (
    catapult_onset,
    flattest_minimum_sharpness,
    hessian,
    lazy_divergence_edge,
    ntk_at_init,
    sharpness,
    simulate,
)

QUIET = {"log": lambda message: None}
CONVERGED = 1e-20  # a loss below this has converged (float64 bottoms out near 1e-31)


def gd(gamma: float, imbalance: float, etas: np.ndarray, steps: int) -> xr.Dataset:
    """GD at each step size in etas (one run each, constant), every step recorded; dims (run, step)."""
    lr = torch.from_numpy(np.repeat(np.asarray(etas, dtype=np.float64)[:, None], steps, 1))
    return simulate({"gamma": gamma, "imbalance": imbalance}, lr, [0] * len(etas), 0, np.arange(steps + 1), **QUIET)


def rises(ds: xr.Dataset) -> np.ndarray:
    """(run,) whether the loss ever exceeds its initial value."""
    loss = ds["loss"].values
    return np.nanmax(loss, 1) > loss[:, 0] * (1 + 1e-9)


def test_the_closed_forms_are_the_autograd_hessian_and_its_top_eigenvalue():
    gamma = 0.3
    rng = np.random.default_rng(0)
    for u, v in [(2.0, 0.5), (1.0, 1.0), *rng.normal(0, 2, (5, 2))]:

        def loss(w: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((w[0] * w[1] - 1.0) / gamma - 1.0) ** 2

        exact = torch.autograd.functional.hessian(loss, torch.tensor([u, v], dtype=torch.float64))
        h = hessian(torch.tensor(u, dtype=torch.float64), torch.tensor(v, dtype=torch.float64), gamma)
        torch.testing.assert_close(h, exact, rtol=1e-12, atol=1e-12)
        top = sharpness(torch.tensor(u, dtype=torch.float64), torch.tensor(v, dtype=torch.float64), gamma)
        assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(exact)[-1]), rel=1e-12)
    # The NTK at init is ||grad f~||^2 = (v0^2 + u0^2) / gamma^2; eta_crit and the lazy edge follow from it.
    assert ntk_at_init(0.1, 2.0) == pytest.approx((0.25 + 4.0) / 0.01)
    assert catapult_onset(0.1, 2.0) == pytest.approx(2 / 425) and lazy_divergence_edge(0.1, 2.0) == pytest.approx(
        4 / 425
    )
    # The balanced minimum u = v = sqrt(1 + gamma) has the flattest-minimum sharpness (r = 0 there).
    w = torch.tensor(np.sqrt(1.1), dtype=torch.float64)
    assert float(sharpness(w, w, 0.1)) == pytest.approx(flattest_minimum_sharpness(0.1), rel=1e-12)


def test_one_gd_step_is_the_hand_computed_one():
    """From (a, 1/a), f~ = 0, r = -1: u <- a + eta v0 / gamma, v <- 1/a + eta u0 / gamma."""
    ds = gd(0.1, 2.0, [0.003], 1)
    np.testing.assert_allclose(ds["u"].values[0], [2.0, 2.0 + 0.003 * 0.5 / 0.1], rtol=1e-14)
    np.testing.assert_allclose(ds["v"].values[0], [0.5, 0.5 + 0.003 * 2.0 / 0.1], rtol=1e-14)
    np.testing.assert_allclose(ds["ntk"].values[0, 0], ntk_at_init(0.1, 2.0), rtol=1e-14)


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_below_eta_crit_the_loss_falls_and_the_sharpness_stays_at_the_init_ntk(gamma):
    """Lazy training: the weights move O(gamma), so the sharpness stays lambda_0 (1 + O(gamma))."""
    onset, lam0 = catapult_onset(gamma, 2.0), ntk_at_init(gamma, 2.0)
    ds = gd(gamma, 2.0, onset * np.array([0.3, 0.5, 0.9]), 300)
    loss = ds["loss"].values
    assert (ds["diverged_step"].values == -1).all() and (loss[:, -1] < CONVERGED).all()
    for run in loss:
        above = run[run > CONVERGED]
        assert (np.diff(above) < 0).all()  # monotone until float64 runs out of digits
    assert np.abs(ds["sharpness"].values / lam0 - 1).max() < 2 * gamma


@pytest.mark.parametrize("gamma", [0.1, 0.03, 0.01])
def test_between_eta_crit_and_the_window_top_gd_catapults_to_a_flatter_minimum(gamma):
    """The loss rises (to O(1 / gamma^2): the weights move O(1), so f~ ~ 1 / gamma), then converges
    where the sharpness is below 2 / eta and below its initial value."""
    onset = catapult_onset(gamma, 2.0)
    assert 1.8 * onset < 2 / flattest_minimum_sharpness(gamma)  # a stable minimum exists for every eta here
    etas = onset * np.array([1.2, 1.5, 1.8])
    ds = gd(gamma, 2.0, etas, 500)
    loss, sharp = ds["loss"].values, ds["sharpness"].values
    assert rises(ds).all() and (ds["diverged_step"].values == -1).all() and (loss[:, -1] < CONVERGED).all()
    assert (sharp[:, -1] < 2 / etas).all() and (sharp[:, -1] < 0.9 * sharp[:, 0]).all()
    peak = loss.max(1)
    assert ((peak * gamma**2 > 0.1) & (peak * gamma**2 < 10)).all()
    # The catapult drives the weights towards balance: on the minima u v = 1 + gamma the sharpness is
    # sqrt((u^2 - v^2)^2 + 4 (1 + gamma)^2) / gamma^2, so |u^2 - v^2| shrinks from a^2 - a^-2 with it.
    gap = ds["u"].values ** 2 - ds["v"].values ** 2
    np.testing.assert_allclose(np.hypot(gap[:, -1], 2 * (1 + gamma)) / gamma**2, sharp[:, -1], rtol=1e-9)
    assert (np.abs(gap[:, -1]) < 0.9 * gap[:, 0]).all()


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_well_above_the_window_gd_diverges_and_it_is_recorded(gamma):
    onset = catapult_onset(gamma, 2.0)
    ds = gd(gamma, 2.0, onset * np.array([2.5, 3.0, 10.0]), 200)
    assert (ds["diverged_step"].values >= 0).all()
    assert np.isnan(ds["loss"].values[:, -1]).all() and np.isnan(ds["sharpness"].values[:, -1]).all()


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_the_balanced_init_never_catapults(gamma):
    """a = 1: GD keeps u = v, so the NTK is a function of the loss: a run that converges lands on the
    balanced minimum (sharpness 2 (1 + gamma) / gamma^2) without its loss ever rising; any step that
    makes the loss rise never converges."""
    etas = 2 / flattest_minimum_sharpness(gamma) * np.geomspace(0.2, 3.0, 41)
    ds = gd(gamma, 1.0, etas, 1000)
    np.testing.assert_array_equal(ds["u"].values, ds["v"].values)
    converged = ds["loss"].values[:, -1] < CONVERGED
    assert converged.any() and (~converged).any()  # the grid spans both sides
    assert not (converged & rises(ds)).any()
    np.testing.assert_allclose(ds["sharpness"].values[converged, -1], flattest_minimum_sharpness(gamma), rtol=1e-9)
    # ... and convergence stops exactly where the balanced minimum turns unstable, eta = 2 / its sharpness.
    assert etas[converged].max() < 2 / flattest_minimum_sharpness(gamma) < etas[~converged].min()


def _first_eta(ds: xr.Dataset, etas: np.ndarray, where: np.ndarray) -> float:
    """The smallest step size of the (sorted) grid at which ``where`` holds, checking it holds above it too."""
    assert where.any() and not where[0] and where[np.argmax(where) :].all(), "not a single edge on the grid"
    return float(etas[np.argmax(where)])


def test_the_measured_onset_and_top_of_the_window_are_2_and_4_over_lambda0_and_scale_as_gamma_squared():
    gammas, onsets = [0.1, 0.03, 0.01], []
    for gamma in gammas:
        grid = np.linspace(0.9, 1.1, 401)  # 0.05 % apart
        etas = catapult_onset(gamma, 2.0) * grid
        onset = _first_eta(ds := gd(gamma, 2.0, etas, 50), etas, rises(ds))
        assert abs(onset / catapult_onset(gamma, 2.0) - 1) < gamma  # exact as gamma -> 0, O(gamma) off
        onsets.append(onset)
        etas = lazy_divergence_edge(gamma, 2.0) * np.linspace(0.9, 1.1, 201)
        ds = gd(gamma, 2.0, etas, 1000)
        top = _first_eta(ds, etas, ds["diverged_step"].values >= 0)
        assert abs(top / lazy_divergence_edge(gamma, 2.0) - 1) < gamma
    slope = np.polyfit(np.log(gammas), np.log(onsets), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.03)


def test_the_config_entry_shows_each_regime():
    """The default config's toy_catapult: its step sizes are the stated multiples of eta_crit and
    each variant does what its comment says."""
    spec = DEFAULT_CONFIG["related"]["toy_catapult"]
    onset = catapult_onset(spec["settings"]["gamma"], spec["settings"]["imbalance"])
    ratios = {v: spec["variants"][v]["eta"] / onset for v in spec["variants"]}
    assert ratios == pytest.approx({"lazy": 0.8, "catapult": 1.5, "divergent": 3.0, "balanced": 1.5}, rel=0.01)
    cube = related_cube(spec, **QUIET).isel(seed=0)
    loss, sharp = cube["loss"], cube["sharpness"]
    start = float(loss.sel(variant="lazy").isel(step=0))
    assert (
        float(loss.sel(variant="lazy").max()) == start and float(loss.sel(variant="lazy").isel(step=-1)) < 1e-12 * start
    )
    assert float(loss.sel(variant="catapult").max()) > 10 * start
    assert float(sharp.sel(variant="catapult").isel(step=-1)) < 2 / float(cube["eta"].sel(variant="catapult"))
    assert int(cube["diverged_step"].sel(variant="divergent")) >= 0
    balanced = cube.sel(variant="balanced")
    np.testing.assert_array_equal(balanced["u"].values, balanced["v"].values)
    assert float(balanced["loss"].max()) == start and float(balanced["catapult_onset"]) == pytest.approx(0.01)


def _edge_lines(ax: plt.Axes) -> dict[str, tuple[float, str]]:
    """variant -> (y, colour) of the panel's stability-edge lines."""
    return {
        line.get_gid().split(":", 1)[1]: (float(line.get_ydata()[0]), line.get_color())
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith("stability_edge:")
    }


def test_the_trajectories_figure_draws_2_over_eta_per_variant_on_the_chosen_panels():
    spec = copy.deepcopy(DEFAULT_CONFIG["related"]["toy_catapult"])
    spec["steps"], spec["record_points"] = 40, 41
    cube = related_cube(spec, **QUIET)
    options = DEFAULT_CONFIG["figures"]["toy_catapult"]["options"]
    assert options["variables"][0] == "loss" and "loss" not in options["stability_edge"]
    options = {**options, "variants": list(spec["variants"])}  # the divergent variant too
    fig, table = trajectories([cube], options)
    axes = dict(zip(options["variables"], fig.axes))
    assert _edge_lines(axes["loss"]) == {}
    for name in options["stability_edge"]:
        edges = _edge_lines(axes[name])
        assert set(edges) == set(spec["variants"])
        curves = {
            line.get_label().split(":")[0]: line.get_color() for line in axes[name].get_lines() if not line.get_gid()
        }
        for variant, (y, colour) in edges.items():
            assert y == pytest.approx(2 / spec["variants"][variant]["eta"]) and colour == curves[variant]
    assert table.loc[table["variant"] == "divergent", "diverged_runs"].eq(1).all()
    plt.close(fig)
    fig, _ = trajectories([cube], {k: v for k, v in options.items() if k != "stability_edge"})
    assert all(_edge_lines(ax) == {} for ax in fig.axes)  # without the option: the figure as before
    plt.close(fig)
