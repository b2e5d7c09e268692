"""Nonlinear nets of *Parameter Symmetry and Noise Equilibrium of SGD* (Ziyin et al., NeurIPS 2024;
``docs/related.md``, B-6, B-7, B-9): two kinds of ``gammasweep.related.experiments``.

``autoencoder`` (B-6, B-9): f(x) = U act(W x), W (d, d0), U (d0, d), on n fixed inputs x ~
N(0, input_var I_d0) and targets y = x + eps with fresh noise eps ~ N(0, Sigma_eps), Sigma_eps = diag(noise_first,
noise_rest, ...), at every draw (a fixed noise sample would be memorized by the net, not the
population the theory is about). SGD: loss ||f(x) - y||^2 (no 1/2) averaged over a batch of inputs
drawn with replacement, each with a new eps; batch_size >= train: GD on the expected loss
mean_n ||f(x_n) - x_n||^2 + Tr Sigma_eps (its exact gradient).
Init W ~ N(0, init_w^2 / d0), U ~ N(0, init_u^2 / d) entrywise (imbalanced on purpose: gradient
flow of a linear net keeps W W^T - U^T U, SGD's noise moves it to the noise equilibrium).

The noise matrices generalize ``gammasweep.related.noether`` with the backpropagated error: with h =
act(W x), r = f(x) - y and delta = act'(W x) * (U^T r) (the error at the hidden layer), a sample's
gradients are 2 r h^T (for U) and 2 delta x^T (for W), and the two d x d matrices compared are
  input side   E[||r||^2 h h^T]       (= W Gamma_W W^T for the identity activation),
  output side  E[||x||^2 delta delta^T] (= U^T Gamma_U U for the identity activation),
expectations over the n inputs and, exactly, over eps. For a positively homogeneous activation (relu, leaky relu) the
per-neuron rescaling (w_i, u_i) -> (c w_i, u_i / c) is a symmetry and their diagonals are the
noise terms of the per-neuron charges ||u_i||^2 - ||w_i||^2: one step changes charge i by
eta^2 (||g_u_i||^2 - ||g_w_i||^2), whose batch-1 mean is 4 (input - output)_ii. The off-diagonal
entries balance only with the linear net's full GL(d) symmetry; tanh and swish have no continuous
symmetry (tanh is only approximately linear near 0). The global-minimum form of the linear net's
equilibrium (r = -eps): W Sigma_x_bar W^T = U^T Sigma_eps_bar U, Sigma_bar = Sigma / Tr Sigma, with
Sigma_x = X^T X / n of the n inputs and the noise's Sigma_eps.

``scale_invariant`` (B-7): a tanh net whose every weight matrix enters only through its direction:
h_0 = x, h_l = tanh(N(W_l) h_(l-1)) for l < L, f(x) = N(W_L) h_(L-1), N(W) = sqrt(d_out) W / ||W||_F
(rows of unit RMS norm), on linear Gaussian data x ~ N(0, I_d0), y = <beta*, x> + noise xi (beta*
unit norm). The loss is invariant under W_l -> c W_l, so its gradient is orthogonal to W_l: gradient
flow keeps ||W_l||, a step of size eta raises ||W_l||^2 by exactly eta^2 ||g_l||^2 -- for GD
||grad L||^2 -> 0, for SGD the batch noise keeps it positive, so the norm grows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from torch.nn import functional

from gammasweep.related.descent import Kind, batch_indices, descend
from gammasweep.related.noether import noether_charge, relative_gap

AUTOENCODER_DEFAULTS = {
    "dim": 40,
    "width": 40,
    "train": 1000,
    "batch_size": 10,
    "input_var": 1.0,
    "activation": "tanh",
    "leaky_slope": 0.1,
    "noise_first": 5.0,
    "noise_rest": 1.0,
    "init_w": 1.0,
    "init_u": 0.1,
}
SCALE_INVARIANT_DEFAULTS = {
    "dim": 20,
    "width": 32,
    "depth": 3,
    "train": 256,
    "batch_size": 8,
    "noise": 0.5,
    "init_scale": 1.0,
}
ACTIVATIONS = ("tanh", "relu", "leaky_relu", "swish", "linear")
AUTOENCODER_ABOUT = {
    "loss": ("expected loss E||f(x) - y||^2", "1"),
    "noether_charge": ("Noether charge ||U||^2 - ||W||^2", "1"),
    "covariance_gap": ("||W Sx W^T - U^T Se U|| / ||U^T Se U|| (normalized Sigma)", "1"),
    "noise_gap": ("||W Gw W^T - U^T Gu U|| / ||U^T Gu U|| (backpropagated)", "1"),
}
SCALE_INVARIANT_ABOUT = {
    "loss": ("training loss E(f(x) - y)^2", "1"),
    "param_norm": ("parameter norm (all layers)", "1"),
    "layer_norm": ("parameter norm per layer ||W_l||_F", "1"),
}


def activation(name: str, leaky_slope: float = 0.1) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise activation ``name`` (one of ``ACTIVATIONS``)."""
    functions = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "swish": functional.silu,
        "linear": lambda z: z,
        "leaky_relu": lambda z: functional.leaky_relu(z, leaky_slope),
    }
    if name not in functions:
        raise ValueError(f"activation {name!r}: use one of {ACTIVATIONS}")
    return functions[name]


