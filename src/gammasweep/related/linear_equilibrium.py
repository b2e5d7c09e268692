"""Two-layer linear nets of *Parameter Symmetry and Noise Equilibrium of SGD* (Ziyin et al. 2024;
``docs/related.md``, B-2, B-3, B-8 and B-4): two kinds of ``gammasweep.related.experiments``.

f(x) = U W x (W: width x d0, U: d2 x width), loss ||U W x - y||^2 (no 1/2) on y = A x + noise_std eps,
x ~ N(0, diag(input_variance)), eps ~ N(0, I). Training is *online*: every SGD step draws a fresh
batch of ``batch_size`` examples from the run's seed; ``optimizer: gd`` descends the exact expected
loss E||U W x - y||^2 = ||(U W - A) Sigma_x^(1/2)||_F^2 + d2 noise_std^2 instead (no sampling at all),
so GD conserves U^T U - W W^T up to the O(eta^2) of a finite step. Every noise quantity is the exact
Gaussian expectation (``noise_matrices``), not a sample estimate, so the equilibrium gap of SGD can
fall to the level its own fluctuations allow instead of a sampling floor.

* ``linear_net`` (B-2, B-3, B-8): autoencoding, A = I (d0 = d2 = ``dim``); the first half of the
  inputs has variance ``phi_x``, the second half 2 - phi_x (B-8; phi_x = 1 is isotropic, B-2).
* ``matrix_factorization`` (B-4): A = a b^T, a rank-1 target of Frobenius norm ``target_norm``
  (a, b unit Gaussian directions from the data seed), factorized as U W with hidden ``width``
  (1: a rank-1 factorization), x ~ N(0, I).

Initialization (both): ``kaiming`` entries N(0, 2 / fan_in), ``xavier`` N(0, 2 / (fan_in + fan_out)),
times ``init_scale``; drawn from the run's seed (so SGD and GD variants of one seed start equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from gammasweep.related.descent import Kind, descend
from gammasweep.related.noether import hessian_trace, relative_gap

COMMON = {
    "width": 40,
    "noise_std": 1.0,
    "batch_size": 100,
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "init": "xavier",
    "init_scale": 1.0,
}
LINEAR_NET_DEFAULTS = {**COMMON, "dim": 30, "phi_x": 1.0, "delta_entries": []}
MATRIX_FACTORIZATION_DEFAULTS = {
    **COMMON,
    "width": 1,
    "input_dim": 30,
    "output_dim": 30,
    "target_norm": 1.0,
    "batch_size": 1,
    "init": "kaiming",
}
ABOUT = {
    "loss": ("expected loss E||UWx - y||^2", "1"),
    "noether_charge": ("Noether charge ||U||^2 - ||W||^2", "1"),
    "norm_ratio": ("norm balance ||U||^2 / ||W||^2", "1"),
    "equilibrium_gap": ("equilibrium gap ||U'G_U U - W G_W W'|| / ||U'G_U U||", "1"),
    "theory_gap": ("global-minimum theory gap ||W S_x W' - U'S_e U|| / ||U'S_e U||", "1"),
    "hessian_trace": ("Hessian trace S = d2 ||W Sx^1/2||^2 + ||U||^2 Tr Sx", "1"),
    "delta": ("entries of Delta = U'G_U U - W G_W W'", "1"),
}
CHUNK = 64  # online batches are drawn this many steps at a time


@dataclass(frozen=True)
class LinearProblem:
    """y = teacher x + noise_std eps: teacher (d2, d0), input_variance (d0,) the diagonal of Sigma_x."""

    teacher: np.ndarray
    input_variance: np.ndarray
    noise_std: float


def block_variances(dim: int, phi_x: float) -> np.ndarray:
    """Input variances (dim,): phi_x on the first half of the coordinates, 2 - phi_x on the rest (B-8)."""
    return np.where(np.arange(dim) < dim // 2, phi_x, 2.0 - phi_x)


def rank_one_teacher(output_dim: int, input_dim: int, norm: float, seed: int) -> np.ndarray:
    """A = norm a b^T (output_dim, input_dim), a and b uniformly random unit vectors."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(output_dim), rng.standard_normal(input_dim)
    return norm * np.outer(a / np.linalg.norm(a), b / np.linalg.norm(b))


def initial_weights(
    init: str, scale: float, width: int, d0: int, d2: int, generators: list[torch.Generator]
) -> dict[str, torch.Tensor]:
    """{"w": (R, width, d0), "u": (R, d2, width)}: kaiming N(0, 2/fan_in) or xavier N(0, 2/(fan_in+fan_out))."""

    def std(fan_in: int, fan_out: int) -> float:
        return scale * float(np.sqrt(2.0 / fan_in if init == "kaiming" else 2.0 / (fan_in + fan_out)))

    if init not in ("kaiming", "xavier"):
        raise ValueError(f"init {init!r}: use kaiming or xavier")
    w = torch.stack([torch.randn(width, d0, generator=g, dtype=torch.float64) for g in generators])
    u = torch.stack([torch.randn(d2, width, generator=g, dtype=torch.float64) for g in generators])
    return {"w": w * std(d0, width), "u": u * std(width, d2)}


