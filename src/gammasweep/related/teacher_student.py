"""The ReLU teacher-student nets of *SGD with Large Step Sizes Learns Sparse Features* (Andriushchenko
et al. 2023; ``docs/related.md``, A-TS2 and A-TS3), a kind of ``gammasweep.related.experiments``.

A bias-free fully connected ReLU student h(x) = <a, relu(W_L ... relu(W_1 x))> with hidden widths
``hidden`` learns a bias-free ReLU teacher of hidden widths ``teacher_hidden`` from inputs on the unit
sphere of R^dim. The problem (drawn from the data seed): inputs x ~ N(0, I_dim) / ||.||; teacher
weights N(0, 1) and, if ``teacher_normalized``, its first-layer rows rescaled to unit norm and its
output weights sign(N(0, 1)) = +-1.
Each run's init (from its seed): every student weight N(0, init_scale^2), the readout a = 0 if
``zero_readout``. Loss (1 / B) sum (h(x_i) - y_i)^2 (no 1/2, as in the paper) over a batch of B
examples drawn with replacement (``batch_size`` >= ``train``: GD on the whole training set).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from torch.func import jacrev, vmap

from gammasweep.related.descent import Kind, batch_indices, descend
from gammasweep.related.sparsity import feature_sparsity, jacobian_rank

DEFAULTS = {
    "hidden": [20],
    "teacher_hidden": [3],
    "dim": 2,
    "train": 15,
    "test": 1000,
    "init_scale": 0.5,
    "zero_readout": True,
    "teacher_normalized": True,
    "batch_size": 1,
    "rank_threshold": 1e-4,
    "correlation_threshold": 0.99,
}
ABOUT = {
    "train_loss": ("training loss (1/n) ||h(X) - y||^2", "1"),
    "test_loss": ("test loss on fresh inputs", "1"),
    "jacobian_rank": ("rank of the n x P Jacobian of the outputs", "1"),
    "feature_sparsity": ("feature sparsity of the last hidden layer", "1"),
    "active_fraction": ("fraction of units active on a training input", "1"),
    "activation_rate": ("fraction of active (input, unit) pairs", "1"),
}

Weights = dict[str, torch.Tensor]


def relu_net(weights: Weights, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(outputs (..., n), post-ReLU features of every hidden layer [(..., n, m_l)]) of the bias-free ReLU net
    with weights layer1 .. layerL ((..., m_l, m_{l-1})) and readout ((..., m_L)) on inputs x ((..., n, dim));
    leading run dimensions broadcast."""
    features, h = [], x
    for name in sorted((k for k in weights if k.startswith("layer")), key=lambda k: int(k[5:])):
        h = torch.relu(h @ weights[name].mT)
        features.append(h)
    return (h * weights["readout"].unsqueeze(-2)).sum(-1), features


def draw_weights(widths: list[int], scale: float, rng: np.random.Generator) -> Weights:
    """layer1 .. layerL (m_l x m_{l-1}) and readout (m_L,) of a net of widths [dim, m_1 .. m_L], N(0, scale^2)."""
    weights = {f"layer{k}": scale * rng.standard_normal((widths[k], widths[k - 1])) for k in range(1, len(widths))}
    weights["readout"] = scale * rng.standard_normal(widths[-1])
    return {k: torch.from_numpy(v) for k, v in weights.items()}


