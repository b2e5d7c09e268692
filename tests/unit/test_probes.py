"""Probes against known answers: exact Hessians and Jacobians of small networks, matrices with known
spectra, closed-form alignments, the lazy regime's scalings; and probes leave the trajectory untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_setup
from torch.func import functional_call

from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.probes.linalg import (
    GaussNewton,
    Hessian,
    hutchinson_trace,
    lanczos_quadrature,
    start_vectors,
    top_hessian_eigenvalue,
)
from gammasweep.probes.recorder import (
    PROBES,
    FeatureSparsityProbe,
    Network,
    ProbeBatch,
    ProbeRecorder,
    label_kernel,
    tangent_kernel,
)
from gammasweep.related.sparsity import feature_sparsity
from gammasweep.results.kernels import centered_alignment
from gammasweep.sweep.losses import LOSSES
from gammasweep.sweep.models import build_model
from gammasweep.sweep.parameterization import batch_statistics, centered_output, running_statistics
from gammasweep.sweep.train import Members, train

QUIET = {"log": lambda message: None}
SHARPNESS = {"sharpness": {"examples": 64, "iterations": 30}}
EVERY_PROBE = {
    "sharpness": {"examples": 32, "iterations": 5},
    "spectrum": {"examples": 32, "iterations": 6, "vectors": 2},
    "alignment": {"examples": 16},
    "outputs": {"examples": 397},
    "representation": {"examples": 16},
    "weight_movement": {},
    "feature_sparsity": {"examples": 16},
    "readout_sharpness": {"examples": 32, "iterations": 5},
    "hessian_trace": {"examples": 32, "vectors": 3},
    "ntk_spectrum": {"examples": 16, "iterations": 6, "modes": 3},
}


def _quadratic_rows(spectra: list[list[float]], seed: int = 0) -> tuple[torch.Tensor, dict, object]:
    """Rows r with loss_r(w) = w^T A_r w / 2, A_r = Q diag(spectra[r]) Q^T: (A, weights, loss_of)."""
    gen = torch.Generator().manual_seed(seed)
    mats = []
    for spectrum in spectra:
        q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=gen, dtype=torch.float64))
        mats.append(q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T)
    a = torch.stack(mats)
    weights = {"w": torch.randn(len(spectra), len(spectra[0]), generator=gen, dtype=torch.float64)}
    return a, weights, lambda w: 0.5 * torch.einsum("ri,rij,rj->r", w["w"], a, w["w"])


def test_power_iteration_finds_the_top_eigenvalue_of_known_quadratics():
    """Rows with different spectra are solved together, and the answer is the top eigenvalue, not the
    largest in magnitude."""
    _, weights, loss_of = _quadratic_rows([[5.0, 1.0, 0.5, -2.0], [0.1, 3.0, 2.9, 0.2], [-7.0, 1.0, 2.0, 3.0]])
    top = top_hessian_eigenvalue(loss_of, weights, 300, [1, 2, 3])
    # The third row's largest-magnitude eigenvalue is -7 (a saddle): the shifted second run finds 3.
    torch.testing.assert_close(top, torch.tensor([5.0, 3.0, 3.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_lanczos_quadrature_is_exact_for_low_moments_and_finds_the_spectrum():
    spectra = [[4.0, 2.5, 1.0, 0.5, -1.0, -3.0, 0.1, 6.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]]
    a, weights, loss_of = _quadratic_rows(spectra)
    with torch.enable_grad():
        hessian = Hessian(loss_of, weights)
        start = start_vectors(hessian.params, [7, 8])
        nodes, masses = lanczos_quadrature(hessian, start, 3)
        full_nodes, full_masses = lanczos_quadrature(hessian, start, 12)  # more steps than dimensions
    v = start[0]
    for k in range(6):  # Gauss quadrature with 3 nodes integrates polynomials of degree < 6 exactly
        moments = torch.einsum("ri,rij,rj->r", v, torch.linalg.matrix_power(a, k), v)
        torch.testing.assert_close((masses * nodes**k).sum(1), moments, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(masses.sum(1), torch.ones(2, dtype=torch.float64))
    # The Krylov space is exhausted after 8 steps: the 8 nodes are the eigenvalues, the rest NaN with weight 0.
    for r, spectrum in enumerate(spectra):
        np.testing.assert_allclose(full_nodes[r, :8].numpy(), sorted(spectrum), atol=1e-9)
        assert torch.isnan(full_nodes[r, 8:]).all() and (full_masses[r, 8:] == 0).all()


def test_lanczos_quadrature_of_a_blown_up_row_is_nan_and_the_other_rows_are_measured():
    """Without a loss cap a cell may be probed at a catapult's peak, where its Hessian products overflow:
    that row's spectrum is NaN (weight 0), not an eigh failure that ends the job, and the others' is exact."""
    spectra = [[4.0, 2.5, 1.0, 0.5], [1.0, 2.0, 3.0, 4.0]]
    _, weights, loss_of = _quadratic_rows(spectra)
    with torch.enable_grad():
        exact = Hessian(loss_of, weights)
        start = start_vectors(exact.params, [7, 8])

        def overflowing(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.cat([torch.full_like(p[:1], math.inf), p[1:]]) for p in exact(vectors)]

        nodes, masses = lanczos_quadrature(overflowing, start, 6)
    assert torch.isnan(nodes[0]).all() and (masses[0] == 0).all()
    np.testing.assert_allclose(nodes[1, :4].numpy(), spectra[1], atol=1e-9)


def _member_loss(setup, seeds: list[int], gammas: list[float], x: torch.Tensor, y: torch.Tensor):
    """(theta_0 per row, stacked centered outputs (rows, P, C), stacked loss function) of a small MLP;
    x, y: a fixed batch."""
    model = build_model(setup.model, setup.input_shape, setup.num_classes, sorted(set(seeds))).to(torch.float64)
    init = {k: v.detach() for k, v in model.named_parameters()}
    rows = torch.tensor([sorted(set(seeds)).index(s) for s in seeds])
    gamma = torch.tensor(gammas, dtype=torch.float64).view(-1, 1, 1)
    with torch.no_grad():
        g0 = functional_call(model, init, (x,))

    def outputs_of(w: dict) -> torch.Tensor:
        return centered_output(functional_call(model, w, (x,)), g0[rows], gamma)

    return {k: v[rows] for k, v in init.items()}, outputs_of, lambda w: LOSSES[setup.loss](outputs_of(w), y)


def _row_function(weights: dict, row: int, of_stacked):
    """theta (flat, one row's weights) -> of_stacked(the stacked weights with that row replaced)."""
    names, shapes = list(weights), [v.shape[1:] for v in weights.values()]

    def function(theta: torch.Tensor) -> torch.Tensor:
        parts, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            stacked = weights[name].clone()
            stacked[row] = theta[offset : offset + size].view(shape)
            parts[name], offset = stacked, offset + size
        return of_stacked(parts)

    return function, torch.cat([v[row].flatten() for v in weights.values()])


def _moved(weights: dict, scale: float = 0.3) -> dict:
    """Weights moved off theta_0 (where the centered output is 0), so that the residual term counts too."""
    gen = torch.Generator().manual_seed(1)
    return {k: v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in weights.items()}


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_sharpness_and_spectrum_match_the_exact_hessian_of_a_small_network(test_set, loss):
    setup = make_setup(loss=loss, width=6, depth=2, dtype=torch.float64)
    x = normalize(test_set[0][:32], setup.mean, setup.std, torch.float64)
    y = test_set[1][:32]
    weights, _, loss_of = _member_loss(setup, [0, 1], [0.5, 2.0], x, y)
    weights = _moved(weights)
    top = top_hessian_eigenvalue(loss_of, weights, 500, [0, 1])
    with torch.enable_grad():
        hessian = Hessian(loss_of, weights)
        nodes, _ = lanczos_quadrature(hessian, start_vectors(hessian.params, [3, 4]), 60)
    for row in range(2):
        row_loss, flat = _row_function(weights, row, lambda w, row=row: loss_of(w)[row])
        eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(row_loss, flat))
        assert top[row].item() == pytest.approx(eigenvalues.max().item(), rel=1e-6)
        ritz = nodes[row][torch.isfinite(nodes[row])].sort(descending=True).values
        np.testing.assert_allclose(ritz[:3].numpy(), eigenvalues.sort(descending=True).values[:3].numpy(), rtol=1e-6)
        assert ritz.min() >= eigenvalues.min() - 1e-9  # Ritz values lie inside the spectrum


