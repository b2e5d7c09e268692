"""The paper's parameterization: centered output, muP scaling, 1/gamma output, lr = width * eta."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_setup
from torch import nn

from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.sweep.losses import mse
from gammasweep.sweep.models import build_model
from gammasweep.sweep.parameterization import (
    MuBatchNorm2d,
    MuConv2d,
    batch_statistics,
    centered_output,
    learning_rate,
)
from gammasweep.sweep.train import Members, train

SPEC = {"name": "mlp", "depth": 3}
EVERY_MODEL = [
    {"name": "mlp", "depth": 3, "width": 16},
    {"name": "cnn", "width": 4, "padding": 1},  # 'same' convolutions: the tests' images are small
    {"name": "resnet18", "width": 2},
    {"name": "vit", "width": 8, "depth": 2, "heads": 2, "patch": 4},
]

# Stacked, ResNet-18's 20 convolutions run grouped (one group per member), alone dense: they sum in
# other orders, and 20 BatchNorms divide by the batch's deviations, so round-off reaches a few 1e-15
# on outputs of O(1) (the other models stay below 1e-15).
STACKING_ATOL = {"resnet18": 1e-14}


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
@pytest.mark.parametrize("spec", EVERY_MODEL, ids=lambda s: s["name"])
def test_centered_output_is_exactly_zero_at_init(spec, training):
    """In training mode and in eval mode (BatchNorm on its initial running statistics, as the test at step 0)."""
    net, frozen = (build_model(spec, (8, 8, 1), 10, seeds=[3, 4]).train(training) for _ in range(2))
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
        torch.testing.assert_close(stacked(x)[k], alone(x)[0], rtol=1e-13, atol=STACKING_ATOL.get(spec["name"], 1e-15))


def _width_sweep(
    spec: dict,
    image: tuple[int, int, int],
    widths: list[int],
    seeds: list[int],
    activations: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]],
    eta: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per width, on one batch: the RMS of each of ``activations(net, x)`` at init and its RMS change
    after one SGD step (lr = width * eta, gamma = 1, MSE), (widths, activations) each; and
    sqrt(width) x the RMS of the output at init, (widths,)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, *image, dtype=torch.float64), torch.randint(0, 10, (64,))
    rms, change, out = [], [], []
    for width in widths:
        net = build_model({**spec, "width": width}, image, 10, seeds=seeds).double()
        before, g0 = [h.detach() for h in activations(net, x)], net(x).detach()
        mse(centered_output(net(x), g0, 1.0), y).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= learning_rate(width, eta) * p.grad
            after = activations(net, x)
        rms.append([h.pow(2).mean().sqrt().item() for h in before])
        change.append([(a - b).pow(2).mean().sqrt().item() for a, b in zip(after, before)])
        out.append(g0.pow(2).mean().sqrt().item() * width**0.5)
    return np.array(rms), np.array(change), np.array(out)


def _within(values: np.ndarray, tolerance: float = 0.5) -> bool:
    """Every row of ``values`` (widths, ...) within ``tolerance`` of the first width's, relatively."""
    return bool(np.all(np.abs(values / values[0] - 1) < tolerance))


# (spec, image, width factor): the width grows by the factor twice; doubling only for ResNet-18,
# whose quadrupled width (64) alone would cost seconds.
MUP_CASES = {
    "mlp": (EVERY_MODEL[0], (8, 8, 1), 4),
    "cnn": ({**EVERY_MODEL[1], "width": 32}, (4, 4, 3), 4),
    "resnet18": ({**EVERY_MODEL[2], "width": 4}, (8, 8, 3), 2),
    "vit": ({**EVERY_MODEL[3], "width": 16, "patch": 2}, (4, 4, 3), 4),
}


