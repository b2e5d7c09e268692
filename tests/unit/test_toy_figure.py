"""The toy model's cube (Fig. 7 data), its phase-portrait figure and the job that writes the cube."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from gammasweep.figures.style import theme
from gammasweep.figures.toy_phase_portrait import toy_phase_portrait
from gammasweep.jobs.simulate import simulate_toy_cube
from gammasweep.results.cube import open_cube
from gammasweep.theory import toy as theory

GAMMAS = np.logspace(-4, 4, 17)  # 2 per decade
ETAS = np.logspace(-12, 4, 16 * 20 + 1)  # 20 per decade
DEPTH, STEPS = 3, 300


@pytest.fixture(scope="module")
def cubes():
    return [theory.toy_cube(GAMMAS, ETAS, DEPTH, STEPS, loss) for loss in ("mse", "cross_entropy")]


def test_toy_cube_layout_and_theory_lines(cubes):
    mse, ce = cubes
    for cube in cubes:
        assert cube["final_loss"].dims == ("gamma", "eta") and cube["final_loss"].dtype == np.float64
        assert cube.sizes == {"gamma": len(GAMMAS), "eta": len(ETAS)}
        assert cube.attrs["model"] == "toy" and cube.attrs["depth"] == DEPTH and cube.attrs["steps"] == STEPS
        assert cube["final_loss"].where(cube["diverged"]).isnull().all()  # NaN exactly where diverged
        assert cube["final_loss"].where(~cube["diverged"]).notnull().sum() == (~cube["diverged"]).sum()
        assert cube["eta_max_measured"].attrs["units"] == "1"
        # The edge is the last eta before the first diverged one, read off the cube's own mask.
        i = 3
        first = int(cube["diverged"].values[i].argmax())
        assert cube["eta_max_measured"].values[i] == ETAS[first - 1]
        # eta_min = gamma tau* / T with tau* = 1 - (1 + gamma)^(-1/3) for L = 3 (dw/dtau = w^2 from w = 1)
        np.testing.assert_allclose(cube["eta_min_theory"], GAMMAS * (1 - (1 + GAMMAS) ** (-1 / 3)) / STEPS)
    # eta_crit = 2 / max(L / gamma^2 - (L - 1) / gamma, 1 / gamma) (the MSE Hessian at w = 1: L^2 - ... / gamma^2)
    np.testing.assert_allclose(mse["eta_crit_theory"], 2 / np.maximum(3 / GAMMAS**2 - 2 / GAMMAS, 1 / GAMMAS))
    assert ce["eta_crit_theory"].isnull().all()
    # Each theory edge against the cube's own simulated one: MSE within the catapult band (1..3x above the
    # linear edge) at gamma << 1; cross-entropy's bounded-gradient edge within 15% at gamma << 1 (it once
    # was the MSE-like gamma^2 line, 10^2..10^4 below), and within a factor 3 in the rich regime
    lazy, rich = GAMMAS <= 1e-2, GAMMAS >= 1e2
    mse_ratio = (mse["eta_max_measured"] / mse["eta_max_theory"]).values
    assert np.all((mse_ratio[lazy] >= 1) & (mse_ratio[lazy] < 3)), mse_ratio
    ce_ratio = (ce["eta_max_measured"] / ce["eta_max_theory"]).values
    assert np.all(abs(ce_ratio[lazy] - 1) < 0.15) and np.all((ce_ratio[rich] > 1 / 3) & (ce_ratio[rich] < 3)), ce_ratio
    # A converged CE run ends at the target entropy, not 0.
    assert np.nanmin(ce["final_loss"]) == pytest.approx(theory.minimum_loss("cross_entropy"), abs=1e-6)


def test_figure_renders_one_panel_per_cube_and_tables_the_edge_slopes(cubes, tmp_path):
    with theme():
        fig, table = toy_phase_portrait(cubes, {})
        assert len(fig.axes) == 2 * len(cubes)  # one panel and one colorbar each
        fig.savefig(tmp_path / "toy.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    image = imread(tmp_path / "toy.png")
    assert image.shape[0] > 200 and image.shape[1] > 400 and image[..., :3].std() > 0.05  # not blank
    table.to_csv(tmp_path / "toy.csv", index=False)
    table = pd.read_csv(tmp_path / "toy.csv")
    edges = table[table["kind"] == "edge"]
    assert len(edges) == 2 * len(GAMMAS) and edges["eta_max_measured"].notnull().all()
    fits = table[table["kind"] == "fit"].set_index(["loss", "regime"])
    expected = {
        ("mse", "lazy"): (2.0, 0.15),
        ("mse", "rich"): (2 / 3, 0.15),
        ("cross_entropy", "lazy"): (1.0, 0.2),
        ("cross_entropy", "rich"): (2 / 3, 0.15),
    }
    for key, (slope, tol) in expected.items():
        assert fits.loc[key, "expected_slope"] == pytest.approx(slope)
        assert fits.loc[key, "slope"] == pytest.approx(slope, abs=tol), key
        assert fits.loc[key, "points"] == 5  # gamma 1e-4..1e-2 and 1e2..1e4 at 2 per decade


def test_job_writes_a_cube_that_reads_back_with_its_settings(tmp_path):
    settings = {
        "loss": "cross_entropy",
        "depth": 2,
        "steps": 50,
        "gamma": {"min": 0.01, "max": 100.0, "per_decade": 1},
        "eta": [1e-3, 1e-1, 10.0, 1e3],
    }
    out = tmp_path / "toy.nc"
    simulate_toy_cube(settings, str(out))
    cube = open_cube(out)
    assert cube["gamma"].values.tolist() == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0])
    assert cube["eta"].values.tolist() == [1e-3, 1e-1, 10.0, 1e3]
    assert cube["diverged"].dtype == bool and cube.attrs["loss"] == "cross_entropy"
    assert json.loads(cube.attrs["toy_settings"]) == settings
    assert "numpy" in json.loads(cube.attrs["versions"])
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("loss", ["ce", "MSE"])
def test_unknown_loss_names_are_rejected(loss):
    with pytest.raises(ValueError, match="unknown toy loss"):
        theory.toy_cube([1.0], [0.1], 2, 10, loss)
    with pytest.raises(ValueError, match="unknown toy loss"):
        theory.eta_max(1.0, 2, loss)


def test_regime_diagram_shades_the_theory_regions_and_finds_where_the_triangle_closes(tmp_path):
    """With T = 3 steps the plateau escape eta_min(T) ~ gamma / T overtakes eta_max ~ gamma^(2/L) at a
    moderate gamma: the table's closing gamma is the root of eta_min = eta_max (by bisection here); with
    T = 10^4 it stays open over the cube's range."""
    from scipy.optimize import brentq

    from gammasweep.figures.regime_diagram import regime_diagram

    short, long = (theory.toy_cube(GAMMAS, ETAS[::40], DEPTH, steps, "mse") for steps in (3, 10_000))
    with theme():
        fig, table = regime_diagram([short, long], {"points": 2000})
        assert len(fig.axes) == 2
        assert sum(len(ax.collections) for ax in fig.axes) == 2 * 3  # three shaded regions per panel
        plt.close(fig)
    closing = table[table["kind"] == "closing"]["gamma"].tolist()
    root = brentq(lambda g: theory.eta_min(g, DEPTH, 3) - theory.eta_max(g, DEPTH), 1.0, 1e4)
    assert closing[0] == pytest.approx(root, rel=0.01) and np.isnan(closing[1])
    lines = table[(table["kind"] == "line") & (table["steps"] == 3)]
    lazy = lines[lines["gamma"] < 1e-3]
    np.testing.assert_allclose(
        lazy["learns_decades"],
        np.log10(theory.eta_max(lazy["gamma"].values, DEPTH) / theory.eta_min(lazy["gamma"].values, DEPTH, 3)),
    )
    assert (lines["eta_crit"] >= lines["eta_max"]).all()  # the toy's catapult onset lies above its edge
    with pytest.raises(ValueError, match="MSE"):
        regime_diagram([theory.toy_cube(GAMMAS, ETAS[::40], DEPTH, 3, "cross_entropy")], {})