def test_readout_hessian_trace_and_ntk_spectrum_match_exact_matrices_of_a_small_network(test_set):
    """The readout-only sharpness is the top eigenvalue of the exact Hessian's readout block; the
    Gauss-Newton products are 2 / (P C) J^T J of the brute-force Jacobian, so Lanczos on them finds
    the NTK's top eigenvalues; Hutchinson's trace is within its own standard error of the exact trace."""
    setup = make_setup(loss="mse", width=6, depth=2, dtype=torch.float64)
    x = normalize(test_set[0][:16], setup.mean, setup.std, torch.float64)
    weights, outputs_of, loss_of = _member_loss(setup, [0, 1], [0.5, 2.0], x, test_set[1][:16])
    weights = _moved(weights)
    readout = {k: v for k, v in weights.items() if k.startswith("readout.")}
    fixed = {k: v for k, v in weights.items() if k not in readout}
    readout_top = top_hessian_eigenvalue(lambda w: loss_of({**fixed, **w}), readout, 300, [0, 1])
    vectors = 400
    with torch.enable_grad():
        ntk = GaussNewton(outputs_of, weights)
        nodes, _ = lanczos_quadrature(ntk, start_vectors(ntk.params, [5, 6]), 40)
        trace = hutchinson_trace(Hessian(loss_of, weights), [7, 8], vectors)
    for row in range(2):
        row_readout_loss, flat_readout = _row_function(readout, row, lambda w, row=row: loss_of({**fixed, **w})[row])
        block = torch.autograd.functional.hessian(row_readout_loss, flat_readout)
        assert readout_top[row].item() == pytest.approx(torch.linalg.eigvalsh(block).max().item(), rel=1e-6)
        row_outputs, flat = _row_function(weights, row, lambda w, row=row: outputs_of(w)[row])
        jacobian = torch.autograd.functional.jacobian(row_outputs, flat).flatten(0, 1)  # (P C, parameters)
        ntk_eigenvalues = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0) * 2 / jacobian.shape[0]
        ritz = nodes[row][torch.isfinite(nodes[row])].sort(descending=True).values
        np.testing.assert_allclose(ritz[:3].numpy(), ntk_eigenvalues[:3].numpy(), rtol=1e-6)
        row_loss, _ = _row_function(weights, row, lambda w, row=row: loss_of(w)[row])
        hessian = torch.autograd.functional.hessian(row_loss, flat)
        off_diagonal = (hessian**2).sum() - (hessian.diagonal() ** 2).sum()
        standard_error = math.sqrt(2 * off_diagonal.item() / vectors)
        assert abs(trace[row].item() - hessian.trace().item()) < 4 * standard_error
        assert standard_error < 0.5 * abs(hessian.trace().item())  # the check has teeth
    assert not torch.allclose(readout_top[0], readout_top[1])  # rows are measured apart


