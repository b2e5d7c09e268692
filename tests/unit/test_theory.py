"""The Section-4 toy model: measured divergence edges follow gamma^2 (lazy) and gamma^(2/L) (rich)."""

from __future__ import annotations

import numpy as np
import pytest

from gammasweep.results.analysis import fit_power_law
from gammasweep.theory import toy as theory

GAMMAS = np.logspace(-4, 4, 17)
ETAS = np.logspace(-12, 7, 19 * 10 + 1)  # 10 per decade


def _slopes(depth: int, loss: str) -> tuple[float, float]:
    edge = theory.measured_eta_max(GAMMAS, depth, steps=600, loss=loss, etas=ETAS)
    return fit_power_law(GAMMAS, edge, 0, 1e-2).slope, fit_power_law(GAMMAS, edge, 1e2, np.inf).slope


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_mse_edge_scales_as_gamma_squared_then_gamma_to_two_over_depth(depth):
    lazy, rich = _slopes(depth, "mse")
    assert lazy == pytest.approx(2.0, abs=0.1)
    assert rich == pytest.approx(2.0 / depth, abs=0.12)


def test_cross_entropy_lazy_edge_scales_as_gamma():
    lazy, rich = _slopes(3, "cross_entropy")
    assert lazy == pytest.approx(1.0, abs=0.1)
    assert rich == pytest.approx(2.0 / 3, abs=0.12)


def test_mse_edge_sits_just_above_linear_stability_at_the_minimum_in_the_lazy_regime():
    """Below 2 / sharpness GD converges; a little above it, it oscillates without blowing up
    (the catapult band), so the divergence edge is a constant factor 1..3 above the linear edge."""
    gammas = np.array([1e-4, 1e-3, 1e-2])
    edge = theory.measured_eta_max(gammas, 3, steps=600, etas=ETAS)
    ratio = edge / theory.eta_max(gammas, 3)
    assert np.all((ratio >= 1.0) & (ratio < 3.0)), ratio


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_the_cross_entropy_lazy_edge_is_the_simulated_one(depth):
    """At gamma << 1 the CE edge is a_L gamma (``ce_lazy_edge``): exactly 2 / p0 for L = 2 (to the 100-per-
    decade grid), within 15% of GD on the toy for L = 3..6; its slope is 1, not the curvature edge's 2."""
    gammas, etas = np.array([1e-4, 1e-3, 1e-2]), np.logspace(-6, 2, 801)
    simulated = theory.measured_eta_max(gammas, depth, 1000, "cross_entropy", etas)
    ratio = theory.eta_max(gammas, depth, "cross_entropy") / simulated
    assert np.all(abs(ratio - 1) < (0.025 if depth == 2 else 0.15)), ratio
    if depth == 2:
        assert theory.ce_lazy_edge(2) == pytest.approx(2 * (1 + np.e))
    lazy = fit_power_law(GAMMAS, theory.eta_max(GAMMAS, depth, "cross_entropy"), 0, 1e-2)
    assert lazy.slope == pytest.approx(1.0)


def test_closed_forms():
    gamma = np.array([1e-4, 1.0, 1e4])
    # Sharpness at the minimum: L (1 + gamma)^(2 - 2/L) / gamma^2.
    np.testing.assert_allclose(theory.sharpness_at_minimum(gamma, 2), 2 * (1 + gamma) / gamma**2)
    # At gamma -> 0 the toy is linear in the weights: eta_crit ~ eta_max ~ 2 gamma^2 / L.
    assert theory.eta_crit(1e-4, 3) == pytest.approx(2e-8 / 3, rel=1e-3)
    assert theory.eta_max(1e-4, 3) == pytest.approx(2e-8 / 3, rel=1e-3)
    # Plateau escape: dw/dtau = w for L = 2 reaches sqrt(1 + gamma) at tau = log(1 + gamma) / 2.
    assert theory.plateau_escape_time(1e4, 2) == pytest.approx(0.5 * np.log1p(1e4))
    # eta_min ~ gamma / T at large gamma for L >= 3 (tau* tends to 1 / (L - 2)).
    assert theory.eta_min(1e6, 3, 100) == pytest.approx(1e6 / 100, rel=0.02)


def test_gd_below_eta_min_stays_on_the_plateau_and_above_it_learns():
    """Large gamma: learning within T steps needs eta of order gamma tau* / T."""
    gamma, depth, steps = 1e3, 3, 200
    eta_min = theory.eta_min(gamma, depth, steps)
    final, diverged = theory.simulate_toy(np.full(2, gamma), np.array([0.1 * eta_min, 3 * eta_min]), depth, steps)
    assert not diverged.any()
    assert final[0] > 0.4 and final[1] < 1e-3  # loss at init is 1/2


def test_reference_line_passes_through_its_anchor():
    line = theory.reference_line(np.array([1e-2, 1e-1, 1.0]), 1e-1, 5.0, 2.0)
    np.testing.assert_allclose(line, [0.05, 5.0, 500.0])
