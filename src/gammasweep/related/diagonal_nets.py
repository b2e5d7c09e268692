"""The diagonal linear net of *SGD with Large Step Sizes Learns Sparse Features* (Andriushchenko et
al. 2023; ``docs/related.md``, A-DLN and A-DLN-GD), a kind of ``gammasweep.related.experiments``.

h(x) = <u * v, x> on a noiseless sparse regression: x ~ N(0, I_d), y = <beta*, x> with beta*
``support``-sparse (Gaussian entries, unit norm; drawn from the data seed). Init u = init_scale,
v = 0; loss (1 / 2B) sum (h(x_i) - y_i)^2 over a batch of B examples drawn with replacement
(``batch_size`` >= ``train``: every step uses the whole training set, i.e. GD).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xarray as xr

from gammasweep.related.descent import Kind, batch_indices, descend
from gammasweep.related.sparsity import diagonal_net_jacobian, jacobian_rank, support_size

DEFAULTS = {
    "dim": 200,
    "train": 80,
    "test": 1000,
    "support": 20,
    "init_scale": 0.1,
    "batch_size": 1,
    "rank_threshold": 1e-15,
    "support_tolerance": 1e-50,
}
ABOUT = {
    "train_loss": ("training loss (1/2n) ||X u*v - y||^2", "1"),
    "test_loss": ("test loss on fresh inputs", "1"),
    "jacobian_rank": ("rank of the Jacobian [X diag(v), X diag(u)]", "1"),
    "support_size": ("||u * v||_0 (coordinates above the tolerance)", "1"),
}


def sparse_regression(dim: int, train: int, test: int, support: int, seed: int) -> tuple[np.ndarray, ...]:
    """(x (train, dim), y (train,), x_test (test, dim), y_test (test,), beta* (dim,)), float64."""
    rng = np.random.default_rng(seed)
    beta, where = np.zeros(dim), rng.choice(dim, support, replace=False)
    beta[where] = rng.standard_normal(support)
    beta /= np.linalg.norm(beta)
    x, x_test = rng.standard_normal((train, dim)), rng.standard_normal((test, dim))
    return x, x @ beta, x_test, x_test @ beta, beta


def simulate(
    settings: dict,
    lr: torch.Tensor,
    seeds: list[int],
    data_seed: int,
    record_steps: np.ndarray,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Train R = len(seeds) diagonal nets with step sizes lr (R, steps); dims (run, step)."""
    s = settings
    x, y, x_test, y_test, beta = sparse_regression(s["dim"], s["train"], s["test"], s["support"], data_seed)
    runs, steps = lr.shape
    batches = batch_indices([np.random.default_rng(seed) for seed in seeds], steps, s["train"], s["batch_size"])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    params = {
        "u": torch.full((runs, s["dim"]), float(s["init_scale"]), dtype=torch.float64),
        "v": torch.zeros((runs, s["dim"]), dtype=torch.float64),
    }

    def batch_loss(p: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        index = batches[:, t]
        prediction = (xt[index] * (p["u"] * p["v"]).unsqueeze(1)).sum(-1)
        return 0.5 * (prediction - yt[index]).square().mean(1)

    def record(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u, v = p["u"].numpy(), p["v"].numpy()
        predictor = u * v
        return {
            "train_loss": torch.from_numpy(0.5 * np.mean((predictor @ x.T - y) ** 2, 1)),
            "test_loss": torch.from_numpy(0.5 * np.mean((predictor @ x_test.T - y_test) ** 2, 1)),
            "jacobian_rank": torch.tensor(
                [jacobian_rank(diagonal_net_jacobian(x, u[r], v[r]), s["rank_threshold"]) for r in range(runs)],
                dtype=torch.float64,
            ),
            "support_size": torch.tensor(
                [support_size(u[r], v[r], s["support_tolerance"]) for r in range(runs)], dtype=torch.float64
            ),
        }

    trajectory = descend(params, batch_loss, lr, record_steps, record, log=log)
    ds = trajectory.dataset(ABOUT)
    ds["beta_star"] = ("coordinate", beta)
    ds["predictor"] = (("run", "coordinate"), (params["u"] * params["v"]).numpy())
    ds["predictor"].attrs.update(long_name="u * v after the last step", units="1")
    return ds


DIAGONAL_NET = Kind(DEFAULTS, simulate)
