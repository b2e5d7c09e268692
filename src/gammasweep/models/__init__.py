"""Model registry: a model is one module that registers a builder under its name.

A builder takes ``(input_shape, num_classes, generators, **hyperparameters)`` and returns an
``nn.Module`` of K = len(generators) stacked members (see ``gammasweep.parameterization``) with an
integer attribute ``width`` (the N of the learning rate ``N * eta``) whose forward maps a batch of
images (B, H, W, C), shared by the members, to raw outputs g(x; theta) of shape (K, B, num_classes),
a ``readout`` submodule (its input: the last hidden features) and ``feature_stages``: the names of
the submodules whose inputs are hidden features, one per layer or residual stage
(``probes.FeatureSparsityProbe``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ModelBuilder = Callable[..., nn.Module]
MODELS: dict[str, ModelBuilder] = {}
PACK_SIZES: dict[str, int] = {}  # cells per training job when an experiment sets no `pack_size`
LAYERS: dict[str, int | Callable[[dict], int] | None] = {}  # weight layers L: fixed, of the spec, or None: its `depth`


def register_model(name: str, pack_size: int,
                   layers: int | Callable[[dict], int] | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make a model builder available to configs under ``name``, with its default pack
    size (cells trained together in one GPU job; each model module states its memory estimate)
    and its number of weight layers: a number for a fixed-depth model, a function of the spec, or
    None for the `depth` hyperparameter."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name], PACK_SIZES[name], LAYERS[name] = builder, pack_size, layers
        return builder

    return add


def layer_count(spec: dict) -> int:
    """Weight layers L of a model spec, readout included (the depth of the theory's gamma^(2/L))."""
    layers = LAYERS[spec["name"]]
    return layers(spec) if callable(layers) else layers or spec["depth"]


def build_model(spec: dict, input_shape: tuple[int, int, int], num_classes: int, seeds: Sequence[int]) -> nn.Module:
    """Build K = len(seeds) members of the model named ``spec['name']`` (the other keys of ``spec``
    are its hyperparameters).

    Member k draws its initialization from a generator seeded with ``seeds[k]`` only, so a seed
    gives the same initial network whatever gamma, eta, dtype or pack the cell trains in.
    """
    hyper = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in MODELS:
        raise KeyError(f"unknown model {spec['name']!r}; known: {sorted(MODELS)}")
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return MODELS[spec["name"]](input_shape, num_classes, generators, **hyper)


from gammasweep.models import cnn, mlp, resnet, vit  # noqa: E402,F401  (registers the built-in models)