def noise_variances(dim: int, noise_first: float, noise_rest: float) -> np.ndarray:
    """The diagonal of Sigma_eps, (dim,): (noise_first, noise_rest, ..., noise_rest)."""
    return np.r_[noise_first, np.full(dim - 1, noise_rest)]


def hidden_noise_matrices(
    u: torch.Tensor,
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    act: Callable[[torch.Tensor], torch.Tensor],
    sigma_eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[||r||^2 h h^T], E[||x||^2 delta delta^T]), each (R, d, d), of R nets f = U act(W x).

    u (R, d0, d), w (R, d, d0), x (n, d0), y (n, d0); h = act(W x), r = U h - y - eps, delta =
    act'(W x) * U^T r; means over the n rows and over eps ~ (0, sigma_eps) independent of x (d0, d0;
    None: no noise, y are the sample targets). For act = identity: (W Gamma_W W^T, U^T Gamma_U U).
    """
    with torch.enable_grad():
        z = torch.einsum("rdi,ni->rnd", w, x).detach().requires_grad_()
        h = act(z)
        (slope,) = torch.autograd.grad(h.sum(), z)
    h = h.detach()
    r = torch.einsum("rod,rnd->rno", u, h) - y
    delta = slope * torch.einsum("rod,rno->rnd", u, r)
    n, size = len(x), x.square().sum(-1)
    input_side = torch.einsum("rn,rni,rnj->rij", r.square().sum(-1), h, h) / n
    output_side = torch.einsum("n,rni,rnj->rij", size, delta, delta) / n
    if sigma_eps is not None:  # E_eps adds Tr Sigma_eps h h^T and D U^T Sigma_eps U D, D = diag(act'(W x))
        input_side = input_side + torch.trace(sigma_eps) * torch.einsum("rni,rnj->rij", h, h) / n
        u_sigma_u = u.transpose(1, 2) @ sigma_eps @ u
        output_side = output_side + torch.einsum("n,rni,rij,rnj->rij", size, slope, u_sigma_u, slope) / n
    return input_side, output_side


def covariance_matrices(
    u: torch.Tensor, w: torch.Tensor, sigma_x: torch.Tensor, sigma_eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W Sigma_x_bar W^T, U^T Sigma_eps_bar U), each (R, d, d): the linear net's global-minimum balance."""
    sx, se = sigma_x / torch.trace(sigma_x), sigma_eps / torch.trace(sigma_eps)
    return w @ sx @ w.transpose(1, 2), u.transpose(1, 2) @ se @ u


