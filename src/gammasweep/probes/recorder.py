"""Probes: quantities measured on the weights during training, at the test-evaluation steps.

A probe reads the weights and never writes them, and draws its random numbers from its own
generators, so a run with probes follows exactly the trajectory of the same run without them.
Probes are switched on per experiment (``training: {probes: {<name>: {settings}}}`` in the config);
a probe that is off records nothing. Each probe measures on a fixed probe batch: the Hessian and
NTK probes (``on_training_data``) on the first ``examples`` images of the training pass (the edge
of stability is the training objective's; the same for every run of a data seed), the others on
the first ``examples`` test images. Each records one or more variables per member: at every eval
step, or (``final_only``) once, after the last step.

BatchNorm: every probe sees the network in training mode on its probe batch's statistics and leaves
the running statistics untouched (``parameterization.batch_statistics``), so it never moves the
trajectory. That is the function the training objective differentiates: the Hessian probes' edge of
stability is that of gradient descent on the probe batch. The probes on test images (outputs,
representation, feature sparsity) see the same batch function, not the eval-mode network of the
test loss.

Probes by name, each with the variables it records:

- sharpness (records sharpness): top Hessian eigenvalue of the loss (power iteration), units 1/eta
- readout_sharpness (records readout_sharpness): top eigenvalue of the readout layer's block of that
  Hessian, units 1/eta
- hessian_trace (records hessian_trace): trace of that Hessian (Hutchinson's estimator), units 1/eta
- ntk_spectrum (records ntk_eigenvalue): top eigenvalues of the empirical NTK of the batch's outputs
  (Lanczos), units 1/eta
- spectrum (records hessian_ritz_value, hessian_ritz_weight): Lanczos nodes and weights of the
  Hessian's spectral density (SLQ), units 1/eta
- alignment (records feature_alignment, ntk_alignment): centered kernel alignment of the last hidden
  layer's kernel and of the empirical NTK with the labels' kernel
- outputs (records probe_output): the centered outputs f(x) after the last step (final only)
- representation (records feature_kernel): the last hidden layer's kernel after the last step (final
  only): CKA between networks
- weight_movement (records weight_movement): per layer, the relative distance from init,
  \\|theta - theta_0\\| / \\|theta_0\\|
- noether_charge (records noether_charge): per pair of consecutive layers, the charge of their
  rescaling symmetry
- feature_sparsity (records feature_sparsity): per hidden layer or residual stage, the feature
  sparsity of its post-ReLU features

Hessians are taken with respect to the stored weights and multiplied by N (``Network.lr_unit``):
SGD's learning rate is N eta, so gradient descent on the probe batch is unstable above 2/eta and
the theory's sharpness (``gammasweep.theory.toy``) applies unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import xarray as xr
from torch import nn
from torch.func import functional_call, jacrev, vmap

from gammasweep.probes.linalg import (
    GaussNewton,
    Hessian,
    Weights,
    hutchinson_trace,
    lanczos_quadrature,
    per_row,
    start_vectors,
    top_hessian_eigenvalue,
)
from gammasweep.related.sparsity import feature_sparsity
from gammasweep.results.kernels import centered_alignment
from gammasweep.sweep.parameterization import MuBatchNorm2d, batch_statistics


@dataclass(frozen=True)
class Network:
    """What a probe may read of a training run.

    ``centered(rows, weights, x, g0)``: centered outputs f (rows, B, C) of the rows' ``weights`` on
    x (B, H, W, C), given theta_0's outputs ``g0`` (S, B, C), one per distinct seed.
    ``initial(rows)``: theta_0 of those rows. ``initial_output(x)``: theta_0's outputs (S, B, C).
    ``lr_unit``: SGD's learning rate per unit eta (the width N).
    """

    model: nn.Module
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    centered: Callable[[slice, Weights, torch.Tensor, torch.Tensor], torch.Tensor]
    initial: Callable[[slice], Weights]
    initial_output: Callable[[torch.Tensor], torch.Tensor]
    lr_unit: float


@dataclass(frozen=True)
class ProbeBatch:
    """The fixed probe batch: normalized images x (P, H, W, C), labels y (P,), theta_0's outputs g0 (S, P, C)."""

    x: torch.Tensor
    y: torch.Tensor
    g0: torch.Tensor


