"""The nonlinear nets of the noise-equilibrium paper (gammasweep.related.nonlinear_equilibrium; B-6, B-7,
B-9): the noise matrices against closed forms and autograd, which symmetries the activations keep,
the scale-invariant layers' orthogonal gradients, and the figures with their SGD-vs-GD results.

What the symmetry tests check: relu and leaky relu are positively homogeneous, so every hidden
unit's rescaling (w_i, u_i) -> (c w_i, u_i / c) is a symmetry and <u_i, dL/du_i> = <w_i, dL/dw_i>
(gradient flow conserves each ||u_i||^2 - ||w_i||^2, hence ||U||^2 - ||W||^2). tanh and swish break
it; tanh is odd and linear near 0, so its violation vanishes faster than the terms as the weights
shrink.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_helpers import DEFAULT_CONFIG

from gammasweep.figures import render
from gammasweep.related.experiments import related_cube
from gammasweep.related.noether import noise_matrices
from gammasweep.related.nonlinear_equilibrium import (
    activation,
    covariance_matrices,
    hidden_noise_matrices,
    normalized,
    scale_invariant_forward,
)
from gammasweep.results.cube import write_cube


def _net(seed: int = 0, d0: int = 5, d: int = 4, n: int = 30, scale: float = 1.0):
    """u (1, d0, d), w (1, d, d0), x (n, d0), y (n, d0), float64."""
    rng = np.random.default_rng(seed)
    return tuple(
        torch.from_numpy(a)
        for a in (
            scale * rng.standard_normal((1, d0, d)),
            scale * rng.standard_normal((1, d, d0)),
            rng.standard_normal((n, d0)),
            rng.standard_normal((n, d0)),
        )
    )


def test_the_noise_matrices_of_a_linear_activation_are_the_linear_nets():
    u, w, x, y = _net()
    input_side, output_side = hidden_noise_matrices(u, w, x, y, activation("linear"))
    gamma_w, gamma_u = noise_matrices(u[0].numpy(), w[0].numpy(), x.numpy(), y.numpy())
    np.testing.assert_allclose(input_side[0].numpy(), w[0].numpy() @ gamma_w @ w[0].numpy().T, rtol=1e-12)
    np.testing.assert_allclose(output_side[0].numpy(), u[0].numpy().T @ gamma_u @ u[0].numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "relu", "swish"])
def test_the_noise_is_integrated_out_exactly(name):
    """Noise +-sqrt(d0 var_i) e_i (each with probability 1 / 2 d0) has covariance diag(var): the
    matrices over every (x, y + noise) pair equal the closed form with sigma_eps."""
    u, w, x, y = _net(1)
    variances = torch.tensor([5.0, 1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    d0 = len(variances)
    atoms = torch.cat([torch.diag((d0 * variances).sqrt()), -torch.diag((d0 * variances).sqrt())])  # (2 d0, d0)
    x_all, y_all = x.repeat_interleave(2 * d0, 0), (y[:, None, :] + atoms).reshape(-1, d0)
    act = activation(name)
    sampled = hidden_noise_matrices(u, w, x_all, y_all, act)
    exact = hidden_noise_matrices(u, w, x, y, act, torch.diag(variances))
    for a, b in zip(sampled, exact):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)


def _per_unit_terms(name: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(<u_i, dL/du_i>, <w_i, dL/dw_i>) per hidden unit i of one autoencoder, L = mean ||U act(W x) - x - noise||^2."""
    u, w, x, noise = (t[0] if t.dim() == 3 else t for t in _net(2, scale=scale))
    y = x + noise
    u.requires_grad_(), w.requires_grad_()
    loss = (activation(name)(x @ w.T) @ u.T - y).square().sum(1).mean()
    grad_u, grad_w = torch.autograd.grad(loss, (u, w))
    return (u * grad_u).sum(0).detach().numpy(), (w * grad_w).sum(1).detach().numpy()


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "linear"])
def test_homogeneous_activations_keep_every_units_rescaling_symmetry(name):
    on_u, on_w = _per_unit_terms(name)
    np.testing.assert_allclose(on_u, on_w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "swish"])