def test_the_ntk_spectrum_of_a_batch_norm_model_is_that_of_its_batch_function(test_set):
    """ResNet-18 normalizes on batch statistics: the Gauss-Newton products differentiate the whole
    batch's outputs, so Lanczos finds the eigenvalues of J J^T for the Jacobian of the batch function."""
    setup = make_setup(model={"name": "resnet18", "width": 2}, dtype=torch.float64)
    model = build_model(setup.model, setup.input_shape, setup.num_classes, [0]).to(torch.float64)
    weights = {k: v.detach() for k, v in model.named_parameters()}
    x = normalize(test_set[0][:4], setup.mean, setup.std, torch.float64)
    with torch.enable_grad():
        ntk = GaussNewton(lambda w: functional_call(model, w, (x,)), weights)
        nodes, _ = lanczos_quadrature(ntk, start_vectors(ntk.params, [3]), 40)  # 40 = P C: the whole range
    outputs, flat = _row_function(weights, 0, lambda w: functional_call(model, w, (x,))[0])
    jacobian = torch.autograd.functional.jacobian(outputs, flat).flatten(0, 1)  # (P C, parameters)
    exact = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0) * 2 / jacobian.shape[0]
    ritz = nodes[0][torch.isfinite(nodes[0])].sort(descending=True).values
    np.testing.assert_allclose(ritz[:3].numpy(), exact[:3].numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "mlp", "width": 5, "depth": 3},
        {"name": "cnn", "width": 2, "padding": 1},
        {"name": "vit", "width": 4, "depth": 1, "heads": 2, "patch": 4},
    ],
    ids=lambda m: m["name"],
)
def test_tangent_kernel_matches_the_brute_force_jacobian(test_set, model):
    setup = make_setup(model=model, dtype=torch.float64)
    net = build_model(model, setup.input_shape, setup.num_classes, [0, 1]).to(torch.float64)
    weights = _moved({k: v.detach() for k, v in net.named_parameters()})
    x = normalize(test_set[0][:6], setup.mean, setup.std, torch.float64)
    kernels = tangent_kernel(net, weights, x)
    for row in range(2):
        outputs, flat = _row_function(weights, row, lambda w, row=row: functional_call(net, w, (x,))[row])
        jacobian = torch.autograd.functional.jacobian(outputs, flat)  # (P, C, parameters)
        torch.testing.assert_close(
            kernels[row], torch.einsum("pcf,qcf->pq", jacobian, jacobian), rtol=1e-10, atol=1e-10
        )


