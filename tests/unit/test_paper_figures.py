"""The paper figures read off hand-built cubes with known answers: best-over-eta performance after
several training lengths, sharpness against gamma and against steps, phase portraits at several T."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from gammasweep.figures.eta_star_scaling import eta_star_scaling
from gammasweep.figures.performance_vs_gamma import performance_vs_gamma
from gammasweep.figures.phase_portrait import phase_portrait
from gammasweep.figures.sharpness_trajectory import sharpness_trajectory
from gammasweep.figures.sharpness_vs_gamma import sharpness_vs_gamma
from gammasweep.figures.style import theme
from gammasweep.results.analysis import (
    best_over_eta,
    cell_diverged,
    eta_max,
    eta_star,
    final_metric,
    fit_power_law,
    regime_windows,
)

GAMMAS = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0])
ETAS = 10.0 ** np.arange(-4, 3)  # 7 etas, 1e-4 .. 1e2
EDGE = [-1, 1, 2, 3, 4, 5, 6, 6]  # per gamma, the eta index of the final divergence edge (-1: all diverge)
SEEDS, EVALS, STEPS = [0, 1, 2], np.array([0, 1, 2, 5, 10, 20, 50, 100]), np.array([0, 1, 3, 10, 30, 99])


def sharpness_law(gamma: float) -> float:
    """gamma^-2 (lazy), gamma^(-2/3) (rich, L = 3)."""
    return gamma**-2.0 if gamma <= 1 else gamma ** (-2.0 / 3.0)


def _cube(sharpness: str = "measured") -> xr.Dataset:
    """Above the edge k = EDGE[gamma]: cell k+1 has seed 0 diverge at step 50, cell k+2 every seed at 5, the
    rest at 1 (the first update; the loss at init is finite). As the trainer records them, a member's
    values at its divergence step are its blow-up (test loss and sharpness 1e24, chance accuracy) and
    NaN after it. test_loss is best at eta index k-1; test_accuracy grows with eta (and by 0.01 per seed).
    sharpness (``measured`` | ``off`` (all NaN) | ``absent``) ends at sharpness_law(gamma) x (1 + 0.1 seed) at k-1."""
    shape = (len(GAMMAS), len(ETAS), len(SEEDS))
    diverged_step = np.full(shape, -1)
    for i, k in enumerate(EDGE):
        if k < 0:
            diverged_step[i] = 1
            continue
        if k + 1 < len(ETAS):
            diverged_step[i, k + 1, 0] = 50
        diverged_step[i, k + 2 :] = 5
        diverged_step[i, k + 3 :] = 1
    g, j, s, t = np.meshgrid(GAMMAS, np.arange(len(ETAS)), SEEDS, EVALS, indexing="ij")
    k = np.array(EDGE)[:, None, None, None]
    alive = (diverged_step[..., None] < 0) | (t <= diverged_step[..., None])
    eta_star_ = ETAS[np.maximum(k - 1, 0)]
    variables = {
        "test_loss": 1.0 + (j - (k - 1)) ** 2 + 0.01 * s,
        "test_accuracy": 0.1 + 0.05 * j * (t + 1) / (EVALS[-1] + 1) + 0.01 * s,
        "sharpness": np.vectorize(sharpness_law)(g)
        * (t + 1)
        / (EVALS[-1] + 1)
        * (1 + 0.1 * s)
        * np.sqrt(ETAS[j] / eta_star_),
    }
    blown = t == diverged_step[..., None]
    garbage = {"test_loss": 1e24, "test_accuracy": 0.1, "sharpness": 1e24}
    data = {
        name: (("gamma", "eta", "seed", "eval_step"), np.where(alive, np.where(blown, garbage[name], v), np.nan))
        for name, v in variables.items()
    }
    if sharpness == "off":
        data["sharpness"] = (data["sharpness"][0], np.full(data["sharpness"][1].shape, np.nan))
    elif sharpness == "absent":
        del data["sharpness"]
    train_alive = (diverged_step[..., None] < 0) | (STEPS < diverged_step[..., None])
    data |= {
        "train_loss": (("gamma", "eta", "seed", "step"), np.where(train_alive, 1.0 / (STEPS + 1.0), np.nan)),
        "diverged": (("gamma", "eta", "seed"), diverged_step >= 0),
        "diverged_step": (("gamma", "eta", "seed"), diverged_step),
        "cell_status": (("gamma", "eta"), np.zeros(shape[:2], np.int8)),
    }
    params = {
        "model": {"name": "mlp", "depth": 3, "width": 128},
        "loss": "mse",
        "steps": int(EVALS[-1]),
        "seeds": SEEDS,
    }
    return xr.Dataset(
        data,
        coords={"gamma": GAMMAS, "eta": ETAS, "seed": SEEDS, "step": STEPS, "eval_step": EVALS},
        attrs={"experiment": "synthetic", "cell_params": json.dumps(params)},
    )


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return _cube()


def _draw(plot, cubes: list[xr.Dataset], options: dict, tmp_path):
    """Draw in the house style, check the PNG is not blank, close; returns (axes, table)."""
    with theme():
        fig, table = plot(cubes, options)
        fig.savefig(tmp_path / "fig.png", dpi=80)
        axes = fig.axes
        plt.close(fig)
    image = imread(tmp_path / "fig.png")
    assert image.shape[0] > 150 and image.shape[1] > 150 and image[..., :3].std() > 0.05
    assert len(table) > 0
    return axes, table


def test_analysis_at_an_eval_step_counts_divergence_at_and_before_it(cube):
    # gamma = 1e-3 (edge index 1): cell 2 loses seed 0 at step 50, cell 3 every seed at 5, cells 4+ at 1.
    # Diverged at step t: the weights after t updates blew up, and eval step t reads them.
    assert cell_diverged(cube, 5).sel(gamma=1e-3).values.tolist() == [False] * 3 + [True] * 4
    assert cell_diverged(cube, 50).sel(gamma=1e-3).values.tolist() == [False] * 2 + [True] * 5
    assert cell_diverged(cube, 100).sel(gamma=1e-3).values.tolist() == [False] * 2 + [True] * 5
    assert not cell_diverged(cube, 0).any()  # step 0 is evaluated before the first update
    xr.testing.assert_equal(cell_diverged(cube), cell_diverged(cube, 100))
    assert eta_max(cube, 5).sel(gamma=1e-3) == ETAS[2] and eta_max(cube).sel(gamma=1e-3) == ETAS[1]
    for step in EVALS:  # no blow-up value reaches a final metric
        assert float(final_metric(cube, "test_loss", int(step)).max()) < 1e3
    assert np.isnan(eta_max(cube).sel(gamma=1e-4)) and eta_max(cube, 0).sel(gamma=1e-4) == ETAS[-1]
    xr.testing.assert_identical(final_metric(cube, "test_loss"), final_metric(cube, "test_loss", 100))
    assert eta_star(cube).values[1:].tolist() == ETAS[np.array(EDGE[1:]) - 1].tolist()
    assert final_metric(cube, "train_loss", 50).sel(gamma=1.0, eta=1e-4) == pytest.approx(1 / 31)  # record at 30
    best = best_over_eta(cube, "test_accuracy", 50)
    assert best["eta_best"].sel(gamma=1e-3) == ETAS[1] and best["eta_best"].sel(gamma=1e-4).isnull()  # 2 died at 50


@pytest.mark.parametrize("steps", [None, [5, 50, 100]])
def test_performance_vs_gamma_picks_the_best_eta_at_each_length(cube, steps, tmp_path):
    options = {} if steps is None else {"steps": steps}
    axes, table = _draw(performance_vs_gamma, [cube, cube], options, tmp_path)
    assert len(axes) == 2 and len(axes[0].get_lines()) == 3
    expected_steps = steps or [20, 50, 100]  # default: the last three eval steps
    assert sorted(set(table["steps"])) == expected_steps and len(table) == 2 * 3 * len(GAMMAS)
    assert list(table.columns) == ["experiment", "steps", "gamma", "eta_best", "mean", "min", "max"]
    for step in expected_steps:
        rows = table[(table["steps"] == step)].iloc[: len(GAMMAS)]
        assert rows[["eta_best", "mean", "min", "max"]].iloc[0].isna().all()  # gamma = 1e-4 all diverged by T
        # the largest eta not diverged by T: the edge at 50 and 100 (seed 0 of the next dies at 50), one above
        # it at 5 and 20 (every seed of the one after dies at 5)
        shift = {5: 1, 20: 1, 50: 0, 100: 0}[step]
        j = np.minimum(np.array(EDGE[1:]) + shift, len(ETAS) - 1)
        assert rows["eta_best"].values[1:].tolist() == ETAS[j].tolist()
        base = 0.1 + 0.05 * j * (step + 1) / 101
        np.testing.assert_allclose(rows["min"].values[1:], base)
        np.testing.assert_allclose(rows["mean"].values[1:], base + 0.01)
        np.testing.assert_allclose(rows["max"].values[1:], base + 0.02)


def test_sharpness_vs_gamma_fits_the_lazy_and_rich_exponents(cube, tmp_path):
    axes, table = _draw(sharpness_vs_gamma, [cube, cube], {}, tmp_path)
    assert len(axes) == 2
    fits = table[table["kind"] == "fit"].set_index(["experiment", "quantity", "regime"]).loc["synthetic"]
    fits = fits[~fits.index.duplicated()]
    assert fits.loc[("sharpness", "lazy"), "slope"] == pytest.approx(-2.0, abs=1e-6)
    assert fits.loc[("sharpness", "rich"), "slope"] == pytest.approx(-2.0 / 3.0, abs=1e-6)
    assert fits.loc[("sharpness", "lazy"), "expected_slope"] == -2.0
    assert fits.loc[("sharpness", "rich"), "expected_slope"] == pytest.approx(-2.0 / 3.0)
    assert fits.loc[("sharpness", "lazy"), "points"] == 3  # gamma = 1e-4 has no eta*: no sharpness
    # eta_max at 100 and 1000 is the grid's top, a bound: 2 / eta_max there is left out of the rich fit
    edge_fit = fits.loc[("two_over_eta_max", "rich")]
    assert edge_fit["censored_left_out"] == 2 and edge_fit["points"] == 1 and np.isnan(edge_fit["slope"])
    assert fits.loc[("two_over_eta_max", "lazy"), "slope"] == pytest.approx(-1.0)
    assert fits.loc[("two_over_eta_max", "lazy"), "slope_stderr"] < 1e-9  # 3 exact points
    per_gamma = table[table["kind"] == "gamma"].iloc[: len(GAMMAS)]
    np.testing.assert_allclose(per_gamma["eta_star"].values[1:], ETAS[np.array(EDGE[1:]) - 1])
    np.testing.assert_allclose(per_gamma["sharpness"].values[1:], [1.1 * sharpness_law(g) for g in GAMMAS[1:]])
    np.testing.assert_allclose(per_gamma["two_over_eta_max"].values[1:], 2.0 / ETAS[EDGE[1:]])
    assert per_gamma.iloc[0][["eta_star", "sharpness", "two_over_eta_max"]].isna().all()


def test_sharpness_trajectory_follows_eta_star_and_the_etas_below(cube, tmp_path):
    axes, table = _draw(sharpness_trajectory, [cube], {}, tmp_path)
    # default gammas: the smallest, median and largest with a finite eta* (1e-4 has none)
    assert sorted(set(table["gamma"])) == [1e-3, 1.0, 1e3] and len(axes) == 3
    # every eta draws its curve and its 2/eta line; at gamma = 1e-3 eta* is the smallest eta
    assert [len(ax.get_lines()) for ax in axes] == [2, 6, 6]
    at_one = table[table["gamma"] == 1.0]
    assert sorted(set(at_one["eta"])) == ETAS[1:4].tolist()
    assert at_one.loc[at_one["is_eta_star"], "eta"].unique().tolist() == [ETAS[3]]
    np.testing.assert_allclose(at_one["two_over_eta"], 2.0 / at_one["eta"])
    last = at_one[(at_one["eval_step"] == 100) & at_one["is_eta_star"]]
    assert last["sharpness"].item() == pytest.approx(1.1)
    assert len(at_one) == 3 * len(EVALS)
    axes, table = _draw(sharpness_trajectory, [cube], {"gammas": [0.011, 0.012], "etas_below": 1}, tmp_path)
    assert len(axes) == 1 and set(table["gamma"]) == {1e-2} and sorted(set(table["eta"])) == ETAS[:2].tolist()
    with theme(), pytest.raises(ValueError, match=r"gammas: every cell of gamma \[0.0001\] diverged.*gammas with one"):
        sharpness_trajectory([cube], {"gammas": [1e-4, 1.0]})


@pytest.mark.parametrize("plot", [sharpness_vs_gamma, sharpness_trajectory])
@pytest.mark.parametrize("sharpness", ["off", "absent"])
def test_sharpness_figures_need_the_probe(plot, sharpness):
    with theme(), pytest.raises(ValueError, match=r"sharpness probe on.*training: \{probes: \{sharpness"):
        plot([_cube(sharpness)], {})


def test_phase_portrait_at_several_lengths_marks_divergence_once_it_happened(cube, tmp_path):
    axes, table = _draw(phase_portrait, [cube], {"steps": [5, 50, 100]}, tmp_path)
    assert len(axes) == 4  # three portraits and one shared colour bar
    norms = {id(ax.collections[0].norm) for ax in axes[:3]}
    assert len(norms) == 1
    cell = table[(table["gamma"] == 1e-3)].set_index(["steps", "eta"])
    # eta index 2 loses seed 0 at step 50, index 3 every seed at step 5: diverged from that T on, and the
    # blow-up recorded at that step is never drawn
    assert [bool(cell.loc[(t, ETAS[2]), "diverged"]) for t in (5, 50, 100)] == [False, True, True]
    assert [bool(cell.loc[(t, ETAS[3]), "diverged"]) for t in (5, 50, 100)] == [True, True, True]
    assert [bool(cell.loc[(t, ETAS[k]), "is_eta_max"]) for t, k in ((5, 2), (50, 1), (100, 1))] == [True] * 3
    assert np.isfinite(cell.loc[(5, ETAS[2]), "test_loss"]) and np.isnan(cell.loc[(5, ETAS[3]), "test_loss"])
    assert table["test_loss"].max() < 1e3
    single_axes, single = _draw(phase_portrait, [cube], {}, tmp_path)
    assert len(single_axes) == 2 and "steps" not in single
    final = table[table["steps"] == 100].drop(columns="steps").reset_index(drop=True)
    np.testing.assert_array_equal(final["diverged"], single["diverged"])
    np.testing.assert_array_equal(final["is_eta_star"], single["is_eta_star"])
    np.testing.assert_allclose(final["test_loss"], single["test_loss"])


def test_phase_portraits_of_several_sweeps_share_one_colour_scale_one_row_each(cube, tmp_path):
    """The robustness figure: the same sweep at another width (here: worse losses) in a second row."""
    wider = cube.copy()
    wider["test_loss"] = 10.0 * cube["test_loss"]
    wider.attrs = {**cube.attrs, "experiment": "synthetic_wide"}
    axes, table = _draw(phase_portrait, [cube, wider], {"steps": [50, 100]}, tmp_path)
    assert len(axes) == 5  # 2 x 2 portraits and one colour bar
    assert len({id(ax.collections[0].norm) for ax in axes[:4]}) == 1
    assert "synthetic_wide" in axes[2].get_title() and "N = 128" in axes[2].get_title()
    by = table.set_index(["experiment", "steps", "gamma", "eta"])["test_loss"]
    np.testing.assert_allclose(by.loc["synthetic_wide"].values, 10.0 * by.loc["synthetic"].values)
    assert set(table["experiment"]) == {"synthetic", "synthetic_wide"}


def test_a_loss_above_its_value_at_init_takes_the_top_colour_and_keeps_its_value_in_the_table(cube, tmp_path):
    """Without a loss cap a catapult that has not come down by T ends stable at, say, 1e50: the colour
    scale ends at the loss at init (one 1e50 flattened it to one colour), the table holds 1e50."""
    caught = cube.copy(deep=True)
    caught["test_loss"][dict(gamma=3, eta=0, seed=0, eval_step=-1)] = 1e50
    axes, table = _draw(phase_portrait, [caught], {}, tmp_path)
    initial = float(caught["test_loss"].isel(eval_step=0).mean("seed").max())
    assert axes[0].collections[0].norm.vmax == pytest.approx(initial)
    assert table["test_loss"].max() == pytest.approx(1e50 / len(SEEDS))  # the seed mean
    _, plain = _draw(phase_portrait, [cube], {}, tmp_path)
    assert plain["test_loss"].max() < initial * 10


def _power_law_cube() -> xr.Dataset:
    """A cube whose divergence edge is a known power law landing on grid points: eta_max = gamma^2 for
    gamma <= 1 and gamma^(2/3) above, on an eta grid of 12 per decade up to 10^1.75; at gamma = 1000 the
    edge (100) is above the grid, so nothing diverges there (censored). Cells above the edge diverge at
    step 1; test_loss is best one grid step below the edge."""
    gammas = 10.0 ** (np.arange(-6, 7) / 2)  # 1e-3 .. 1e3, 2 per decade: 5 lazy points (<= 0.1), 5 rich (>= 10)
    etas = 10.0 ** (np.arange(-96, 22) / 12)  # 1e-8 .. 10^1.75
    edge = np.where(gammas <= 1, gammas**2, gammas ** (2 / 3))
    above = etas[None, :] > edge[:, None] * (1 + 1e-9)
    steps = np.where(above, 1, -1)[..., None]
    loss = np.abs(np.log10(etas)[None, :] - np.log10(edge)[:, None] + 1 / 12)[..., None, None] + 0.1
    return xr.Dataset(
        {
            "test_loss": (("gamma", "eta", "seed", "eval_step"), np.where(above[..., None, None], np.nan, loss)),
            "diverged": (("gamma", "eta", "seed"), steps >= 0),
            "diverged_step": (("gamma", "eta", "seed"), steps),
            "cell_status": (("gamma", "eta"), np.zeros(above.shape, np.int8)),
        },
        coords={"gamma": gammas, "eta": etas, "seed": [0], "eval_step": [100]},
        attrs={
            "experiment": "power_law",
            "cell_params": json.dumps(
                {"model": {"name": "mlp", "depth": 3, "width": 64}, "loss": "mse", "steps": 100, "seeds": [0]}
            ),
        },
    )


def test_fitted_edge_slopes_are_the_known_power_laws_and_leave_censored_points_out(tmp_path):
    """Known answer: slopes 2 and 2/3 from 5 and 4 points each, standard errors ~0; the censored gamma
    (its edge a lower bound at the grid's top) is left out of the rich fit, where it would pull the slope
    down, and drawn apart; the phase portrait's table marks it and its guide lines anchor elsewhere."""
    cube = _power_law_cube()
    edge = eta_max(cube)
    assert edge["censored"].values.tolist() == [False] * 12 + [True]
    _, table = _draw(eta_star_scaling, [cube], {"lazy_max": 0.1, "rich_min": 10}, tmp_path)
    fits = table[table["quantity"] == "eta_max"].set_index("regime")
    assert fits.loc["lazy", "slope"] == pytest.approx(2.0, abs=1e-9) and fits.loc["lazy", "points"] == 5
    assert fits.loc["rich", "slope"] == pytest.approx(2 / 3, abs=1e-9) and fits.loc["rich", "points"] == 4
    assert fits["slope_stderr"].max() < 1e-9 and fits.loc["rich", "censored_left_out"] == 1
    naive = fit_power_law(cube["gamma"].values, edge.values, 10, np.inf)  # the censored point taken as a value
    assert naive.slope < 2 / 3 - 0.05 and naive.stderr > 0.01
    _, portrait = _draw(phase_portrait, [cube], {}, tmp_path)
    assert portrait.groupby("gamma")["eta_max_censored"].first().tolist() == [False] * 12 + [True]


def test_the_fit_windows_rule_finds_the_break_of_a_known_broken_power_law(tmp_path):
    """Known answers: slopes 2 and 2/3 meeting at gamma = 10^0.5 (with +-0.05-decade noise) put the
    crossover within 0.1 decade of it, and the windows a decade either side; a censored point (a bound
    far below the line) does not move it; with fewer than 3 points a side the crossover is gamma = 1.
    On the power-law cube the rule's windows are the hand-picked 0.1 and 10 and the fits the same."""
    x = np.arange(-3, 4.01, 0.25)
    noise = 0.05 * np.resize([1, -1, 0, -1, 1], len(x))
    y = np.where(x <= 0.5, 2 * (x - 0.5), 2 / 3 * (x - 0.5)) + noise
    windows = regime_windows(10.0**x, 10.0**y)
    assert abs(np.log10(windows.crossover) - 0.5) <= 0.1
    assert np.log10(windows.lazy_max) == pytest.approx(np.log10(windows.crossover) - 1)
    assert np.log10(windows.rich_min) == pytest.approx(np.log10(windows.crossover) + 1)
    bound = y.copy()
    bound[-1] -= 3.0  # nothing diverged up to a grid top far below the line
    censored = np.arange(len(x)) == len(x) - 1
    assert regime_windows(10.0**x, 10.0**bound, censored) == windows
    assert regime_windows(10.0**x, 10.0**bound).crossover != windows.crossover  # taken as a value, it moves
    assert regime_windows(10.0 ** x[:5], 10.0 ** y[:5]).crossover == 1.0
    _, table = _draw(eta_star_scaling, [_power_law_cube()], {}, tmp_path)
    fits = table[table["quantity"] == "eta_max"].set_index("regime")
    assert fits["gamma_crossover"].iloc[0] == pytest.approx(1.0)
    assert fits.loc["lazy", "slope"] == pytest.approx(2.0, abs=1e-9) and fits.loc["lazy", "points"] == 5
    assert fits.loc["rich", "slope"] == pytest.approx(2 / 3, abs=1e-9) and fits.loc["rich", "points"] == 4


def test_a_power_law_fit_reports_its_standard_error():
    """y = 2 x + noise of known size: the slope's standard error is the textbook sigma / sqrt(Sxx)."""
    x = np.linspace(-2, 2, 9)
    noise = np.array([1, -1, 1, -1, 1, -1, 1, -1, 0]) * 0.05
    fit = fit_power_law(10.0**x, 10.0 ** (2 * x + noise), 0, np.inf)
    slope, intercept = np.polyfit(x, 2 * x + noise, 1)
    residual = 2 * x + noise - (slope * x + intercept)
    assert fit.slope == pytest.approx(slope) and fit.points == 9
    assert fit.stderr == pytest.approx(np.sqrt(residual @ residual / 7 / ((x - x.mean()) @ (x - x.mean()))))
    assert np.isnan(fit_power_law(10.0 ** x[:2], 10.0 ** x[:2], 0, np.inf).stderr)  # two points: no error


def _with_params(cube: xr.Dataset, **params) -> xr.Dataset:
    """The cube with ``params`` added to its cell parameters."""
    return cube.assign_attrs(cell_params=json.dumps({**json.loads(cube.attrs["cell_params"]), **params}))


def test_the_edge_of_stability_follows_the_schedule_and_is_not_drawn_for_sign_based_optimizers(cube, tmp_path):
    """With the step size divided by 10 from half the run on, the edge a sharpness is held against is 2/eta
    before and 20/eta after (it was 2/eta throughout); SignSGD's and Adam's sharpness has no such edge."""
    decayed = _with_params(cube, schedule={"decay": {"at": 0.5, "factor": 10}})
    axes, table = _draw(sharpness_trajectory, [decayed], {}, tmp_path)
    ratio = table["two_over_eta"] * table["eta"]
    np.testing.assert_allclose(ratio[table["eval_step"] < 50], 2.0)
    np.testing.assert_allclose(ratio[table["eval_step"] >= 50], 20.0)
    assert all(len(ax.get_lines()) % 2 == 0 for ax in axes)  # each eta: its sharpness and its edge
    for optimizer in ("signsgd", "adam"):
        axes, table = _draw(sharpness_trajectory, [_with_params(cube, optimizer={"name": optimizer})], {}, tmp_path)
        assert table["two_over_eta"].isna().all()
        assert not any(line.get_linestyle() == "--" for ax in axes for line in ax.get_lines())
