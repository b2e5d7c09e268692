"""The related papers' metrics (gammasweep.related.sparsity, gammasweep.related.noether) on hand-computed cases and
against autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gammasweep.related.noether import equilibrium_gap, hessian_trace, noether_charge, noise_matrices
from gammasweep.related.sparsity import diagonal_net_jacobian, feature_sparsity, jacobian_rank, support_size


def test_feature_sparsity_drops_dead_units_and_correlated_duplicates():
    a = np.array([1.0, 0.0, 2.0, 0.0, 3.0, 1.0])  # 4 nonzeros
    b = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.5])  # 2 nonzeros, uncorrelated with a
    dead = np.zeros(6)
    features = np.stack([a, 2 * a, dead, b, 3 * a + 1e-3 * b, -a], axis=1)  # 2a, 3a+eps: duplicates
    assert feature_sparsity(features, threshold=0.99) == pytest.approx((4 + 2) / (6 * 6))
    # With a threshold the near-duplicate 3a + eps b does not reach, it is kept (its 5 nonzeros count).
    assert feature_sparsity(features, threshold=1 - 1e-12) == pytest.approx((4 + 2 + 5) / 36)
    assert feature_sparsity(np.zeros((3, 4))) == 0.0


def test_jacobian_rank_and_support_of_a_diagonal_net():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5))
    u, v = np.array([1.0, 0.0, 2.0, 0.0, 0.0]), np.array([0.5, 0.0, 0.0, 0.0, 1.0])
    jacobian = diagonal_net_jacobian(x, u, v)
    assert jacobian.shape == (8, 10)
    np.testing.assert_array_equal(jacobian[:, :5], x * v)  # dh/du_i = v_i x_i
    # Columns: x_0, x_4 (from v) and x_0, x_2 (from u): 3 distinct directions.
    assert jacobian_rank(jacobian) == 3 and support_size(u, v) == 1
    assert jacobian_rank(np.zeros((3, 3))) == 0
    assert jacobian_rank(np.diag([1.0, 1e-3, 1e-6]), relative_threshold=1e-4) == 2


def _two_layer(seed: int = 0):
    rng = np.random.default_rng(seed)
    d0, d, d2, n = 4, 3, 2, 50
    return (
        rng.standard_normal((d2, d)),
        rng.standard_normal((d, d0)),
        rng.standard_normal((n, d0)),
        rng.standard_normal((n, d2)),
    )


def test_noise_matrices_and_the_gap_match_their_definitions():
    u, w, x, y = _two_layer()
    gamma_w, gamma_u = noise_matrices(u, w, x, y)
    r = x @ w.T @ u.T - y
    expected_w = sum(np.sum(r[i] ** 2) * np.outer(x[i], x[i]) for i in range(len(x))) / len(x)
    expected_u = sum(np.sum(x[i] ** 2) * np.outer(r[i], r[i]) for i in range(len(x))) / len(x)
    np.testing.assert_allclose(gamma_w, expected_w, rtol=1e-12)
    np.testing.assert_allclose(gamma_u, expected_u, rtol=1e-12)
    left, right = u.T @ gamma_u @ u, w @ gamma_w @ w.T
    assert equilibrium_gap(u, w, x, y) == pytest.approx(np.linalg.norm(left - right) / np.linalg.norm(left))


def test_the_charge_is_conserved_by_the_gradient_flow():
    """<U, dL/dU> = <W, dL/dW> (the rescaling symmetry), so dC/dt = 0 along -grad L, exactly."""
    u, w, x, y = (torch.tensor(a, requires_grad=i < 2) for i, a in enumerate(_two_layer(1)))
    loss = ((x @ w.T @ u.T - y) ** 2).sum(1).mean()
    grad_u, grad_w = torch.autograd.grad(loss, (u, w))
    u, w = u.detach(), w.detach()
    assert float((u * grad_u).sum()) == pytest.approx(float((w * grad_w).sum()), rel=1e-12)
    assert noether_charge(u.numpy(), w.numpy()) == pytest.approx(float((u**2).sum() - (w**2).sum()))


def test_the_hessian_trace_formula_matches_autograd():
    u, w, x, y = (torch.tensor(a) for a in _two_layer(2))
    theta = torch.cat([u.flatten(), w.flatten()])

    def half_loss(flat: torch.Tensor) -> torch.Tensor:
        uu, ww = flat[: u.numel()].view_as(u), flat[u.numel() :].view_as(w)
        return 0.5 * ((x @ ww.T @ uu.T - y) ** 2).sum(1).mean()

    exact = torch.autograd.functional.hessian(half_loss, theta).diagonal().sum()
    sigma_x = (x.T @ x / len(x)).numpy()
    assert hessian_trace(u.numpy(), w.numpy(), sigma_x) == pytest.approx(float(exact), rel=1e-10)


def test_feature_sparsity_matches_the_greedy_definition_on_random_features():
    """Against the definition written out unit by unit, on ReLU features with planted duplicates
    (scaled copies), a near-copy, dead units and a constant unit."""
    rng = np.random.default_rng(3)
    base = np.maximum(rng.standard_normal((40, 12)), 0)
    noisy = base[:, 2] + 0.3 * np.abs(rng.standard_normal(40))
    features = np.column_stack([base, 2 * base[:, [0, 5]], noisy, np.zeros((40, 2)), np.ones(40)])
    for threshold in (0.5, 0.95, 0.99):
        kept: list[int] = []
        for j in range(features.shape[1]):
            column = features[:, j]
            if not column.any():
                continue
            if column.std() > 0 and any(
                features[:, k].std() > 0 and abs(np.corrcoef(column, features[:, k])[0, 1]) > threshold for k in kept
            ):
                continue
            kept.append(j)
        expected = np.count_nonzero(features[:, kept]) / features.size
        assert feature_sparsity(features, threshold) == pytest.approx(expected), threshold
    assert feature_sparsity(features, 0.95) < feature_sparsity(features, 1.0)  # the copies are dropped