@pytest.mark.parametrize("spec,image,factor", MUP_CASES.values(), ids=MUP_CASES.keys())
def test_mup_features_and_their_updates_are_width_independent_for_every_model(spec, image, factor):
    """Last hidden features are O(1) at init and move O(1) after one step with lr = N * eta, as the
    width grows; the muP output at init shrinks like 1/sqrt(width)."""
    widths = [spec["width"] * factor**i for i in range(3)]
    rms, change, out = _width_sweep(spec, image, widths, [0], lambda net, x: [net.features(x)])
    for values in (rms, out):
        assert _within(values), (rms, change, out)
    # The update's exponent in the width: ~0 under muP, 0.5 or 1 for a sqrt(N) or N growth. (The CNN's
    # drifts by 0.13-0.15 over widths 32..512, its convolutions divided by sqrt(c_in) only, as the authors'.)
    exponent = np.polyfit(np.log(widths), np.log(change[:, 0]), 1)[0]
    assert abs(exponent) < 0.2, (exponent, change)
    assert 0.1 < rms[0, 0] < 10 and change[0, 0] > 1e-3


def _part_outputs(part: str) -> Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]:
    """(net, x) -> the outputs of each submodule of ``net.<part>`` in one forward pass."""

    def outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        captured = []
        hooks = [m.register_forward_hook(lambda module, args, out: captured.append(out)) for m in getattr(net, part)]
        try:
            net(x)
        finally:
            for hook in hooks:
                hook.remove()
        return captured

    return outputs


@pytest.mark.parametrize("case,part", [("resnet18", "stages"), ("vit", "blocks")], ids=["resnet18", "vit"])
def test_mup_hidden_activations_of_the_normalized_models_and_their_updates_are_width_independent(case, part):
    """BatchNorm and LayerNorm make their outputs O(1) whatever the scale of the weights before them,
    so the features' O(1) at init above holds by construction there and does not test muP. What muP
    must still get right: the un-normalized activations (ResNet-18's stage outputs, a normalized
    branch plus the shortcut, after ReLU; the ViT's residual stream after each block) stay O(1), and
    one step with lr = N * eta moves each of them by a width-independent amount (lr = eta, the NTK
    scaling's, would shrink the change like 1/N). Two members (seeds 0, 1) average the seed noise."""
    spec, image, factor = MUP_CASES[case]
    widths = [spec["width"] * factor**i for i in range(3)]
    rms, change, _ = _width_sweep(spec, image, widths, [0, 1], _part_outputs(part))
    assert _within(rms, 0.25) and _within(change), (rms, change)
    assert np.all((rms > 0.3) & (rms < 3)) and np.all(change > 1e-2), (rms, change)


def test_mu_conv2d_defaults_are_the_3x3_same_convolution_of_before():
    """Kernel size 3, stride 1 and a bias are bit for bit the convolution before those arguments
    existed, but for the bias, now inside the multiplier as the authors': weights N(0, 1) from the
    member's generator, F.conv2d(x, W / sqrt(c_in), b / sqrt(c_in), padding=1)
    on a shared input and per member (groups = K). The 1x1 stride-2 shortcut is a 1x1 convolution
    of every second pixel, with fan-in c_in and no bias."""
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    conv = MuConv2d(3, 5, generators)
    for k, seed in enumerate((0, 1)):
        assert torch.equal(conv.weight[k], torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        conv.bias.normal_()
    weight, bias = conv.weight.reshape(10, 3, 3, 3) * (1.0 / math.sqrt(3)), conv.bias.reshape(-1) * (1.0 / math.sqrt(3))
    shared, stacked = torch.randn(4, 3, 7, 7), torch.randn(4, 2 * 3, 7, 7)
    assert torch.equal(conv(shared), F.conv2d(shared, weight, bias, padding=1))
    assert torch.equal(conv(stacked), F.conv2d(stacked, weight, bias, padding=1, groups=2))
    assert conv.fan_in == 27 and conv.scale == 1.0 / math.sqrt(3)

    shortcut = MuConv2d(3, 5, generators, kernel_size=1, stride=2, bias=False)
    assert shortcut.bias is None and shortcut.fan_in == 3 and shortcut(stacked).shape == (4, 10, 4, 4)
    torch.testing.assert_close(
        shortcut(stacked),
        F.conv2d(stacked[:, :, ::2, ::2], shortcut.weight.reshape(10, 3, 1, 1) / math.sqrt(3), groups=2),
    )


def test_batch_norm_normalizes_each_member_on_its_own_batch_statistics():
    """Per member and channel, over (B, H, W): (x - mean) / sqrt(var + eps) with each member's own
    statistics (here member 1's input is member 0's scaled by 10 and shifted by 3: the two normalize
    alike), then each member's own affine map; one member's input leaves the other's output unchanged."""
    norm = MuBatchNorm2d(3, members=2).double()
    h = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    x = torch.cat([h, 10 * h + 3], dim=1)  # (B, K * C, H, W): member 0's channels, then member 1's
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    y = norm(x)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + norm.eps), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, 3:], y[:, :3], rtol=1e-5, atol=1e-12)  # alike up to eps / (2 var)
    with torch.no_grad():
        norm.weight[1], norm.bias[1] = 2.0, -1.0
    torch.testing.assert_close(norm(x), torch.cat([y[:, :3], 2 * y[:, 3:] - 1], dim=1), rtol=1e-12, atol=1e-12)
    other = torch.cat([h, torch.randn(8, 3, 5, 5, dtype=torch.float64)], dim=1)
    assert torch.equal(norm(other)[:, :3], norm(x)[:, :3])