@dataclass(frozen=True)
class Probe:
    """A measurement: ``measure`` returns, for each of its ``records``, values (rows, *dims) for the
    rows of one chunk of the pack."""

    name: ClassVar[str]
    records: ClassVar[tuple[str, ...]]  # the recorded variables (``gammasweep.results.records``)
    final_only: ClassVar[bool] = False
    on_training_data: ClassVar[bool] = False  # the probe batch: training images (the objective's), else test
    examples: int = 256

    def dims(self, net: Network, num_classes: int) -> dict[str, dict[str, int | list[str]]]:
        """Per record, its dimensions after (member[, eval_step]): name -> size, or labels."""
        return {record: {} for record in self.records}

    def measure(
        self, net: Network, batch: ProbeBatch, rows: slice, weights: Weights, row_seeds: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def layer_inputs(model: nn.Module, weights: Weights, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """The inputs of the model's submodules ``names`` in one forward pass: (rows, B, F), or
    (B, rows * C, H, W) for a convolution's."""
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_pre_hook(lambda module, args, name=name: captured.setdefault(name, args[0]))
        for name in names
    ]
    try:
        functional_call(model, weights, (x,))
    finally:
        for hook in hooks:
            hook.remove()
    return [captured[name] for name in names]


def last_features(model: nn.Module, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's activations (rows, B, F): the input of the model's ``readout``."""
    return layer_inputs(model, weights, x, ["readout"])[0]


def feature_units(h: torch.Tensor, rows: int) -> torch.Tensor:
    """Hidden features as (rows, samples, units): (rows, B, F) as they are; a convolution's input
    (B, rows * C, H, W) with each channel a unit and each position of each image a sample, (rows, B H W, C)."""
    if h.dim() != 4:
        return h
    b, channels, height, width = h.shape
    return h.view(b, rows, channels // rows, height, width).permute(1, 0, 3, 4, 2).reshape(rows, -1, channels // rows)


def tangent_kernel(model: nn.Module, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """The empirical NTK of each row's raw output g, traced over the classes (rows, P, P):
    K(x, x') = sum_c grad g_c(x) . grad g_c(x'). Row by row, from per-example Jacobians (vmap over
    the examples of ``jacrev``): memory P x classes x parameters of one member; compute
    P^2 x classes x parameters per member for the Gram matrix. Refuses a model with BatchNorm,
    whose output of one example depends on its batch: its per-example Jacobians are not its NTK."""
    if any(isinstance(module, MuBatchNorm2d) for module in model.modules()):
        raise ValueError(
            f"the NTK (alignment probe) needs per-example Jacobians, but {type(model).__name__} "
            "normalizes on batch statistics (BatchNorm), so one example's output depends on the "
            "others in its batch (docs/models.md); switch the alignment probe off for this model"
        )

    def output(w: Weights, example: torch.Tensor) -> torch.Tensor:
        return functional_call(model, w, (example.unsqueeze(0),))[0, 0]  # (C,)

    kernels = []
    for r in range(len(next(iter(weights.values())))):
        row = {k: v[r : r + 1].detach() for k, v in weights.items()}
        jacobian = vmap(jacrev(output), in_dims=(None, 0))(row, x)  # name -> (P, C, 1, *shape)
        flat = torch.cat([j.flatten(2) for j in jacobian.values()], dim=2)  # (P, C, parameters)
        kernels.append(torch.einsum("pcf,qcf->pq", flat, flat))
    return torch.stack(kernels)


def label_kernel(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """The target's kernel Y Y^T of one-hot labels (P,) -> (P, P)."""
    onehot = nn.functional.one_hot(labels, classes).to(dtype)
    return onehot @ onehot.T


def batch_loss(net: Network, batch: ProbeBatch, rows: slice) -> Callable[[Weights], torch.Tensor]:
    """Stacked weights of ``rows`` -> their losses (rows,) on the probe batch: what the Hessian probes
    differentiate."""
    return lambda weights: net.loss(net.centered(rows, weights, batch.x, batch.g0), batch.y)


@dataclass(frozen=True)
class SharpnessProbe(Probe):
    """The top Hessian eigenvalue of the loss on the probe batch, by power iteration:
    ``iterations`` steps in each of its two phases (``top_hessian_eigenvalue``)."""

    name: ClassVar[str] = "sharpness"
    records: ClassVar[tuple[str, ...]] = ("sharpness",)
    on_training_data: ClassVar[bool] = True
    iterations: int = 20

    def measure(self, net, batch, rows, weights, row_seeds):
        loss_of = batch_loss(net, batch, rows)
        return {"sharpness": top_hessian_eigenvalue(loss_of, weights, self.iterations, row_seeds) * net.lr_unit}


@dataclass(frozen=True)
class SpectrumProbe(Probe):
    """The Hessian's spectral density by stochastic Lanczos quadrature: ``vectors`` random starts of
    ``iterations`` Lanczos steps each (``lanczos_quadrature``), recorded over (start, ritz): the nodes
    and their weights (summing to 1 per member over all starts). The top nodes of one start
    approximate the top eigenvalues."""

    name: ClassVar[str] = "spectrum"
    records: ClassVar[tuple[str, ...]] = ("hessian_ritz_value", "hessian_ritz_weight")
    on_training_data: ClassVar[bool] = True
    iterations: int = 30
    vectors: int = 1

    def dims(self, net, num_classes):
        return {record: {"start": self.vectors, "ritz": self.iterations} for record in self.records}

    def measure(self, net, batch, rows, weights, row_seeds):
        loss_of = batch_loss(net, batch, rows)
        nodes, masses = [], []
        with torch.enable_grad():
            hessian = Hessian(loss_of, weights)
            for k in range(self.vectors):
                start = start_vectors(hessian.params, [seed * 101 + k for seed in row_seeds])
                values, weight = lanczos_quadrature(hessian, start, self.iterations)
                nodes.append(values)
                masses.append(weight / self.vectors)
        device = batch.x.device
        return {
            "hessian_ritz_value": torch.stack(nodes, 1).to(device) * net.lr_unit,
            "hessian_ritz_weight": torch.stack(masses, 1).to(device),
        }


@dataclass(frozen=True)
class ReadoutSharpnessProbe(Probe):
    """The top eigenvalue of the readout-only Hessian: the block of the loss's Hessian on the probe
    batch for the readout layer's weights and bias, the other layers held fixed (power iteration,
    ``top_hessian_eigenvalue``). For MSE it is positive semi-definite (f is linear in the readout)."""

    name: ClassVar[str] = "readout_sharpness"
    records: ClassVar[tuple[str, ...]] = ("readout_sharpness",)
    on_training_data: ClassVar[bool] = True
    iterations: int = 20

    def measure(self, net, batch, rows, weights, row_seeds):
        loss_of = batch_loss(net, batch, rows)
        readout = {k: w for k, w in weights.items() if k.startswith("readout.")}
        fixed = {k: w.detach() for k, w in weights.items() if k not in readout}
        top = top_hessian_eigenvalue(lambda w: loss_of({**fixed, **w}), readout, self.iterations, row_seeds)
        return {"readout_sharpness": top * net.lr_unit}


@dataclass(frozen=True)
class HessianTraceProbe(Probe):
    """The trace of the loss's Hessian on the probe batch (the sum of all its eigenvalues), by
    Hutchinson's estimator over ``vectors`` random sign vectors (``hutchinson_trace``)."""

    name: ClassVar[str] = "hessian_trace"
    records: ClassVar[tuple[str, ...]] = ("hessian_trace",)
    on_training_data: ClassVar[bool] = True
    vectors: int = 10

    def measure(self, net, batch, rows, weights, row_seeds):
        with torch.enable_grad():
            trace = hutchinson_trace(Hessian(batch_loss(net, batch, rows), weights), row_seeds, self.vectors)
        return {"hessian_trace": trace.to(batch.x.device) * net.lr_unit}


@dataclass(frozen=True)
class NtkSpectrumProbe(Probe):
    """The ``modes`` top eigenvalues of the empirical NTK of the centered outputs on the probe batch,
    as the MSE Gauss-Newton matrix 2 / (P C) J^T J sees them (``GaussNewton``): the Ritz values of
    ``iterations`` Lanczos steps from one random start, largest first (NaN where the NTK has fewer
    nonzero modes). The top one tends to the sharpness in the lazy regime, where the Hessian's
    residual term vanishes. No per-example Jacobians: it runs for BatchNorm models too."""

    name: ClassVar[str] = "ntk_spectrum"
    records: ClassVar[tuple[str, ...]] = ("ntk_eigenvalue",)
    on_training_data: ClassVar[bool] = True
    examples: int = 64
    iterations: int = 20
    modes: int = 5

    def __post_init__(self) -> None:
        if self.modes > self.iterations:
            raise ValueError(
                f"ntk_spectrum probe: modes ({self.modes}) must not exceed iterations "
                f"({self.iterations}), the number of Ritz values"
            )

    def dims(self, net, num_classes):
        return {"ntk_eigenvalue": {"ntk_mode": self.modes}}

    def measure(self, net, batch, rows, weights, row_seeds):
        with torch.enable_grad():
            ntk = GaussNewton(lambda w: net.centered(rows, w, batch.x, batch.g0), weights)
            nodes, _ = lanczos_quadrature(ntk, start_vectors(ntk.params, row_seeds), self.iterations)
        top = nodes.nan_to_num(nan=-math.inf).sort(dim=1, descending=True).values[:, : self.modes]
        top = torch.where(torch.isinf(top), math.nan, top)  # fewer modes than asked: NaN
        return {"ntk_eigenvalue": top.to(batch.x.device) * net.lr_unit}


@dataclass(frozen=True)
class AlignmentProbe(Probe):
    """Kernel-target alignment (silent alignment, Fig. 5): the centered alignment with the labels'
    kernel Y Y^T of (a) the last hidden layer's kernel and (b) the empirical NTK, on the probe batch.
    The NTK costs a Jacobian of P x classes x parameters per member (``tangent_kernel``)."""

    name: ClassVar[str] = "alignment"
    records: ClassVar[tuple[str, ...]] = ("feature_alignment", "ntk_alignment")
    examples: int = 64

    def measure(self, net, batch, rows, weights, row_seeds):
        target = label_kernel(batch.y, batch.g0.shape[-1], batch.x.dtype)
        with torch.no_grad():
            features = last_features(net.model, weights, batch.x)
        return {
            "feature_alignment": centered_alignment(features @ features.transpose(1, 2), target),
            "ntk_alignment": centered_alignment(tangent_kernel(net.model, weights, batch.x), target),
        }


@dataclass(frozen=True)
class OutputsProbe(Probe):
    """The centered outputs f(x) on the probe batch after the last step (Fig. 6a: networks of
    different gamma compared on the same inputs)."""

    name: ClassVar[str] = "outputs"
    records: ClassVar[tuple[str, ...]] = ("probe_output",)
    final_only: ClassVar[bool] = True

    def dims(self, net, num_classes):
        return {"probe_output": {"output_example": self.examples, "class": num_classes}}

    def measure(self, net, batch, rows, weights, row_seeds):
        with torch.no_grad():
            return {"probe_output": net.centered(rows, weights, batch.x, batch.g0)}


@dataclass(frozen=True)
class RepresentationProbe(Probe):
    """The last hidden layer's kernel Phi Phi^T / F on the probe batch after the last step, from
    which the figures compute representation similarity (linear CKA) between any two networks."""

    name: ClassVar[str] = "representation"
    records: ClassVar[tuple[str, ...]] = ("feature_kernel",)
    final_only: ClassVar[bool] = True
    examples: int = 64

    def dims(self, net, num_classes):
        return {"feature_kernel": {"kernel_example": self.examples, "kernel_example_b": self.examples}}

    def measure(self, net, batch, rows, weights, row_seeds):
        with torch.no_grad():
            features = last_features(net.model, weights, batch.x)
        return {"feature_kernel": features @ features.transpose(1, 2) / features.shape[-1]}


def weight_layers(names: Sequence[str]) -> list[str]:
    """The layers of a model's parameter names: the prefixes of its ``.weight`` tensors, in order."""
    return [name.removesuffix(".weight") for name in names if name.endswith(".weight")]


@dataclass(frozen=True)
class WeightMovementProbe(Probe):
    """Per layer, |theta_l - theta_0,l| / |theta_0,l| (weight and bias; biases start at 0): small,
    ~ gamma, in the lazy regime and O(1) in the rich one."""

    name: ClassVar[str] = "weight_movement"
    records: ClassVar[tuple[str, ...]] = ("weight_movement",)
    examples: int = 0  # reads no data

    def dims(self, net, num_classes):
        return {"weight_movement": {"layer": weight_layers([n for n, _ in net.model.named_parameters()])}}

    def measure(self, net, batch, rows, weights, row_seeds):
        initial = net.initial(rows)
        moved = []
        for layer in weight_layers(list(weights)):
            names = [n for n in weights if n.removesuffix(".weight").removesuffix(".bias") == layer]
            distance = sum(((weights[n] - initial[n]) ** 2).flatten(1).sum(1) for n in names).sqrt()
            moved.append(distance / initial[f"{layer}.weight"].flatten(1).norm(dim=1))
        return {"weight_movement": torch.stack(moved, 1).detach()}


@dataclass(frozen=True)
class FeatureSparsityProbe(Probe):
    """Per hidden layer or residual stage (the model's ``feature_stages``), the feature sparsity of
    Andriushchenko et al. 2023 (``sparsity.feature_sparsity``: nonzero entries of the de-duplicated
    active units / all entries; lower is sparser) of its post-ReLU features on the probe batch
    (``feature_units``: a convolutional stage's channels are its units)."""

    name: ClassVar[str] = "feature_sparsity"
    records: ClassVar[tuple[str, ...]] = ("feature_sparsity",)
    examples: int = 64
    threshold: float = 0.95  # |correlation| above which a unit duplicates a kept one (the paper's, deep nets)

    def dims(self, net, num_classes):
        return {"feature_sparsity": {"stage": list(net.model.feature_stages)}}

    def measure(self, net, batch, rows, weights, row_seeds):
        with torch.no_grad():
            stages = layer_inputs(net.model, weights, batch.x, net.model.feature_stages)
        count = len(next(iter(weights.values())))
        units = [feature_units(h, count).to("cpu", torch.float64).numpy() for h in stages]
        values = [[feature_sparsity(u[r], self.threshold) for u in units] for r in range(count)]
        return {"feature_sparsity": torch.tensor(values, dtype=batch.x.dtype, device=batch.x.device)}


def layer_norms(weights: Weights, layer: str, with_bias: bool) -> torch.Tensor:
    """Per row, |W|^2 (+ |b|^2) of one layer's stacked parameters (rows,)."""
    names = [f"{layer}.weight"] + ([f"{layer}.bias"] if with_bias and f"{layer}.bias" in weights else [])
    return sum(weights[n].flatten(1).pow(2).sum(1) for n in names)


@dataclass(frozen=True)
class NoetherChargeProbe(Probe):
    """Per pair of consecutive layers (joined by ReLU and average pooling, both positively
    homogeneous), the charge of their rescaling symmetry (W_l, b_l) -> c (W_l, b_l), W_l+1 -> W_l+1 / c:
    Q = |W_l|^2 + |b_l|^2 - |W_l+1|^2 of the stored weights. Gradient flow with one learning rate for
    both layers (SGD) conserves it; finite steps and SGD's noise move it (by lr^2 x the difference
    of the gradients' squared norms per step), which ties the sweep to the noise-equilibrium paper."""

    name: ClassVar[str] = "noether_charge"
    records: ClassVar[tuple[str, ...]] = ("noether_charge",)
    examples: int = 0  # reads no data

    def dims(self, net, num_classes):
        layers = weight_layers([n for n, _ in net.model.named_parameters()])
        return {"noether_charge": {"layer_pair": [f"{a}|{b}" for a, b in zip(layers[:-1], layers[1:])]}}

    def measure(self, net, batch, rows, weights, row_seeds):
        layers = weight_layers(list(weights))
        charges = [
            layer_norms(weights, a, with_bias=True) - layer_norms(weights, b, with_bias=False)
            for a, b in zip(layers[:-1], layers[1:])
        ]
        return {"noether_charge": torch.stack(charges, 1).detach()}


PROBES: dict[str, type[Probe]] = {
    p.name: p
    for p in (
        SharpnessProbe,
        ReadoutSharpnessProbe,
        HessianTraceProbe,
        SpectrumProbe,
        NtkSpectrumProbe,
        AlignmentProbe,
        OutputsProbe,
        RepresentationProbe,
        WeightMovementProbe,
        NoetherChargeProbe,
        FeatureSparsityProbe,
    )
}


def make_probes(settings: dict[str, dict]) -> list[Probe]:
    """The probes a config switches on: ``{name: {setting: value}}`` (``PROBES``)."""
    unknown = sorted(set(settings) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown probes {unknown}; known: {sorted(PROBES)}")
    return [PROBES[name](**values) for name, values in settings.items()]


class ProbeRecorder:
    """The probes of one run and their records: tensors (members, evals, *dims), or (members, *dims)
    for final-only probes, NaN until measured and for members diverged by then."""

    def __init__(
        self,
        settings: dict[str, dict],
        net: Network,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        member_seeds: Sequence[int],
        evals: int,
        num_classes: int,
        training_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        """``x_test`` (P, H, W, C) normalized and ``y_test`` (P,): the test images the probes read by
        default; ``training_batch(n)``: the first n images of the training pass and their labels,
        normalized, for the probes ``on_training_data`` (the test images if not given)."""
        self.probes, self.net, self.member_seeds, self.evals = make_probes(settings), net, list(member_seeds), evals
        dtype, device = x_test.dtype, x_test.device
        self.batches: dict[str, ProbeBatch | None] = {}
        for probe in self.probes:  # theta_0's outputs on each probe batch, computed once
            if probe.on_training_data and training_batch is not None:
                x, y = training_batch(probe.examples)
            else:
                x, y = x_test[: probe.examples], y_test[: probe.examples]
            with torch.no_grad(), batch_statistics(net.model):
                self.batches[probe.name] = ProbeBatch(x, y, net.initial_output(x)) if len(x) else None
        self.dims = {record: dims for probe in self.probes for record, dims in probe.dims(net, num_classes).items()}
        self.final = {record for probe in self.probes if probe.final_only for record in probe.records}
        self.records = {
            record: torch.full(
                (
                    len(self.member_seeds),
                    *([] if record in self.final else [evals]),
                    *[d if isinstance(d, int) else len(d) for d in dims.values()],
                ),
                math.nan,
                dtype=dtype,
                device=device,
            )
            for record, dims in self.dims.items()
        }

    def measure(
        self, column: int, step: int, chunks: Sequence[tuple[slice, Weights]], member: torch.Tensor, alive: torch.Tensor
    ) -> None:
        """Measure every probe due at eval ``column`` (after ``step`` updates) on the rows of each chunk;
        ``member``: which member each row is; ``alive``: (rows,) not diverged. BatchNorm on each
        probe batch's statistics, the running statistics untouched (``batch_statistics``)."""
        with batch_statistics(self.net.model):
            for probe in self.probes:
                if probe.final_only and column != self.evals - 1:
                    continue
                for rows, weights in chunks:  # start vectors seeded by (member's seed, step) only
                    row_seeds = [self.member_seeds[m] * 1_000_003 + step for m in member[rows].tolist()]
                    for record, values in probe.measure(
                        self.net, self.batches[probe.name], rows, weights, row_seeds
                    ).items():
                        values = torch.where(
                            per_row(alive[rows], values), values.to(self.records[record].dtype), math.nan
                        )
                        if record in self.final:
                            self.records[record][member[rows]] = values
                        else:
                            self.records[record][member[rows], column] = values

    def curves(self, eval_steps: Sequence[int]) -> dict[str, xr.DataArray]:
        """The records as DataArrays over (member, [eval_step,] *dims), float64 on the CPU."""
        out = {}
        for record, values in self.records.items():
            dims, coords = ["member"] + ([] if record in self.final else ["eval_step"]), {}
            if record not in self.final:
                coords["eval_step"] = list(eval_steps)
            for dim, size in self.dims[record].items():
                dims.append(dim)
                if not isinstance(size, int):
                    coords[dim] = size
            out[record] = xr.DataArray(
                values.detach().to("cpu", torch.float64).numpy(), dims=dims, coords=coords, name=record
            )
        return out
