"""Probes: the sharpness against exact Hessians and the lazy-regime scaling, and probes leave the
trajectory untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setup
from torch.func import functional_call

from gammasweep.data import OnlineStream, normalize
from gammasweep.losses import LOSSES
from gammasweep.models import build_model
from gammasweep.parameterization import centered_output
from gammasweep.probes import top_hessian_eigenvalue
from gammasweep.train import Members, train

QUIET = {"log": lambda message: None}
SHARPNESS = {"sharpness": {"examples": 64, "iterations": 30}}


def test_power_iteration_finds_the_top_eigenvalue_of_known_quadratics():
    """loss_r(w) = w^T A_r w / 2 has Hessian A_r; rows with different spectra are solved together, and
    the answer is the top eigenvalue, not the largest in magnitude."""
    gen = torch.Generator().manual_seed(0)
    spectra = [torch.tensor([5.0, 1.0, 0.5, -2.0]), torch.tensor([0.1, 3.0, 2.9, 0.2]), torch.tensor([-7.0, 1.0, 2.0, 3.0])]
    mats = []
    for spectrum in spectra:
        q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
        mats.append(q @ torch.diag(spectrum.double()) @ q.T)
    a = torch.stack(mats)  # (3, 4, 4)
    weights = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    top = top_hessian_eigenvalue(lambda w: 0.5 * torch.einsum("ri,rij,rj->r", w["w"], a, w["w"]), weights, 300, [1, 2, 3])
    # The third row's largest-magnitude eigenvalue is -7 (a saddle): the shifted second run finds 3.
    torch.testing.assert_close(top, torch.tensor([5.0, 3.0, 3.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)


def _member_loss(setup, seeds: list[int], gammas: list[float], x: torch.Tensor, y: torch.Tensor):
    """(model, theta_0, stacked loss function) of a small MLP; x, y: a fixed batch."""
    model = build_model(setup.model, setup.input_shape, setup.num_classes, sorted(set(seeds))).to(torch.float64)
    init = {k: v.detach() for k, v in model.named_parameters()}
    rows = torch.tensor([sorted(set(seeds)).index(s) for s in seeds])
    gamma = torch.tensor(gammas, dtype=torch.float64).view(-1, 1, 1)
    with torch.no_grad():
        g0 = functional_call(model, init, (x,))

    def loss_of(w: dict) -> torch.Tensor:
        return LOSSES[setup.loss](centered_output(functional_call(model, w, (x,)), g0[rows], gamma), y)
    return model, {k: v[rows] for k, v in init.items()}, loss_of


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_sharpness_matches_the_exact_hessian_of_a_small_network(test_set, loss):
    setup = make_setup(loss=loss, width=6, depth=2, dtype=torch.float64)
    x = normalize(test_set[0][:32], setup.mean, setup.std, torch.float64)
    y = test_set[1][:32]
    _, weights, loss_of = _member_loss(setup, [0, 1], [0.5, 2.0], x, y)
    # Move the weights off theta_0 (where the centered output is 0) so the residual term counts too.
    weights = {k: v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=v.dtype)
               for k, v in weights.items()}
    top = top_hessian_eigenvalue(loss_of, weights, 500, [0, 1])
    names, shapes = list(weights), [v.shape[1:] for v in weights.values()]
    for row in range(2):
        flat = torch.cat([v[row].flatten() for v in weights.values()])

        def row_loss(theta: torch.Tensor, row: int = row) -> torch.Tensor:
            parts, offset = {}, 0
            for name, shape in zip(names, shapes):
                size = int(np.prod(shape))
                stacked = weights[name].clone()
                stacked[row] = theta[offset:offset + size].view(shape)
                parts[name], offset = stacked, offset + size
            return loss_of(parts)[row]
        eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(row_loss, flat))
        assert top[row].item() == pytest.approx(eigenvalues.max().item(), rel=1e-6)


def test_probes_leave_the_trajectory_untouched_and_are_recorded_per_member(digits_files, test_set):
    members = Members(seeds=[0, 1, 0], gammas=[1.0, 0.1, 10.0], etas=[0.05, 1e8, 1.0])  # the second diverges
    stream = OnlineStream(digits_files[0], 16, 30, 0)
    plain = train(make_setup(steps=30), members, stream, *test_set, **QUIET)
    probed = train(make_setup(steps=30, probes=SHARPNESS), members, stream, *test_set, **QUIET)
    for field in vars(plain):
        if field != "sharpness":
            np.testing.assert_array_equal(getattr(plain, field), getattr(probed, field), err_msg=field)
    assert np.isnan(plain.sharpness).all()
    assert probed.diverged.tolist() == [False, True, False]
    assert np.isfinite(probed.sharpness[[0, 2]]).all() and (probed.sharpness[[0, 2]] > 0).all()
    after = probed.eval_step > probed.diverged_step[1]  # measured like the test loss: up to its diverged step
    assert np.isnan(probed.sharpness[1, after]).all() and np.isfinite(probed.sharpness[1, ~after]).all()


def test_sharpness_at_init_scales_as_gamma_to_the_minus_two_in_the_lazy_regime(digits_files, test_set):
    """At theta_0 the centered output is 0, so the MSE Hessian is J^T J / gamma^2 (Gauss-Newton) plus a
    residual term ~ 1/gamma: for gamma << 1 the sharpness grows as gamma^-2 (the paper's lazy scaling)."""
    gammas = [1e-3, 1e-2, 1e-1]
    members = Members(seeds=[0] * 3, gammas=gammas, etas=[1e-12] * 3)
    curves = train(make_setup(steps=1, dtype=torch.float64, probes=SHARPNESS), members,
                   OnlineStream(digits_files[0], 16, 1, 0), *test_set, **QUIET)
    at_init = curves.sharpness[:, 0]
    slopes = np.diff(np.log10(at_init)) / np.diff(np.log10(gammas))
    np.testing.assert_allclose(slopes, -2.0, atol=0.05)
