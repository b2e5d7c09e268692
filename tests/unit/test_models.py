"""The architectures of ResNet-18 and the ViT: their layers, stages, tokens and batch dependence
(the parameterization's invariants of every model are in test_parameterization.py)."""

from __future__ import annotations

import pytest
import torch

from gammasweep.probes.recorder import layer_inputs
from gammasweep.sweep.models import build_model, layer_count
from gammasweep.sweep.parameterization import members_first

RESNET = {"name": "resnet18", "width": 2}
VIT = {"name": "vit", "width": 8, "depth": 2, "heads": 2, "patch": 4}


def test_resnet18_has_the_layers_and_parameters_of_resnet18():
    """At N = 64 on CIFAR: torchvision's resnet18 with 10 classes (11,173,962 parameters) less the
    readout's 10 biases; 18 weight layers on the longest path, 4 x depth + 2 for the ViT."""
    net = build_model({"name": "resnet18", "width": 64}, (32, 32, 3), 10, seeds=[0])
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # torchvision's, its readout bias included
    assert net.width == 64 and net.readout.weight.shape == (1, 10, 512)
    assert layer_count({"name": "resnet18", "width": 64}) == 18 and layer_count({**VIT, "depth": 6}) == 26


def test_resnet18_feature_stages_are_the_post_relu_outputs_of_its_four_stages():
    """The inputs of the model's ``feature_stages`` (what the feature-sparsity probe reads) for an
    8 x 8 image: stage s is (B, K x 2^s N, 8 / 2^s, 8 / 2^s), post-ReLU (>= 0, not all 0); the
    readout's features are the last stage averaged over positions."""
    net = build_model(RESNET, (8, 8, 1), 10, seeds=[0, 1]).double()
    x = torch.randn(5, 8, 8, 1, dtype=torch.float64)
    stages = layer_inputs(net, dict(net.named_parameters()), x, net.feature_stages)
    assert [s.shape for s in stages] == [(5, 2 * 2, 8, 8), (5, 2 * 4, 4, 4), (5, 2 * 8, 2, 2), (5, 2 * 16, 1, 1)]
    assert all((s >= 0).all() and (s > 0).any() for s in stages)
    torch.testing.assert_close(net.features(x), members_first(stages[-1], 2), rtol=1e-14, atol=1e-14)


def test_vit_tokens_are_the_flattened_patches_in_row_major_order():
    net = build_model({**VIT, "patch": 2}, (4, 6, 3), 10, seeds=[0])
    x = torch.randn(2, 4, 6, 3)
    tokens = net.tokens(x).view(2, 6, 12)  # (B, T, p * p * C): T = 2 x 3 patches
    for i in range(2):
        for j in range(3):
            assert torch.equal(tokens[:, 3 * i + j], x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten(1))
    with pytest.raises(ValueError, match="divisible by the patch"):
        build_model({**VIT, "patch": 4}, (4, 6, 3), 10, seeds=[0])


@pytest.mark.parametrize("spec,per_example", [(VIT, True), (RESNET, False)], ids=["vit", "resnet18"])
def test_an_examples_output_depends_on_its_batch_only_with_batch_norm(spec, per_example):
    """LayerNorm normalizes each token of each example alone: the ViT's outputs on part of a batch
    are its outputs on the whole batch. BatchNorm normalizes on the batch's statistics: ResNet-18's
    are not (docs/models.md)."""
    net = build_model(spec, (8, 8, 1), 10, seeds=[0, 1]).double()
    x = torch.randn(12, 8, 8, 1, dtype=torch.float64)
    whole, part = net(x)[:, :6], net(x[:6])
    assert torch.allclose(whole, part, rtol=1e-12, atol=1e-14) == per_example


def test_the_cnn_is_unpadded_as_the_authors_with_their_fan_ins():
    """The authors' 3x3 convolutions have no padding: the hidden layer's fan-in is 6 x 6 x 2N = 72N on
    CIFAR (32 -> 30 -> 15 -> 13 -> 6) and 5 x 5 x 2N = 50N on MNIST; padding 1 keeps the sides (8x8 digits:
    2 x 2 x 2N); an image too small for unpadded convolutions is a clear error."""
    for shape, fan_in in (((32, 32, 3), 72 * 4), ((28, 28, 1), 50 * 4)):
        cnn = build_model({"name": "cnn", "width": 4}, shape, 10, seeds=[0])
        assert cnn.hidden.fan_in == fan_in and cnn(torch.zeros(2, *shape)).shape == (1, 2, 10)
    assert build_model({"name": "cnn", "width": 4, "padding": 1}, (8, 8, 1), 10, seeds=[0]).hidden.fan_in == 32
    with pytest.raises(ValueError, match="set the model's padding: 1"):
        build_model({"name": "cnn", "width": 4}, (8, 8, 1), 10, seeds=[0])
