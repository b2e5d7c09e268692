"""Model registry: a model is one module that registers a builder under its name.

A builder takes ``(input_shape, num_classes, generator, **hyperparameters)`` and returns an
``nn.Module`` with an integer attribute ``width`` (the N of the learning rate ``N * eta``) whose
forward maps a batch of images (B, H, W, C) to raw outputs g(x; theta) of shape (B, num_classes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ModelBuilder = Callable[..., nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make a model builder available to configs under ``name``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return add


def build_model(spec: dict, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Build the model named ``spec['name']`` with the other keys of ``spec`` as hyperparameters.

    Initialization draws from a generator seeded with ``seed`` only, so a seed gives the same
    initial network whatever gamma, eta or dtype the cell uses.
    """
    hyper = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in MODELS:
        raise KeyError(f"unknown model {spec['name']!r}; known: {sorted(MODELS)}")
    generator = torch.Generator().manual_seed(seed)
    return MODELS[spec["name"]](input_shape, num_classes, generator, **hyper)


from gammasweep.models import mlp  # noqa: E402,F401  (registers the built-in models)
