"""The paper's parameterization: centered output, muP scaling, 1/gamma output, lr = width * eta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setup

from gammasweep.data import OnlineStream, normalize
from gammasweep.losses import mse
from gammasweep.models import build_model
from gammasweep.parameterization import centered_output, learning_rate
from gammasweep.train import Members, train

SPEC = {"name": "mlp", "depth": 3}
EVERY_MODEL = [{"name": "mlp", "depth": 3, "width": 16}, {"name": "cnn", "width": 4}]


@pytest.mark.parametrize("spec", EVERY_MODEL, ids=lambda s: s["name"])
def test_centered_output_is_exactly_zero_at_init(spec):
    net, frozen = (build_model(spec, (8, 8, 1), 10, seeds=[3, 4]) for _ in range(2))
    x = torch.randn(50, 8, 8, 1)
    f = centered_output(net(x), frozen(x), 1e-5)
    assert f.shape == (2, 50, 10) and torch.equal(f, torch.zeros_like(f))


@pytest.mark.parametrize("spec", EVERY_MODEL, ids=lambda s: s["name"])
def test_a_stacked_member_is_the_single_network_of_its_seed(spec):
    stacked = build_model(spec, (8, 8, 1), 10, seeds=[7, 2, 7]).double()
    x = torch.randn(30, 8, 8, 1, dtype=torch.float64)
    for k, seed in enumerate([7, 2, 7]):
        alone = build_model(spec, (8, 8, 1), 10, seeds=[seed]).double()
        for (name, p), q in zip(stacked.named_parameters(), alone.parameters()):
            assert torch.equal(p[k], q[0]), name
        torch.testing.assert_close(stacked(x)[k], alone(x)[0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("spec,image", [(EVERY_MODEL[0], (8, 8, 1)), ({**EVERY_MODEL[1], "width": 32}, (4, 4, 3))],
                         ids=["mlp", "cnn"])
def test_mup_features_and_their_updates_are_width_independent_for_every_model(spec, image):
    """Last hidden features are O(1) at init and move O(1) after one step with lr = N * eta, as the
    width quadruples; the muP output at init shrinks like 1/sqrt(width)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, *image, dtype=torch.float64), torch.randint(0, 10, (64,))
    rms, change, out = [], [], []
    widths = [spec["width"] * 4 ** i for i in range(3)]
    for width in widths:
        net = build_model({**spec, "width": width}, image, 10, seeds=[0]).double()
        before, g0 = net.features(x).detach(), net(x).detach()
        mse(centered_output(net(x), g0, 1.0), y).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= learning_rate(width, 0.5) * p.grad
        rms.append(before.pow(2).mean().sqrt().item())
        change.append((net.features(x) - before).pow(2).mean().sqrt().item())
        out.append(g0.pow(2).mean().sqrt().item() * width ** 0.5)
    for values in (rms, change, out):
        assert np.all(np.abs(np.array(values) / values[0] - 1) < 0.5), (rms, change, out)
    assert 0.1 < rms[0] < 10 and change[0] > 1e-3


def test_same_seed_same_init_and_other_seed_other_init():
    a, b, c = (build_model({**SPEC, "width": 16}, (8, 8, 1), 10, seeds=[s]) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


def _hidden_stats(width: int, eta: float, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Preactivation RMS per hidden layer at init, output RMS at init, and the RMS change of the last
    hidden features after one SGD step (lr = width * eta, gamma = 1) on one batch, for one width."""
    torch.manual_seed(100)
    x, y = torch.randn(64, 784).reshape(64, 28, 28, 1), torch.randint(0, 10, (64,))
    net = build_model({**SPEC, "width": width}, (28, 28, 1), 10, seeds=[seed]).double()
    h, rms = x.double().flatten(1), []
    for layer in net.hidden:
        pre = layer(h)
        rms.append(pre.pow(2).mean().sqrt().item())
        h = torch.relu(pre)
    out_rms = net(x.double()).pow(2).mean().sqrt().item()
    before = net.features(x.double()).detach()
    frozen_out = net(x.double()).detach()
    loss = mse(centered_output(net(x.double()), frozen_out, 1.0), y).sum()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= learning_rate(width, eta) * p.grad
    change = (net.features(x.double()) - before).pow(2).mean().sqrt().item()
    return np.array(rms), out_rms, change


def test_mup_preactivations_and_feature_updates_are_width_independent():
    widths = [128, 512, 2048]
    stats = [_hidden_stats(w, eta=0.5) for w in widths]
    rms = np.array([s[0] for s in stats])
    # Preactivations O(1): every layer's RMS changes by less than 15 % over a 16x width range.
    assert np.all(np.abs(rms / rms[0] - 1) < 0.15), rms
    assert np.all((rms > 0.3) & (rms < 3)), rms
    # muP readout: output at init ~ 1/sqrt(N), so sqrt(N) * rms is constant.
    scaled = np.array([s[1] * np.sqrt(w) for s, w in zip(stats, widths)])
    assert np.all(np.abs(scaled / scaled[0] - 1) < 0.2), scaled
    # Feature learning: with lr = N * eta the features move by a width-independent amount.
    change = np.array([s[2] for s in stats])
    assert np.all(change > 0)
    assert np.all(np.abs(change / change[0] - 1) < 0.25), change


def test_output_scales_as_one_over_gamma():
    net = build_model({**SPEC, "width": 32}, (8, 8, 1), 10, seeds=[0])
    frozen = build_model({**SPEC, "width": 32}, (8, 8, 1), 10, seeds=[0])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(20, 8, 8, 1)
    outputs = {gamma: centered_output(net(x), frozen(x), gamma) for gamma in (1e-3, 1.0, 1e3)}
    for gamma, f in outputs.items():
        torch.testing.assert_close(f * gamma, outputs[1.0], rtol=1e-6, atol=1e-7)
    assert outputs[1e-3].abs().mean() > 1e5 * outputs[1e3].abs().mean()


@pytest.mark.parametrize("gamma,eta", [(1.0, 0.05), (1e-2, 1e-3), (30.0, 2.0)])
def test_one_trainer_step_is_sgd_with_lr_width_times_eta(digits_files, test_set, gamma, eta):
    """The trainer's test loss after one step equals a hand-written SGD step with lr = N * eta."""
    width, pool, _ = 48, *digits_files
    setup = make_setup(steps=1, dtype=torch.float64, width=width)
    stream = OnlineStream(pool, batch_size=16, steps=1, data_seed=0)
    curves = train(setup, Members([5], [gamma], [eta]), stream, *test_set, log=lambda m: None)

    net = build_model(setup.model, (8, 8, 1), 10, seeds=[5]).double()
    frozen = build_model(setup.model, (8, 8, 1), 10, seeds=[5]).double()
    images, labels = stream.batch(0)
    x = normalize(images, setup.mean, setup.std, torch.float64)
    mse(centered_output(net(x), frozen(x), gamma), labels).sum().backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= width * eta * p.grad
        x_test = normalize(test_set[0], setup.mean, setup.std, torch.float64)
        expected = mse(centered_output(net(x_test), frozen(x_test), gamma), test_set[1])[0].item()
    assert curves.eval_step.tolist() == [0, 1]
    assert curves.test_loss[0, 0] == pytest.approx(0.1, rel=1e-12)  # f = 0 at init: mean of one-hot^2
    assert curves.test_loss[0, 1] == pytest.approx(expected, rel=1e-10)