def teacher_problem(
    dim: int, teacher_hidden: list[int], train: int, test: int, normalized: bool, seed: int
) -> tuple[Weights, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(teacher weights, x (train, dim), y (train,), x_test (test, dim), y_test (test,)), float64: inputs
    on the unit sphere, the teacher's weights N(0, 1), if ``normalized`` its first-layer rows of unit norm
    and its output weights +-1."""
    rng = np.random.default_rng(seed)
    teacher = draw_weights([dim, *teacher_hidden], 1.0, rng)
    if normalized:
        teacher["layer1"] = teacher["layer1"] / teacher["layer1"].norm(dim=1, keepdim=True)
        teacher["readout"] = torch.sign(teacher["readout"])
    x, x_test = (torch.from_numpy(rng.standard_normal((count, dim))) for count in (train, test))
    x, x_test = x / x.norm(dim=1, keepdim=True), x_test / x_test.norm(dim=1, keepdim=True)
    with torch.no_grad():
        return teacher, x, relu_net(teacher, x)[0], x_test, relu_net(teacher, x_test)[0]


def output_jacobians(weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """The Jacobians (R, n, P) of every run's n outputs w.r.t. all its P parameters; weights are stacked over R."""
    per_run = vmap(jacrev(lambda w: relu_net(w, x)[0]))(weights)  # name -> (R, n, *shape)
    return torch.cat([j.flatten(2) for j in per_run.values()], dim=2)


def simulate(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Train R = len(seeds) students with step sizes lr (R, steps); dims (run, step) and, per hidden layer,
    (run, step, layer): active_fraction (units active on at least one training input) and activation_rate
    (the share of nonzero entries of the layer's n x m feature matrix, the paper's fraction of active ReLUs);
    final state: first_layer (run, neuron, coordinate), readout (run, neuron) for one hidden layer and
    (run, last_neuron) otherwise, and teacher_first_layer (teacher_neuron, coordinate)."""
    s = settings
    teacher, x, y, x_test, y_test = teacher_problem(
        s["dim"], s["teacher_hidden"], s["train"], s["test"], s["teacher_normalized"], data_seed
    )
    runs, steps = lr.shape
    widths = [s["dim"], *s["hidden"]]
    rngs = [np.random.default_rng(seed) for seed in seeds]
    inits = [draw_weights(widths, s["init_scale"], rng) for rng in rngs]
    params = {name: torch.stack([init[name] for init in inits]) for name in inits[0]}
    if s["zero_readout"]:
        params["readout"] = torch.zeros_like(params["readout"])
    batches = batch_indices(rngs, steps, s["train"], s["batch_size"])

    def batch_loss(p: Weights, t: int) -> torch.Tensor:
        index = batches[:, t]
        return (relu_net(p, x[index])[0] - y[index]).square().mean(1)

    def record(p: Weights) -> dict[str, torch.Tensor]:
        weights = {k: v.detach() for k, v in p.items()}
        outputs, features = relu_net(weights, x)
        last = features[-1].numpy()
        jacobians = output_jacobians(weights, x).numpy()
        return {
            "train_loss": (outputs - y).square().mean(1),
            "test_loss": (relu_net(weights, x_test)[0] - y_test).square().mean(1),
            "jacobian_rank": torch.tensor(
                [jacobian_rank(j, s["rank_threshold"]) for j in jacobians], dtype=torch.float64
            ),
            "feature_sparsity": torch.tensor(
                [feature_sparsity(phi, s["correlation_threshold"]) for phi in last], dtype=torch.float64
            ),
            "active_fraction": torch.stack([(phi > 0).any(1).double().mean(1) for phi in features], dim=1),
            "activation_rate": torch.stack([(phi > 0).double().mean((1, 2)) for phi in features], dim=1),
        }

    trajectory = descend(params, batch_loss, lr, record_steps, record, log=log)
    ds = trajectory.dataset(ABOUT, dims={"active_fraction": ("layer",), "activation_rate": ("layer",)})
    ds = ds.assign_coords(layer=np.arange(1, len(s["hidden"]) + 1))
    ds["first_layer"] = (("run", "neuron", "coordinate"), params["layer1"].numpy())
    ds["first_layer"].attrs.update(long_name="student's first-layer weights after the last step", units="1")
    ds["readout"] = (("run", "neuron" if len(s["hidden"]) == 1 else "last_neuron"), params["readout"].numpy())
    ds["readout"].attrs.update(long_name="student's output weights after the last step", units="1")
    ds["teacher_first_layer"] = (("teacher_neuron", "coordinate"), teacher["layer1"].numpy())
    ds["teacher_first_layer"].attrs.update(long_name="teacher's first-layer neurons", units="1")
    ds["teacher_readout"] = (
        ("teacher_neuron" if len(s["teacher_hidden"]) == 1 else "teacher_last_neuron"),
        teacher["readout"].numpy(),
    )
    ds["teacher_readout"].attrs.update(long_name="teacher's output weights", units="1")
    return ds


RELU_TEACHER_STUDENT = Kind(DEFAULTS, simulate)