def test_centered_alignment_known_answers():
    """With c balanced classes of m = P / c examples, the identity kernel's alignment with Y Y^T is
    sqrt((c - 1) / (P - 1)); a kernel aligns perfectly with any multiple of itself; between linear
    kernels it is linear CKA, ||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||)."""
    labels = torch.arange(12) % 3
    target = label_kernel(labels, 3, torch.float64)
    eye = torch.eye(12, dtype=torch.float64)
    assert centered_alignment(eye, target).item() == pytest.approx(math.sqrt(2 / 11), rel=1e-12)
    assert centered_alignment(5.0 * target + 2.0, target).item() == pytest.approx(
        1.0, rel=1e-12
    )  # + constant: centered away
    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(12, 7, generator=gen, dtype=torch.float64),
        torch.randn(12, 4, generator=gen, dtype=torch.float64),
    )
    ac, bc = a - a.mean(0), b - b.mean(0)
    cka = (bc.T @ ac).norm() ** 2 / ((ac.T @ ac).norm() * (bc.T @ bc).norm())
    batched = centered_alignment(torch.stack([a @ a.T, a @ a.T]), torch.stack([b @ b.T, a @ a.T]))
    torch.testing.assert_close(batched, torch.stack([cka, torch.tensor(1.0, dtype=torch.float64)]))
    np.testing.assert_allclose(centered_alignment((a @ a.T).numpy(), (b @ b.T).numpy()), cka.item())  # numpy alike
    assert torch.isnan(centered_alignment(torch.ones(12, 12, dtype=torch.float64), target))


