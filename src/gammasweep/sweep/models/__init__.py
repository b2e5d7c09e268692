"""Model catalogue: every model by name, with what the plan needs to know of it, torch-free (the
Snakefile parses with it). The networks are built by ``build_model``, which imports the model's module.

A model module defines ``build(input_shape, num_classes, generators, **hyperparameters)``, which returns
an ``nn.Module`` of K = len(generators) stacked members (see ``gammasweep.sweep.parameterization``) with
an integer attribute ``width`` (the N of the learning rate ``N * eta``) whose forward maps a batch of
images (B, H, W, C), shared by the members, to raw outputs g(x; theta) of shape (K, B, num_classes),
a ``readout`` submodule (its input: the last hidden features) and ``feature_stages``: the names of
the submodules whose inputs are hidden features, one per layer or residual stage
(``probes.recorder.FeatureSparsityProbe``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """A model of the catalogue: the module that builds it, its default pack size (cells trained
    together in one GPU job when an experiment sets no ``pack_size``; each module states its memory
    estimate) and its number of weight layers L: fixed, a function of the spec, or None for the
    spec's ``depth``."""

    module: str
    pack_size: int
    layers: int | Callable[[dict], int] | None = None


MODELS: dict[str, ModelInfo] = {
    "mlp": ModelInfo("mlp", pack_size=64),
    "cnn": ModelInfo("cnn", pack_size=16, layers=4),
    "resnet18": ModelInfo("resnet", pack_size=8, layers=18),
    "vit": ModelInfo("vit", pack_size=8, layers=lambda spec: 4 * spec["depth"] + 2),
}


def layer_count(spec: dict) -> int:
    """Weight layers L of a model spec, readout included (the depth of the theory's gamma^(2/L))."""
    layers = MODELS[spec["name"]].layers
    return layers(spec) if callable(layers) else layers or spec["depth"]


def build_model(spec: dict, input_shape: tuple[int, int, int], num_classes: int, seeds: Sequence[int]) -> nn.Module:
    """Build K = len(seeds) members of the model named ``spec['name']`` (the other keys of ``spec``
    are its hyperparameters).

    Member k draws its initialization from a generator seeded with ``seeds[k]`` only, so a seed
    gives the same initial network whatever gamma, eta, dtype or pack the cell trains in.
    """
    import torch

    if spec["name"] not in MODELS:
        raise KeyError(f"unknown model {spec['name']!r}; known: {sorted(MODELS)}")
    module = importlib.import_module(f"gammasweep.sweep.models.{MODELS[spec['name']].module}")
    hyper = {k: v for k, v in spec.items() if k != "name"}
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return module.build(input_shape, num_classes, generators, **hyper)
