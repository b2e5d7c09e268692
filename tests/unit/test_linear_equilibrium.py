"""The noise equilibrium of two-layer linear nets (gammasweep.related.linear_equilibrium; Ziyin et al. 2024,
B-2, B-3, B-8, B-4): the batched metrics against gammasweep.related.noether and autograd, the GD / SGD
behaviour of the charge and the equilibrium gap, warm-up, and each figure."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from workflow_helpers import DEFAULT_CONFIG

from gammasweep.figures import render
from gammasweep.related import linear_equilibrium as le
from gammasweep.related.experiments import related_cube
from gammasweep.related.noether import equilibrium_gap, hessian_trace, noether_charge
from gammasweep.related.noether import noise_matrices as sample_noise_matrices
from gammasweep.results.cube import write_cube

CONFIG = DEFAULT_CONFIG


def _spec(name: str, steps: int, **settings) -> dict:
    """The default config's entry with fewer steps (and overridden settings)."""
    spec = copy.deepcopy(CONFIG["related"][name])
    spec.update(steps=steps, record_points=21)
    spec["settings"].update(settings)
    return spec


def _problem(seed: int = 0) -> le.LinearProblem:
    rng = np.random.default_rng(seed)
    return le.LinearProblem(
        le.rank_one_teacher(3, 4, 1.5, seed) + 0.3 * rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, 4), 0.7
    )


def _weights(runs: int = 3, width: int = 5) -> dict[str, torch.Tensor]:
    return le.initial_weights("xavier", 1.0, width, 4, 3, [torch.Generator().manual_seed(s) for s in range(runs)])


def test_exact_noise_matrices_match_a_large_sample_and_the_gap_matches_noether():
    problem, p = _problem(), _weights()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400_000, 4)) * np.sqrt(problem.input_variance)
    y = x @ problem.teacher.T + problem.noise_std * rng.standard_normal((400_000, 3))
    gamma_w, gamma_u = le.noise_matrices(p["u"], p["w"], problem)
    for r in range(3):
        u, w = p["u"][r].numpy(), p["w"][r].numpy()
        sample_w, sample_u = sample_noise_matrices(u, w, x, y)
        np.testing.assert_allclose(gamma_w[r].numpy(), sample_w, atol=0.03 * np.abs(sample_w).max())
        np.testing.assert_allclose(gamma_u[r].numpy(), sample_u, atol=0.03 * np.abs(sample_u).max())
        # Given the same matrices, the batched Delta and gap are noether's.
        delta, left = le.equilibrium_delta(
            p["u"][r : r + 1], p["w"][r : r + 1], torch.from_numpy(sample_w)[None], torch.from_numpy(sample_u)[None]
        )
        gap = torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(left)
        assert float(gap[0]) == pytest.approx(equilibrium_gap(u, w, x, y), rel=1e-10)


def test_hessian_trace_matches_noether_and_autograd():
    problem, p = _problem(2), _weights(2)
    batched = hessian_trace(p["u"], p["w"], torch.diag(torch.from_numpy(problem.input_variance)))  # torch, (R,)
    for r in range(2):
        u, w = p["u"][r], p["w"][r]
        assert float(batched[r]) == pytest.approx(
            hessian_trace(u.numpy(), w.numpy(), np.diag(problem.input_variance)), rel=1e-12
        )  # numpy, one run
        theta = torch.cat([u.flatten(), w.flatten()])

        def half_loss(flat: torch.Tensor, u: torch.Tensor = u, w: torch.Tensor = w) -> torch.Tensor:
            uu, ww = flat[: u.numel()].view(1, *u.shape), flat[u.numel() :].view(1, *w.shape)
            return 0.5 * le.expected_loss(uu, ww, problem)[0]

        exact = torch.autograd.functional.hessian(half_loss, theta).diagonal().sum()
        assert float(batched[r]) == pytest.approx(float(exact), rel=1e-10)


def test_gd_changes_the_charge_only_at_second_order_in_eta():
    """GD: C(t+1) - C(t) = eta^2 (||grad_U||^2 - ||grad_W||^2) exactly (the first order cancels by the
    symmetry), so over a fixed time eta * steps the drift of C halves with eta; SGD moves C far more."""
    problem = le.LinearProblem(np.eye(4), le.block_variances(4, 0.5), 1.0)
    settings = {**le.LINEAR_NET.DEFAULTS, "width": 6, "optimizer": "gd"}  # train draws this init from seed 0
    p = le.initial_weights("xavier", 1.0, 6, 4, 4, [torch.Generator().manual_seed(0)])
    u, w = (v.clone().requires_grad_() for v in (p["u"], p["w"]))
    grad_u, grad_w = torch.autograd.grad(le.expected_loss(u, w, problem).sum(), (u, w))
    eta = 0.01
    one = le.train(problem, settings, torch.full((1, 1), eta, dtype=torch.float64), [0], np.array([0, 1]), print)
    assert float(one["noether_charge"][0, 0]) == pytest.approx(noether_charge(p["u"][0].numpy(), p["w"][0].numpy()))
    step = float(one["noether_charge"][0, 1] - one["noether_charge"][0, 0])
    assert step == pytest.approx(eta**2 * float((grad_u**2).sum() - (grad_w**2).sum()), rel=1e-8)
    drift = {}
    for eta in (0.02, 0.01):
        steps = round(2.0 / eta)
        run = le.train(
            problem, settings, torch.full((1, steps), eta, dtype=torch.float64), [0], np.array([0, steps]), print
        )
        drift[eta] = abs(float(run["noether_charge"][0, 1] - run["noether_charge"][0, 0]))
    assert drift[0.01] == pytest.approx(drift[0.02] / 2, rel=0.1)
    sgd = le.train(
        problem,
        {**settings, "optimizer": "sgd", "batch_size": 1},
        torch.full((1, 200), 0.01, dtype=torch.float64),
        [0],
        np.array([0, 200]),
        print,
    )
    assert abs(float(sgd["noether_charge"][0, 1] - sgd["noether_charge"][0, 0])) > 10 * drift[0.01]