def test_probes_leave_the_trajectory_untouched_and_are_recorded_per_member(digits_files, test_set):
    members = Members(seeds=[0, 1, 0], gammas=[1.0, 0.1, 10.0], etas=[0.05, 1e8, 1.0])  # the second diverges
    stream = OnlineStream(digits_files[0], 16, 30, 0)
    plain = train(make_setup(steps=30), members, stream, *test_set, **QUIET)
    probed = train(make_setup(steps=30, probes=EVERY_PROBE), members, stream, *test_set, **QUIET)
    assert plain.probes == {}
    for field, values in plain.arrays().items():
        np.testing.assert_array_equal(values, probed.arrays()[field], err_msg=field)
    assert probed.diverged.tolist() == [False, True, False]
    records = probed.probes
    assert sorted(records) == [
        "feature_alignment",
        "feature_kernel",
        "feature_sparsity",
        "hessian_ritz_value",
        "hessian_ritz_weight",
        "hessian_trace",
        "ntk_alignment",
        "ntk_eigenvalue",
        "probe_output",
        "readout_sharpness",
        "sharpness",
        "weight_movement",
    ]
    assert (
        records["ntk_eigenvalue"].dims == ("member", "eval_step", "ntk_mode")
        and records["ntk_eigenvalue"].shape[2] == 3
    )
    assert records["feature_sparsity"]["stage"].values.tolist() == ["hidden.1", "readout"]
    assert records["weight_movement"].dims == ("member", "eval_step", "layer")
    assert records["weight_movement"]["layer"].values.tolist() == ["hidden.0", "hidden.1", "readout"]
    assert records["hessian_ritz_value"].dims == ("member", "eval_step", "start", "ritz")
    assert records["hessian_ritz_value"].shape[2:] == (2, 6) and records["probe_output"].dims == (
        "member",
        "output_example",
        "class",
    )
    after = probed.eval_step > probed.diverged_step[1]  # measured like the test loss: up to its diverged step
    for name, record in records.items():
        alive = record.isel(member=[0, 2])
        if name == "hessian_ritz_value":
            alive = alive.where(records["hessian_ritz_weight"].isel(member=[0, 2]) > 0, 0.0)
        assert np.isfinite(alive.values).all(), name
        diverged = record.isel(member=1)
        if "eval_step" in record.dims:
            assert np.isnan(diverged.isel(eval_step=np.flatnonzero(after)).values).all(), name
            assert np.isfinite(diverged.isel(eval_step=np.flatnonzero(~after)).values).any(), name
        else:  # final-only records: nothing for a member that diverged before the end
            assert np.isnan(diverged.values).all(), name
    np.testing.assert_allclose(
        records["hessian_ritz_weight"].sum(["start", "ritz"]).isel(member=[0, 2]).values, 1.0, rtol=1e-5
    )
    assert (records["weight_movement"].isel(eval_step=0).values[[0, 2]] == 0).all()  # at init, exactly
    # The outputs probe saw the whole test set: its squared error against the labels, summed over the
    # classes and averaged over the images, is the final test loss.
    f, onehot = records["probe_output"].values, np.eye(10)[test_set[1].numpy()]
    np.testing.assert_allclose(((f - onehot) ** 2).sum(2).mean(1)[[0, 2]], probed.test_loss[[0, 2], -1], rtol=1e-5)
    # The final feature kernel's alignment with the labels is the alignment probe's last value.
    kernel = torch.from_numpy(records["feature_kernel"].values[[0, 2]])
    final = centered_alignment(kernel, label_kernel(test_set[1][:16], 10, torch.float64))
    np.testing.assert_allclose(final.numpy(), records["feature_alignment"].values[[0, 2], -1], rtol=1e-4)