def test_tanh_and_swish_break_it(name):
    on_u, on_w = _per_unit_terms(name)
    assert np.abs(on_u - on_w).max() > 0.05 * np.abs(on_u).max()


def test_tanh_is_nearly_symmetric_at_small_weights():
    violation = {}
    for scale in (0.3, 0.03):  # tanh(z) - z tanh'(z) = O(z^3): the relative violation falls like scale^2
        on_u, on_w = _per_unit_terms("tanh", scale)
        violation[scale] = np.abs(on_u - on_w).max() / np.abs(on_u).max()
    assert violation[0.03] < 0.1 * violation[0.3]


def test_the_diagonals_are_the_noise_of_the_per_unit_charges():
    """relu, one example per step: unit i's charge ||u_i||^2 - ||w_i||^2 changes by exactly
    eta^2 (||g_u_i||^2 - ||g_w_i||^2), whose mean over the examples is 4 (input - output side)_ii."""
    u, w, x, y = _net(3)
    act, eta = activation("relu"), 0.01
    changes = []
    for n in range(len(x)):
        uu, ww = u[0].clone().requires_grad_(), w[0].clone().requires_grad_()
        loss = (act(x[n] @ ww.T) @ uu.T - y[n]).square().sum()
        grad_u, grad_w = torch.autograd.grad(loss, (uu, ww))
        before = uu.detach().square().sum(0) - ww.detach().square().sum(1)
        after = (uu - eta * grad_u).detach().square().sum(0) - (ww - eta * grad_w).detach().square().sum(1)
        np.testing.assert_allclose(
            (after - before).numpy(), (eta**2 * (grad_u.square().sum(0) - grad_w.square().sum(1))).numpy(), atol=1e-12
        )
        changes.append((after - before).numpy())
    input_side, output_side = hidden_noise_matrices(u, w, x, y, act)
    expected = 4 * eta**2 * torch.diagonal(input_side[0] - output_side[0]).numpy()
    np.testing.assert_allclose(np.mean(changes, 0), expected, rtol=1e-8, atol=1e-14)


def test_covariance_matrices_normalize_by_the_trace():
    u, w, _, _ = _net(4)
    sigma_x, sigma_eps = torch.eye(5, dtype=torch.float64) * 3, torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    left, right = covariance_matrices(u, w, sigma_x, sigma_eps)
    np.testing.assert_allclose(left[0].numpy(), (w[0] @ w[0].T / 5).numpy(), rtol=1e-12)
    np.testing.assert_allclose(right[0].numpy(), (u[0].T @ sigma_eps @ u[0] / 15).numpy(), rtol=1e-12)


def test_scale_invariant_layers_have_orthogonal_gradients():
    """Each W_l enters as W_l / ||W_l||: <W_l, dL/dW_l> = 0, so a step raises ||W_l||^2 by exactly eta^2 ||g_l||^2."""
    rng = np.random.default_rng(5)
    weights = [
        torch.from_numpy(rng.standard_normal(shape)).requires_grad_() for shape in ((2, 6, 3), (2, 6, 6), (2, 1, 6))
    ]
    x, y = torch.from_numpy(rng.standard_normal((10, 3))), torch.from_numpy(rng.standard_normal(10))
    torch.testing.assert_close(
        scale_invariant_forward([3.0 * w for w in weights], x), scale_invariant_forward(weights, x)
    )
    loss = (scale_invariant_forward(weights, x) - y).square().mean(1).sum()
    grads = torch.autograd.grad(loss, weights)
    eta = 0.1
    for weight, grad in zip(weights, grads):
        weight = weight.detach()
        assert float((weight * grad).sum().abs()) < 1e-12 * float(weight.norm() * grad.norm())
        np.testing.assert_allclose(
            torch.linalg.matrix_norm(weight - eta * grad).square().numpy(),
            (torch.linalg.matrix_norm(weight).square() + eta**2 * torch.linalg.matrix_norm(grad).square()).numpy(),
            rtol=1e-12,
        )
    np.testing.assert_allclose(
        torch.linalg.matrix_norm(normalized(weights[1].detach())).numpy(), np.sqrt(6), rtol=1e-12
    )


