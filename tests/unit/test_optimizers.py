"""SignSGD and Adam: the trainer's steps against hand-written ones, their per-layer muP learning
rates, width-independent feature updates, packs and the theory's slopes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_setup
from torch.func import functional_call

from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.probes.recorder import last_features
from gammasweep.sweep.losses import mse
from gammasweep.sweep.models import build_model
from gammasweep.sweep.optimizers import Optimizer
from gammasweep.sweep.parameterization import centered_output, learning_rate, update_scales
from gammasweep.sweep.train import Members, train
from gammasweep.theory.toy import divergence_slopes

QUIET = {"log": lambda message: None}


def test_sign_based_learning_rates_follow_mup_per_layer():
    mlp = build_model({"name": "mlp", "width": 32, "depth": 3}, (8, 8, 1), 10, seeds=[0])
    scales = update_scales(mlp, "adam")
    assert scales["hidden.0.weight"] == pytest.approx(1 / math.sqrt(64))  # 1 / (64^-1/2 x 64): the input layer
    assert scales["hidden.1.weight"] == pytest.approx(1 / math.sqrt(32))  # a hidden layer: 1 / sqrt(N)
    assert scales["readout.weight"] == pytest.approx(1.0)  # the muP readout: 1 / (N^-1 x N)
    # a bias sits inside its layer's multiplier: 1 / multiplier moves the pre-activation by eta
    assert scales["hidden.0.bias"] == pytest.approx(8.0) and scales["hidden.1.bias"] == pytest.approx(math.sqrt(32))
    assert scales["readout.bias"] == pytest.approx(32.0)
    assert set(update_scales(mlp, "sgd").values()) == {1.0}
    cnn = build_model({"name": "cnn", "width": 4, "padding": 1}, (8, 8, 1), 10, seeds=[0])
    assert update_scales(cnn, "signsgd")["conv2.weight"] == pytest.approx(1 / (9 * math.sqrt(4)))
    assert learning_rate(32, 0.5, "sgd") == 16.0 and learning_rate(32, 0.5, "adam") == 0.5


def _by_hand(setup, seed: int, gamma: float, eta: float, stream: OnlineStream, test_set, optimizer: Optimizer) -> float:
    """The test loss after ``setup.steps`` updates written out from the optimizers' formulas."""
    net = build_model(setup.model, (8, 8, 1), 10, seeds=[seed]).double()
    frozen = build_model(setup.model, (8, 8, 1), 10, seeds=[seed]).double()
    scales = update_scales(net, optimizer.name)
    m = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for t in range(setup.steps):
        images, labels = stream.batch(t)
        x = normalize(images, setup.mean, setup.std, torch.float64)
        net.zero_grad()
        mse(centered_output(net(x), frozen(x), gamma), labels).sum().backward()
        with torch.no_grad():
            for name, p in net.named_parameters():
                g = p.grad
                if optimizer.name == "signsgd":
                    direction = torch.sign(g)
                else:
                    m[name] = 0.9 * m[name] + 0.1 * g
                    v[name] = 0.999 * v[name] + 0.001 * g * g
                    direction = (m[name] / (1 - 0.9 ** (t + 1))) / (
                        torch.sqrt(v[name] / (1 - 0.999 ** (t + 1))) + optimizer.eps
                    )
                p -= eta * scales[name] * direction
    with torch.no_grad():
        x_test = normalize(test_set[0], setup.mean, setup.std, torch.float64)
        return (
            10 * mse(centered_output(net(x_test), frozen(x_test), gamma), test_set[1])[0].item()
        )  # summed over classes


@pytest.mark.parametrize("name,steps", [("signsgd", 1), ("adam", 3)])
def test_the_trainer_steps_are_the_optimizers_formulas(digits_files, test_set, name, steps):
    optimizer = Optimizer(name=name)
    setup = make_setup(steps=steps, dtype=torch.float64, width=24, optimizer=optimizer.settings())
    stream = OnlineStream(digits_files[0], batch_size=16, steps=steps, data_seed=0)
    curves = train(setup, Members([2, 2], [1.0, 10.0], [1e-2, 3e-2]), stream, *test_set, **QUIET)
    for row, (gamma, eta) in enumerate(((1.0, 1e-2), (10.0, 3e-2))):
        expected = _by_hand(setup, 2, gamma, eta, stream, test_set, optimizer)
        assert curves.test_loss[row, -1] == pytest.approx(expected, rel=1e-10)
        assert curves.test_loss[row, -1] < curves.test_loss[row, 0]


@pytest.mark.parametrize("name", ["signsgd", "adam"])
def test_sign_based_feature_updates_are_width_independent(name):
    """One update with eta x update_scales moves the last hidden features by the same amount as
    the width quadruples (Adam's first step is SignSGD's: m / sqrt(v) = sign(g))."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8, 8, 1, dtype=torch.float64), torch.randint(0, 10, (64,))
    change, optimizer = [], Optimizer(name=name)
    for width in (64, 256, 1024):
        net = build_model({"name": "mlp", "width": width, "depth": 3}, (8, 8, 1), 10, seeds=[0]).double()
        params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
        before, g0 = net.features(x).detach(), net(x).detach()
        loss = mse(centered_output(functional_call(net, params, (x,)), g0, 1.0), y).sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            optimizer.apply(
                params,
                grads,
                optimizer.state(params),
                torch.tensor([-0.05], dtype=torch.float64),
                update_scales(net, name),
                t=0,
            )
            change.append((last_features(net, params, x) - before).pow(2).mean().sqrt().item())
    assert np.all(np.abs(np.array(change) / change[0] - 1) < 0.3), change
    assert change[0] > 1e-3


def test_an_adam_pack_trains_each_member_as_alone(digits_files, test_set):
    """Adam's moments are per member: a pack equals its members trained alone, through compaction --
    to 2e-8, not float64's 1e-12 as for SGD: m / (sqrt(v) + eps) scales a gradient entry of ~0 up to
    ~1, so the packs' different rounding of tiny gradients shows (the most, 1.1e-8, in the biases, whose
    gradients the multiplier makes small)."""
    members = Members(seeds=[0, 1, 0, 1], gammas=[1.0, 0.1, 10.0, 1.0], etas=[1e-2, 1e-3, 3e-2, 1e6])
    setup = make_setup(steps=30, dtype=torch.float64, optimizer={"name": "adam"})
    stream = OnlineStream(digits_files[0], 16, 30, 0)
    pack = train(setup, members, stream, *test_set, check_every=4, **QUIET)
    assert pack.diverged.tolist() == [False, False, False, True]
    for k in range(3):
        alone = train(
            setup, Members([members.seeds[k]], [members.gammas[k]], [members.etas[k]]), stream, *test_set, **QUIET
        )
        np.testing.assert_allclose(pack.test_loss[k], alone.test_loss[0], rtol=2e-8)
        np.testing.assert_allclose(pack.train_loss[k], alone.train_loss[0], rtol=2e-8)


def test_theory_slopes_of_the_divergence_edge():
    assert divergence_slopes("mse", "sgd", 3) == (2.0, pytest.approx(2 / 3))
    assert divergence_slopes("cross_entropy", "sgd", 3) == (1.0, pytest.approx(2 / 3))
    assert divergence_slopes("mse", "signsgd", 4) == (1.0, 0.25) == divergence_slopes("mse", "adam", 4)
    assert np.isnan(divergence_slopes("mse", "sgd", None)[1])
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        Optimizer(name="lion")