@pytest.fixture(scope="module")
def linear_cube():
    return related_cube(_spec("equilibrium_linear", 800), log=lambda _: None)


@pytest.fixture(scope="module")
def sweep_cube():
    spec = _spec("equilibrium_phi_sweep", 400, width=100)
    spec["variants"] = {
        k: v for k, v in spec["variants"].items() if k.endswith(("phi25", "phi100")) and not k.startswith("sgd_wd")
    }
    return related_cube(spec, log=lambda _: None)


@pytest.fixture(scope="module")
def warmup_cube():
    spec = _spec("equilibrium_warmup", 2000)  # a 1000-step warm-up already gets Kaiming past its sharp start
    spec["seeds"] = 2
    spec["variants"]["kaiming_warmup"]["warmup"]["steps"] = 1000
    return related_cube(spec, log=lambda _: None)


def test_sgd_reaches_the_noise_equilibrium_and_gd_keeps_its_imbalance(linear_cube):
    gap = linear_cube["equilibrium_gap"]
    start, end = gap.isel(step=0), gap.isel(step=-1)
    assert (end.sel(variant="sgd") < 0.25 * start.sel(variant="sgd")).all()
    assert (end.sel(variant="gd") > 0.5 * start.sel(variant="gd")).all()
    assert float(linear_cube["theory_gap"].isel(step=-1).sel(variant="sgd").max()) < 0.3
    loss = linear_cube["loss"].isel(step=-1)  # both fit: the difference is along the symmetry only
    assert float(loss.max()) < 1.1 * 30
    delta = np.abs(linear_cube["delta"].isel(step=-1))
    assert float(delta.sel(variant="sgd").median()) < 0.3 * float(delta.sel(variant="gd").median())
    spectra = linear_cube[["w_sigma_w_spectrum", "u_sigma_u_spectrum"]].sel(variant="sgd")
    np.testing.assert_allclose(spectra["w_sigma_w_spectrum"], spectra["u_sigma_u_spectrum"], rtol=0.3)


def test_norm_balance_follows_the_equilibrium_theory(sweep_cube):
    ratio = sweep_cube["norm_ratio"].isel(step=-1, seed=0)
    theory = sweep_cube["equilibrium_norm_ratio"].isel(seed=0)
    assert float(theory.sel(variant="sgd_phi25")) == pytest.approx(np.sqrt(0.25 * 1.75))
    assert float(ratio.sel(variant="sgd_phi25")) == pytest.approx(float(theory.sel(variant="sgd_phi25")), rel=0.15)
    assert float(ratio.sel(variant="sgd_phi100")) == pytest.approx(1.0, abs=0.1)
    for variant in ("gd_wd_phi25", "gd_wd_phi100"):
        assert float(ratio.sel(variant=variant)) == pytest.approx(1.0, abs=0.03)
    sharpness = sweep_cube["hessian_trace"].isel(step=-1, seed=0)
    assert float(sharpness.sel(variant="sgd_phi25")) < 0.95 * float(sharpness.sel(variant="gd_wd_phi25"))


def test_warm_up_lets_kaiming_init_train_at_the_large_step_size(warmup_cube):
    diverged = warmup_cube["diverged_step"]
    assert (diverged.sel(variant="kaiming") >= 0).all()
    assert (diverged.sel(variant=["kaiming_warmup", "xavier"]) < 0).all()
    trace = warmup_cube["hessian_trace"]
    start = trace.isel(step=0)
    assert float(start.sel(variant="kaiming").min()) > 5 * float(start.sel(variant="xavier").max())
    final = trace.isel(step=slice(-5, None)).median(["step", "seed"])  # noisy: the median of the last records
    assert float(final.sel(variant="kaiming_warmup")) == pytest.approx(float(final.sel(variant="xavier")), rel=0.5)


@pytest.mark.parametrize(
    "figure, cube",
    [
        ("noise_equilibrium_linear", "linear_cube"),
        ("noise_equilibrium_sweep", "sweep_cube"),
        ("noise_equilibrium_warmup", "warmup_cube"),
    ],
)
def test_each_figure_renders(figure, cube, request, tmp_path):
    path = tmp_path / "cube.nc"
    write_cube(request.getfixturevalue(cube), path)
    entry = CONFIG["figures"][figure]
    options = copy.deepcopy(entry.get("options", {}))
    if figure == "noise_equilibrium_sweep":  # the reduced cube holds two phi_x of SGD and GD + weight decay
        options["groups"] = {
            label: [v for v in variants if v.endswith(("phi25", "phi100"))]
            for label, variants in options["groups"].items()
            if not label.startswith("SGD +")
        }
    outputs = {fmt: tmp_path / f"{figure}.{fmt}" for fmt in ("pdf", "png", "csv")}
    render(entry["plot"], [path], options, outputs)
    assert all(p.stat().st_size > 0 for p in outputs.values())