def test_batch_norm_is_torchs_batch_norm_2d_per_member_with_its_running_statistics():
    """Per member, MuBatchNorm2d is torch's nn.BatchNorm2d with its defaults (the authors' ResNet's):
    after a few training passes its outputs and running statistics (momentum 0.1, variance unbiased)
    are torch's; in eval mode its output is torch's eval output on those running statistics, far
    from the output on the batch's own statistics."""
    norm = MuBatchNorm2d(3, members=2).double()
    reference = [nn.BatchNorm2d(3).double() for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.weight.normal_(generator=gen), norm.bias.normal_(generator=gen)
        for k, torch_norm in enumerate(reference):
            torch_norm.weight.copy_(norm.weight[k]), torch_norm.bias.copy_(norm.bias[k])
    batches = [2.0 + 3.0 * torch.randn(8, 2 * 3, 5, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    for x in batches[:3]:  # training mode, the default
        y = norm(x)
        for k, torch_norm in enumerate(reference):
            torch.testing.assert_close(
                y[:, 3 * k : 3 * k + 3], torch_norm(x[:, 3 * k : 3 * k + 3]), rtol=1e-12, atol=1e-12
            )
    for k, torch_norm in enumerate(reference):
        torch.testing.assert_close(norm.running_mean[k], torch_norm.running_mean, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(norm.running_var[k], torch_norm.running_var, rtol=1e-14, atol=1e-14)
    assert (norm.running_mean.abs() > 0.3).all() and (norm.running_var > 2).all()  # far off their init (0, 1)
    x = batches[3]
    with batch_statistics(norm):
        on_batch = norm(x)
    norm.eval()
    y = norm(x)
    for k, torch_norm in enumerate(reference):
        torch.testing.assert_close(
            y[:, 3 * k : 3 * k + 3], torch_norm.eval()(x[:, 3 * k : 3 * k + 3]), rtol=1e-12, atol=1e-12
        )
    assert (y - on_batch).abs().max() > 0.1


def test_batch_statistics_normalizes_on_the_batch_and_leaves_the_running_statistics_untouched():
    """What the probes use: training mode on the batch in hand, without the running statistics' update,
    whatever the mode before; on exit each BatchNorm is back in its own mode."""
    net = build_model({"name": "resnet18", "width": 2}, (8, 8, 1), 10, seeds=[0, 1]).double()
    x, other = torch.randn(2, 6, 8, 8, 1, dtype=torch.float64)
    net(other)  # one training pass: the running statistics leave their init
    before = {k: v.clone() for k, v in net.named_buffers()}
    for training in (True, False):
        net.train(training)
        with batch_statistics(net):
            y = net(x)
        assert all(module.training == training for module in net.modules())
        assert all(torch.equal(v, before[k]) for k, v in net.named_buffers())
        torch.testing.assert_close(y, net.train()(x), rtol=1e-12, atol=1e-12)  # the batch's statistics (and an update)
        before = {k: v.clone() for k, v in net.named_buffers()}


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


def _hand_sgd_step(setup, stream, test_set, gamma: float, lr: float):
    """By hand, the network of seed 5 and its frozen copy theta_0 (float64, in training mode), one SGD step
    of rate ``lr`` on the stream's first batch; returns (net, frozen, the normalized test images)."""
    net, frozen = (build_model(setup.model, (8, 8, 1), 10, seeds=[5]).double() for _ in range(2))
    frozen.requires_grad_(False)
    images, labels = stream.batch(0)
    x = normalize(images, setup.mean, setup.std, torch.float64)
    mse(centered_output(net(x), frozen(x), gamma), labels).sum().backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= lr * p.grad
    return net, frozen, normalize(test_set[0], setup.mean, setup.std, torch.float64)


@pytest.mark.parametrize("gamma,eta", [(1.0, 0.05), (1e-2, 1e-3), (30.0, 2.0)])
def test_one_trainer_step_is_sgd_with_lr_width_times_eta(digits_files, test_set, gamma, eta):
    """The trainer's test loss after one step equals a hand-written SGD step with lr = N * eta."""
    width, pool, _ = 48, *digits_files
    setup = make_setup(steps=1, dtype=torch.float64, width=width)
    stream = OnlineStream(pool, batch_size=16, steps=1, data_seed=0)
    curves = train(setup, Members([5], [gamma], [eta]), stream, *test_set, log=lambda m: None)

    net, frozen, x_test = _hand_sgd_step(setup, stream, test_set, gamma, width * eta)
    with torch.no_grad():
        # the test loss sums the squared error over the 10 classes (the authors'), the training loss averages
        expected = 10 * mse(centered_output(net(x_test), frozen(x_test), gamma), test_set[1])[0].item()
    assert curves.eval_step.tolist() == [0, 1]
    assert curves.test_loss[0, 0] == pytest.approx(1.0, rel=1e-12)  # f = 0 at init: one-hot^2 summed over classes
    assert curves.test_loss[0, 1] == pytest.approx(expected, rel=1e-10)


def test_the_trainer_tests_resnet18_on_running_statistics_as_the_authors(digits_files, test_set):
    """One trainer step of ResNet-18 equals the authors' by hand: the network and its frozen copy theta_0
    in training mode (both normalize on the batch and update their running statistics: their
    ``CenteredModel`` under ``model.train()``), an SGD step, then the test loss in eval mode on the
    running statistics (``test_model``'s ``model.eval()``), which the batch-statistics loss is not.
    At init, in eval mode, f = 0 exactly."""
    width, gamma, eta = 2, 1.0, 0.05
    setup = make_setup(steps=1, dtype=torch.float64, model={"name": "resnet18", "width": width})
    stream = OnlineStream(digits_files[0], batch_size=16, steps=1, data_seed=0)
    curves = train(setup, Members([5], [gamma], [eta]), stream, *test_set, log=lambda m: None)

    net, frozen, x_test = _hand_sgd_step(setup, stream, test_set, gamma, width * eta)
    with torch.no_grad():

        def test_loss() -> float:
            return 10 * mse(centered_output(net(x_test), frozen(x_test), gamma), test_set[1])[0].item()

        with batch_statistics(net), batch_statistics(frozen):
            on_batch = test_loss()
        net.eval(), frozen.eval()
        expected = test_loss()
    assert curves.test_loss[0, 0] == 1.0  # f = 0 exactly: one-hot^2 summed over classes
    assert curves.test_loss[0, 1] == pytest.approx(expected, rel=1e-10)
    assert abs(expected - on_batch) > 1e-3 * expected