def test_lazy_regime_scalings_at_init_and_after_training(digits_files, test_set):
    """At theta_0 the centered output is 0, so the MSE Hessian is J^T J / gamma^2 (Gauss-Newton) plus a
    residual term ~ 1/gamma: for gamma << 1 the sharpness grows as gamma^-2 (the paper's lazy scaling).
    With eta ~ gamma^2 the function-space dynamics of lazy networks do not depend on gamma, so the
    weights move ~ gamma: the relative weight movement falls by 10x per decade of gamma."""
    gammas = [1e-3, 1e-2, 1e-1]
    members = Members(seeds=[0] * 3, gammas=gammas, etas=[0.5 * g**2 for g in gammas])
    probes = SHARPNESS | {
        "weight_movement": {},
        "ntk_spectrum": {"examples": 64, "iterations": 30, "modes": 2},
        "readout_sharpness": {"examples": 64, "iterations": 30},
    }
    curves = train(
        make_setup(steps=40, dtype=torch.float64, probes=probes),
        members,
        OnlineStream(digits_files[0], 16, 40, 0),
        *test_set,
        **QUIET,
    )
    assert curves.test_loss[0, -1] < 0.9 * curves.test_loss[0, 0]  # it learns
    slope = lambda values: np.diff(np.log10(values)) / np.diff(np.log10(gammas))  # noqa: E731
    sharpness = curves.probes["sharpness"].values
    np.testing.assert_allclose(slope(sharpness[:, 0]), -2.0, atol=0.05)
    # Lazy: the Hessian is its Gauss-Newton part, whose top eigenvalue is the NTK's (as 2/(P C) J^T J),
    # and the readout block is a principal submatrix (Cauchy interlacing: at most the whole top).
    ntk_top = curves.probes["ntk_eigenvalue"].values[..., 0]
    np.testing.assert_allclose(ntk_top[0], sharpness[0], rtol=0.01)
    readout = curves.probes["readout_sharpness"].values
    assert (readout <= sharpness * 1.001).all() and (readout > 0.01 * sharpness).all()
    movement = curves.probes["weight_movement"].isel(eval_step=-1).values  # (members, layers)
    for layer in range(movement.shape[1]):
        np.testing.assert_allclose(slope(movement[:, layer]), 1.0, atol=0.05)


def test_the_noether_charge_moves_only_at_second_order_in_the_step(digits_files, test_set):
    """One SGD step moves Q = |W_l|^2 + |b_l|^2 - |W_l+1|^2 by exactly lr^2 (|g_Wl|^2 + |g_bl|^2 - |g_Wl+1|^2):
    the first-order term -2 lr (<W_l, g_Wl> + <b_l, g_bl> - <W_l+1, g_Wl+1>) vanishes by the symmetry."""
    width, gamma, eta = 16, 1.0, 0.05
    setup = make_setup(steps=1, dtype=torch.float64, width=width, probes={"noether_charge": {}})
    stream = OnlineStream(digits_files[0], 16, 1, 0)
    charge = train(setup, Members([3], [gamma], [eta]), stream, *test_set, **QUIET).probes["noether_charge"]
    assert charge["layer_pair"].values.tolist() == ["hidden.0|hidden.1", "hidden.1|readout"]
    net, frozen = (build_model(setup.model, (8, 8, 1), 10, seeds=[3]).double() for _ in range(2))
    images, labels = stream.batch(0)
    x = normalize(images, setup.mean, setup.std, torch.float64)
    LOSSES["mse"](centered_output(net(x), frozen(x), gamma), labels).sum().backward()
    params, lr = dict(net.named_parameters()), width * eta
    sq = lambda name: params[name].grad.pow(2).sum().item()  # noqa: E731
    dot = lambda name: (params[name] * params[name].grad).sum().item()  # noqa: E731
    expected = [
        lr**2 * (sq("hidden.0.weight") + sq("hidden.0.bias") - sq("hidden.1.weight")),
        lr**2 * (sq("hidden.1.weight") + sq("hidden.1.bias") - sq("readout.weight")),
    ]
    np.testing.assert_allclose(charge.values[0, 1] - charge.values[0, 0], expected, rtol=1e-6)
    first_order = 2 * lr * abs(dot("hidden.0.weight") + dot("hidden.0.bias"))
    assert first_order > 100 * abs(expected[0])  # each layer's own term is large; they cancel
    at_init = params["hidden.0.weight"].pow(2).sum() - params["hidden.1.weight"].pow(2).sum()  # biases start at 0
    assert charge.values[0, 0, 0] == pytest.approx(at_init.item(), rel=1e-12)