def simulate_autoencoder(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Train R = len(seeds) autoencoders with step sizes lr (R, steps); dims (run, step) and final
    matrices (run, row, col) over the hidden units."""
    s = settings
    x = torch.from_numpy(np.random.default_rng(data_seed).standard_normal((s["train"], s["dim"]))) * np.sqrt(
        s["input_var"]
    )
    noise_scale = torch.from_numpy(np.sqrt(noise_variances(s["dim"], s["noise_first"], s["noise_rest"])))
    sigma_x, sigma_eps = x.T @ x / len(x), torch.diag(noise_scale.square())
    act = activation(s["activation"], s["leaky_slope"])
    runs, steps = lr.shape
    batches = batch_indices([np.random.default_rng(seed) for seed in seeds], steps, s["train"], s["batch_size"])
    gd = s["batch_size"] >= s["train"]
    noise_draws = [torch.Generator().manual_seed(seed) for seed in seeds]
    inits = [np.random.default_rng([seed, 1]) for seed in seeds]
    params = {
        "w": torch.from_numpy(np.stack([g.standard_normal((s["width"], s["dim"])) for g in inits]))
        * s["init_w"]
        / np.sqrt(s["dim"]),
        "u": torch.from_numpy(np.stack([g.standard_normal((s["dim"], s["width"])) for g in inits]))
        * s["init_u"]
        / np.sqrt(s["width"]),
    }

    def predict(p: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """(R, B, d0) outputs for inputs (R, B, d0) or (B, d0)."""
        return act(inputs @ p["w"].transpose(1, 2)) @ p["u"].transpose(1, 2)

    def batch_loss(p: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        inputs = x[batches[:, t]]
        if gd:
            return (predict(p, inputs) - inputs).square().sum(-1).mean(1) + noise_scale.square().sum()
        eps = torch.stack([torch.randn(inputs.shape[1:], generator=g, dtype=torch.float64) for g in noise_draws])
        return (predict(p, inputs) - inputs - eps * noise_scale).square().sum(-1).mean(1)

    def record(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u, w = p["u"].detach(), p["w"].detach()
        input_side, output_side = hidden_noise_matrices(u, w, x, x, act, sigma_eps)
        return {
            "loss": (predict(p, x) - x).square().sum(-1).mean(1) + torch.trace(sigma_eps),
            "noether_charge": torch.tensor([noether_charge(u[r].numpy(), w[r].numpy()) for r in range(runs)]),
            "covariance_gap": relative_gap(*covariance_matrices(u, w, sigma_x, sigma_eps)),
            "noise_gap": relative_gap(input_side, output_side),
        }

    ds = descend(params, batch_loss, lr, record_steps, record, log=log).dataset(AUTOENCODER_ABOUT)
    u, w = params["u"], params["w"]
    w_sigma_w, u_sigma_u = covariance_matrices(u, w, sigma_x, sigma_eps)
    w_gamma_w, u_gamma_u = hidden_noise_matrices(u, w, x, x, act, sigma_eps)
    finals = {
        "w_sigma_w": (w_sigma_w, "W Sigma_x_bar W^T after the last step"),
        "u_sigma_u": (u_sigma_u, "U^T Sigma_eps_bar U after the last step"),
        "w_gamma_w": (w_gamma_w, "E[||r||^2 h h^T] (W Gamma_W W^T) after the last step"),
        "u_gamma_u": (u_gamma_u, "E[||x||^2 delta delta^T] (U^T Gamma_U U) after the last step"),
    }
    for name, (value, long_name) in finals.items():
        ds[name] = (("run", "row", "col"), value.numpy())
        ds[name].attrs.update(long_name=long_name, units="1")
    return ds


def normalized(weight: torch.Tensor) -> torch.Tensor:
    """sqrt(d_out) W / ||W||_F for stacked W (R, d_out, d_in): depends on W's direction only."""
    return weight * np.sqrt(weight.shape[1]) / torch.linalg.matrix_norm(weight).view(-1, 1, 1)


def scale_invariant_forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(R, B) outputs of the scale-invariant tanh nets for inputs x (R, B, d0) or (B, d0)."""
    h = x
    for weight in weights[:-1]:
        h = torch.tanh(h @ normalized(weight).transpose(1, 2))
    return (h @ normalized(weights[-1]).transpose(1, 2)).squeeze(-1)


def simulate_scale_invariant(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Train R = len(seeds) scale-invariant tanh nets (``depth`` weight matrices: d0 -> width ... -> 1)
    with step sizes lr (R, steps); dims (run, step) and (run, step, layer)."""
    s = settings
    rng = np.random.default_rng(data_seed)
    beta = rng.standard_normal(s["dim"])
    beta /= np.linalg.norm(beta)
    x = rng.standard_normal((s["train"], s["dim"]))
    y = torch.from_numpy(x @ beta + s["noise"] * rng.standard_normal(s["train"]))
    x = torch.from_numpy(x)
    steps = lr.shape[1]
    batches = batch_indices([np.random.default_rng(seed) for seed in seeds], steps, s["train"], s["batch_size"])
    sizes = [s["dim"], *[s["width"]] * (s["depth"] - 1), 1]
    inits = [np.random.default_rng([seed, 1]) for seed in seeds]
    params = {
        f"layer_{k + 1}": torch.from_numpy(np.stack([g.standard_normal((sizes[k + 1], sizes[k])) for g in inits]))
        * s["init_scale"]
        / np.sqrt(sizes[k])
        for k in range(s["depth"])
    }

    def batch_loss(p: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        index = batches[:, t]
        return (scale_invariant_forward(list(p.values()), x[index]) - y[index]).square().mean(1)

    def record(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        norms = torch.stack([torch.linalg.matrix_norm(weight) for weight in p.values()], 1)
        return {
            "loss": (scale_invariant_forward(list(p.values()), x) - y).square().mean(1),
            "param_norm": norms.square().sum(1).sqrt(),
            "layer_norm": norms,
        }

    trajectory = descend(params, batch_loss, lr, record_steps, record, log=log)
    return trajectory.dataset(SCALE_INVARIANT_ABOUT, {"layer_norm": ("layer",)}).assign_coords(
        layer=np.arange(1, s["depth"] + 1)
    )


AUTOENCODER = Kind(AUTOENCODER_DEFAULTS, simulate_autoencoder)
SCALE_INVARIANT = Kind(SCALE_INVARIANT_DEFAULTS, simulate_scale_invariant)