def noise_matrices(u: torch.Tensor, w: torch.Tensor, problem: LinearProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Gamma_W = E[||r||^2 x x^T] (R, d0, d0) and Gamma_U = E[||x||^2 r r^T] (R, d2, d2) for Gaussian x
    and eps, r = U W x - y = M x - noise_std eps, M = U W - A; the expectation that ``noether.noise_matrices``
    estimates from a sample (Isserlis: E[(x'Bx) x x'] = Tr(B Sigma) Sigma + 2 Sigma B Sigma)."""
    v = torch.from_numpy(problem.input_variance)
    m = u @ w - torch.from_numpy(problem.teacher)
    d2, noise_var = m.shape[1], problem.noise_std**2
    mtm = m.transpose(1, 2) @ m
    trace = (mtm.diagonal(dim1=1, dim2=2) * v).sum(-1) + d2 * noise_var  # E||r||^2 (R,)
    gamma_w = trace[:, None, None] * torch.diag(v) + 2 * v[:, None] * mtm * v[None, :]
    gamma_u = (m * (v.sum() * v + 2 * v**2)) @ m.transpose(1, 2) + v.sum() * noise_var * torch.eye(d2, dtype=v.dtype)
    return gamma_w, gamma_u


def equilibrium_delta(
    u: torch.Tensor, w: torch.Tensor, gamma_w: torch.Tensor, gamma_u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Delta = U^T Gamma_U U - W Gamma_W W^T, U^T Gamma_U U), both (R, width, width)."""
    left = u.transpose(1, 2) @ gamma_u @ u
    return left - w @ gamma_w @ w.transpose(1, 2), left


def expected_loss(u: torch.Tensor, w: torch.Tensor, problem: LinearProblem) -> torch.Tensor:
    """E||U W x - y||^2 per run (R,): ||(U W - A) Sigma_x^(1/2)||_F^2 + d2 noise_std^2."""
    m = u @ w - torch.from_numpy(problem.teacher)
    return (m**2 * torch.from_numpy(problem.input_variance)).sum((1, 2)) + m.shape[1] * problem.noise_std**2


def equilibrium_theory(input_variance: np.ndarray) -> dict[str, float]:
    """Autoencoding (A = I, Sigma_eps ~ I): the noise equilibrium at the global minimum, U W = I and
    W Sigma_x W^T / Tr Sigma_x = U^T U / d2, is W = c^(1/4) O Sigma_x^(-1/4), U = c^(-1/4) Sigma_x^(1/4) O^T
    (O^T O = I, c = Tr Sigma_x / d2); the balanced minimum that weight decay picks (U^T U = W W^T) is W = O,
    U = O^T. Their norm balance ||U||^2 / ||W||^2 and Hessian trace S."""
    v, d = input_variance, len(input_variance)
    c, root = v.sum() / d, np.sqrt(v).sum()
    u_norm, w_norm = root / np.sqrt(c), np.sqrt(c) * (1 / np.sqrt(v)).sum()
    return {
        "equilibrium_norm_ratio": u_norm / w_norm,
        "equilibrium_hessian_trace": d * np.sqrt(c) * root + u_norm * v.sum(),
        "balanced_norm_ratio": 1.0,
        "balanced_hessian_trace": 2 * d * v.sum(),
    }


def train(
    problem: LinearProblem,
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    record_steps: np.ndarray,
    log: Callable[[str], None],
    delta_entries: list[list[int]] = (),
) -> xr.Dataset:
    """(S)GD on R = len(seeds) linear nets U W of the problem; records over (run, step[, entry]) and the
    final spectra of W Sigma_x W^T / Tr Sigma_x and U^T Sigma_eps U / Tr Sigma_eps over (run, mode)."""
    s = settings
    if s["optimizer"] not in ("sgd", "gd"):
        raise ValueError(f"optimizer {s['optimizer']!r}: use sgd or gd")
    d2, d0 = problem.teacher.shape
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    params = initial_weights(s["init"], s["init_scale"], s["width"], d0, d2, generators)
    scale, teacher = torch.from_numpy(np.sqrt(problem.input_variance)), torch.from_numpy(problem.teacher)
    batches: dict[str, torch.Tensor] = {}

    def batch_loss(p: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        if s["optimizer"] == "gd":
            return expected_loss(p["u"], p["w"], problem)
        if t % CHUNK == 0:  # fresh examples (R, CHUNK, batch, .) from each run's own generator
            shape = (CHUNK, s["batch_size"])
            batches["x"] = torch.stack([torch.randn(*shape, d0, generator=g, dtype=torch.float64) for g in generators])
            batches["x"] *= scale
            noise = torch.stack([torch.randn(*shape, d2, generator=g, dtype=torch.float64) for g in generators])
            batches["y"] = batches["x"] @ teacher.T + problem.noise_std * noise
        x, y = batches["x"][:, t % CHUNK], batches["y"][:, t % CHUNK]
        return (x @ (p["u"] @ p["w"]).transpose(1, 2) - y).square().sum(-1).mean(-1)

    entries = torch.as_tensor(np.asarray(delta_entries, dtype=np.int64).reshape(-1, 2))

    def record(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u, w = p["u"], p["w"]
        delta, left = equilibrium_delta(u, w, *noise_matrices(u, w, problem))
        sigma_x = torch.diag(torch.from_numpy(problem.input_variance / problem.input_variance.sum()))
        theory_left = u.transpose(1, 2) @ u / d2  # U^T Sigma_eps U / Tr Sigma_eps, Sigma_eps = noise_std^2 I
        u_norm, w_norm = (u**2).sum((1, 2)), (w**2).sum((1, 2))
        values = {
            "loss": expected_loss(u, w, problem),
            "noether_charge": u_norm - w_norm,
            "norm_ratio": u_norm / w_norm,
            "equilibrium_gap": torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(left),
            "theory_gap": relative_gap(w @ sigma_x @ w.transpose(1, 2), theory_left),
            "hessian_trace": hessian_trace(u, w, torch.diag(torch.from_numpy(problem.input_variance))),
        }
        if len(entries):
            values["delta"] = delta[:, entries[:, 0], entries[:, 1]]
        return values

    trajectory = descend(params, batch_loss, lr, record_steps, record, weight_decay=float(s["weight_decay"]), log=log)
    ds = trajectory.dataset({k: v for k, v in ABOUT.items() if k in trajectory.records}, {"delta": ("entry",)})
    if len(entries):
        ds = ds.assign_coords(entry=[f"[{i},{j}]" for i, j in entries.tolist()])
    alive = torch.from_numpy(trajectory.diverged_step < 0).view(-1, 1, 1)
    u, w = torch.where(alive, params["u"], 0.0), torch.where(alive, params["w"], 0.0)  # diverged runs: NaN below
    root_x = torch.from_numpy(np.sqrt(problem.input_variance / problem.input_variance.sum()))
    modes = min(d0, d2, s["width"])
    # Nonzero eigenvalues of W Sbar_x W^T and U^T Sbar_e U, from the small Gram matrices, largest first.
    spectra = {
        "w_sigma_w_spectrum": torch.linalg.eigvalsh(root_x[:, None] * (w.transpose(1, 2) @ w) * root_x),
        "u_sigma_u_spectrum": torch.linalg.eigvalsh(u @ u.transpose(1, 2) / d2),
    }
    for name, values in spectra.items():
        ds[name] = (("run", "mode"), torch.where(alive[:, 0], values.flip(-1)[:, :modes], torch.nan).numpy())
    for name, matrix in (
        ("w_sigma_w_spectrum", "W Sigma_x W^T / Tr Sigma_x"),
        ("u_sigma_u_spectrum", "U^T Sigma_eps U / Tr Sigma_eps"),
    ):
        ds[name].attrs.update(long_name=f"eigenvalues of {matrix} after the last step", units="1")
    ds["weight_decay"] = ("run", np.full(len(seeds), float(s["weight_decay"])))
    ds["batch_size"] = ("run", np.full(len(seeds), float(s["batch_size"]) if s["optimizer"] == "sgd" else np.inf))
    ds["batch_size"].attrs.update(long_name="examples per step (inf: GD on the expected loss)", units="1")
    return ds


def simulate_linear_net(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Autoencoding linear nets (kind ``linear_net``); dims (run, step[, entry]) and the final state (run, mode),
    with the noise-equilibrium theory of the problem per run. data_seed is unused: the data are online."""
    s = settings
    problem = LinearProblem(np.eye(s["dim"]), block_variances(s["dim"], s["phi_x"]), float(s["noise_std"]))
    ds = train(problem, s, lr, seeds, record_steps, log, s["delta_entries"])
    ds["phi_x"] = ("run", np.full(len(seeds), float(s["phi_x"])))
    ds["phi_x"].attrs.update(long_name="input variance phi_x of the first half", units="1")
    for name, value in equilibrium_theory(problem.input_variance).items():
        ds[name] = ("run", np.full(len(seeds), value))
        ds[name].attrs.update(long_name=name.replace("_", " ") + " (theory)", units="1")
    return ds


def simulate_matrix_factorization(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Rank-1 matrix factorization (kind ``matrix_factorization``); dims (run, step) and the final state (run, mode)."""
    s = settings
    teacher = rank_one_teacher(s["output_dim"], s["input_dim"], s["target_norm"], data_seed)
    return train(
        LinearProblem(teacher, np.ones(s["input_dim"]), float(s["noise_std"])), s, lr, seeds, record_steps, log
    )


LINEAR_NET = Kind(LINEAR_NET_DEFAULTS, simulate_linear_net)
MATRIX_FACTORIZATION = Kind(MATRIX_FACTORIZATION_DEFAULTS, simulate_matrix_factorization)