@pytest.mark.parametrize(
    "spec", [{"name": "mlp", "width": 24, "depth": 3}, {"name": "cnn", "width": 3, "padding": 1}], ids=["mlp", "cnn"]
)
def test_feature_sparsity_is_measured_per_stage_on_each_members_own_features(spec):
    """The probe's value for member k and stage s is sparsity.feature_sparsity of that member's
    post-ReLU features entering the stage: hidden units as units for an MLP, channels for a
    convolution (each image position a sample)."""
    model = build_model(spec, (8, 8, 1), 10, seeds=[0, 1]).double()
    weights = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(12, 8, 8, 1, dtype=torch.float64)
    net = Network(model=model, loss=LOSSES["mse"], centered=None, initial=None, initial_output=None, lr_unit=1.0)
    values = FeatureSparsityProbe(threshold=0.9).measure(net, ProbeBatch(x, None, None), slice(0, 2), weights, [0, 1])
    values = values["feature_sparsity"].numpy()
    assert values.shape == (2, len(model.feature_stages))
    with torch.no_grad():
        if spec["name"] == "mlp":
            first = torch.relu(model.hidden[0](x.flatten(1)))  # (K, B, N): the input of hidden.1
            expected = [first, model.features(x)]
        else:
            conv = torch.nn.functional.avg_pool2d(torch.relu(model.conv1(x.permute(0, 3, 1, 2))), 2)  # (B, K*C, 4, 4)
            channels = conv.view(12, 2, 3, 4, 4).permute(1, 0, 3, 4, 2).reshape(2, 12 * 16, 3)
            expected = [channels, model.features(x)]
    for k in range(2):
        np.testing.assert_allclose(values[k], [feature_sparsity(h[k].numpy(), 0.9) for h in expected], rtol=1e-12)
    assert (0 < values).all() and (values < 1).all() and not np.allclose(values[0], values[1])


@pytest.mark.parametrize(
    "model",
    [{"name": "resnet18", "width": 2}, {"name": "vit", "width": 8, "depth": 1, "heads": 2, "patch": 4}],
    ids=lambda m: m["name"],
)
def test_every_probe_runs_on_resnet18_and_the_vit_but_the_ntk_refuses_batch_norm(digits_files, test_set, model):
    """Through the trainer on 8 x 8 digits, every probe records finite values for every member of the
    ViT (its LayerNorm is per example) and every probe but the alignment for ResNet-18, whose NTK
    raises: BatchNorm makes an example's output depend on its batch, so per-example Jacobians are not
    its NTK (docs/models.md). The NTK spectrum, from Jacobian products of the batch function, runs.
    The probes leave BatchNorm's running statistics untouched: the test loss after the step, on those
    statistics, is the one of the run without probes."""
    members, stream = (
        Members(seeds=[0, 1], gammas=[1.0, 10.0], etas=[0.05, 0.5]),
        OnlineStream(digits_files[0], 16, 1, 0),
    )
    probes = {
        **EVERY_PROBE,
        "sharpness": {"examples": 8, "iterations": 2},  # Hessians through 20 BatchNorms cost
        "spectrum": {"examples": 8, "iterations": 3, "vectors": 1},
        "readout_sharpness": {"examples": 8, "iterations": 2},
        "hessian_trace": {"examples": 8, "vectors": 1},
        "ntk_spectrum": {"examples": 8, "iterations": 3, "modes": 2},
    }
    if model["name"] == "resnet18":
        with pytest.raises(ValueError, match="BatchNorm"):
            train(
                make_setup(steps=1, model=model, probes={"alignment": {"examples": 8}}),
                members,
                stream,
                *test_set,
                **QUIET,
            )
        del probes["alignment"]
    curves = train(make_setup(steps=1, model=model, probes=probes), members, stream, *test_set, **QUIET)
    assert sorted(curves.probes) == sorted(r for name in probes for r in PROBES[name].records)
    for record, values in curves.probes.items():
        assert np.isfinite(values.values).all(), record
    plain = train(make_setup(steps=1, model=model), members, stream, *test_set, **QUIET)
    for field, values in plain.arrays().items():
        np.testing.assert_array_equal(values, curves.arrays()[field], err_msg=field)