def _entry(name: str, steps: int, **settings) -> dict:
    """The default config's related entry ``name``, shortened to ``steps`` and one seed."""
    spec = copy.deepcopy(DEFAULT_CONFIG["related"][name])
    spec.update(steps=steps, seeds=1, record_points=11)
    spec["settings"].update(settings)
    return spec


def _figure(name: str) -> dict:
    return DEFAULT_CONFIG["figures"][name]


def _render(tmp_path, cube, figure: str) -> None:
    write_cube(cube, tmp_path / "cube.nc")
    outputs = {fmt: tmp_path / f"{figure}.{fmt}" for fmt in ("pdf", "png", "csv")}
    render(_figure(figure)["plot"], [tmp_path / "cube.nc"], _figure(figure).get("options", {}), outputs)
    assert all(p.stat().st_size > 0 for p in outputs.values())


def test_sgd_reaches_the_equilibrium_of_the_tanh_autoencoder_and_gd_does_not(tmp_path):
    cube = related_cube(_entry("equilibrium_autoencoder_tanh", 1000, train=128), log=lambda _: None)
    final = cube.isel(step=-1, seed=0)
    assert float(final["covariance_gap"].sel(variant="sgd")) < float(final["covariance_gap"].sel(variant="gd")) - 0.1
    # The imbalanced initialization's charge ||U||^2 - ||W||^2 < 0: SGD's noise drives it up to near balance.
    charge = cube["noether_charge"].isel(seed=0)
    assert float(charge.sel(variant="sgd").isel(step=-1)) > 0.5 * float(charge.sel(variant="sgd").isel(step=0))
    _render(tmp_path, cube, "noise_equilibrium_autoencoder")


def test_the_activations_figure_renders_and_sgd_balances_better(tmp_path):
    spec = _entry("equilibrium_autoencoder_activations", 600, train=64)
    spec["variants"] = {k: v for k, v in spec["variants"].items() if k.startswith(("relu", "swish"))}
    cube = related_cube(spec, log=lambda _: None)
    gap = cube["noise_gap"].isel(step=-1, seed=0)
    for name in ("relu", "swish"):
        assert float(gap.sel(variant=f"{name}_sgd")) < float(gap.sel(variant=f"{name}_gd"))
    _render(tmp_path, cube, "noise_equilibrium_activations")
    # relu keeps only the per-unit rescalings: SGD balances the diagonals (the per-unit charges' noise).
    table = pd.read_csv(tmp_path / "noise_equilibrium_activations.csv").set_index("variant")
    assert table.loc["relu_sgd", "diagonal_gap_median"] < 0.5 * table.loc["relu_gd", "diagonal_gap_median"]


def test_sgd_grows_the_scale_invariant_norm_and_gd_keeps_it(tmp_path):
    cube = related_cube(_entry("equilibrium_scale_invariant", 500), log=lambda _: None)
    norm = cube["param_norm"].isel(seed=0)
    growth = norm.isel(step=-1) / norm.isel(step=0) - 1
    assert float(growth.sel(variant="sgd")) > 0.1 and abs(float(growth.sel(variant="gd"))) < 0.01
    assert (
        cube["layer_norm"].sel(variant="sgd").isel(step=-1) > cube["layer_norm"].sel(variant="sgd").isel(step=0)
    ).all()
    _render(tmp_path, cube, "noise_equilibrium_scale_invariant")