def test_probes_see_resnet18_on_batch_statistics_and_never_update_the_running_ones(test_set):
    """In either mode of the model, a probe sees BatchNorm on its probe batch's statistics (the
    training objective's function: its outputs are the batch function's) and leaves every running
    statistic as it was, the rows' and theta_0's; the model's mode is restored."""
    setup = make_setup(model={"name": "resnet18", "width": 2}, dtype=torch.float64)
    model = build_model(setup.model, setup.input_shape, setup.num_classes, seeds=[0, 1]).double()
    init = {k: v.detach() for k, v in model.named_parameters()}
    x = normalize(test_set[0][:32], setup.mean, setup.std, torch.float64)
    model(x)  # a training pass: theta_0's running statistics (the model's buffers) leave their init
    stats = {k: v.clone() for k, v in running_statistics(model).items()}  # the rows', as the trainer's
    model(x[:16])  # theta_0's and the rows' differ

    def centered(rows: slice, weights: dict, x: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        return centered_output(
            functional_call(model, {**weights, **{k: v[rows] for k, v in stats.items()}}, (x,)), g0, 1.0
        )

    net = Network(model, LOSSES["mse"], centered, lambda rows: init, model, lr_unit=2.0)
    weights = {k: v.requires_grad_() for k, v in _moved(init).items()}
    running = {"rows": stats, "theta_0": dict(model.named_buffers())}
    before = {owner: {k: v.clone() for k, v in tensors.items()} for owner, tensors in running.items()}
    for training in (True, False):
        model.train(training)
        probes = {"outputs": {"examples": 16}, "sharpness": {"examples": 16, "iterations": 2}}
        recorder = ProbeRecorder(probes, net, x, test_set[1][:32], [0, 1], evals=1, num_classes=10)
        recorder.measure(0, 0, [(slice(0, 2), weights)], torch.arange(2), torch.ones(2, dtype=torch.bool))
        assert all(module.training == training for module in model.modules())
        for owner, tensors in running.items():
            assert all(torch.equal(v, before[owner][k]) for k, v in tensors.items()), owner
        with torch.no_grad(), batch_statistics(model):
            expected = centered(slice(0, 2), weights, x[:16], model(x[:16]))
        torch.testing.assert_close(recorder.records["probe_output"], expected, rtol=1e-12, atol=1e-12)
        assert torch.isfinite(recorder.records["sharpness"]).all()


def test_curvature_probes_read_a_fixed_training_batch_and_the_others_the_test_images(digits_files, test_set):
    """The edge of stability belongs to the training objective: the sharpness (and the other Hessian
    and NTK probes) is measured on the first images of the training pass, so two data seeds give two
    values at init; the alignment, on the test images, is the same for both. The batch is the pass's
    head in stream order."""
    probes = SHARPNESS | {"alignment": {"examples": 32}}
    at_init = {}
    for data_seed in (0, 1):
        stream = OnlineStream(digits_files[0], 16, 8, data_seed)
        curves = train(
            make_setup(steps=8, dtype=torch.float64, probes=probes),
            Members([0], [1.0], [0.01]),
            stream,
            *test_set,
            **QUIET,
        )
        at_init[data_seed] = {name: curves.probes[name].values[0, 0] for name in ("sharpness", "feature_alignment")}
        images, labels = stream.head(20)
        assert torch.equal(images[:16], stream.batch(0)[0]) and torch.equal(labels[16:], stream.batch(1)[1][:4])
    assert at_init[0]["sharpness"] != pytest.approx(at_init[1]["sharpness"], rel=1e-3)
    assert at_init[0]["feature_alignment"] == at_init[1]["feature_alignment"]
