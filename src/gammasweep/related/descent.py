"""(Stochastic) gradient descent on R small networks at once: the loop of the related papers'
experiments (``gammasweep.related.experiments``).

Every parameter tensor is stacked along a leading run dimension R, each run has its own step size
at every step (its schedule, ``gammasweep.sweep.schedules``) and draws its own batches (the caller's
``batch_loss``). Runs never mix: the losses are summed only to get every run's gradient in one
backward pass. A run whose loss turns non-finite or exceeds the cap is diverged from that step
on: recorded (``diverged_step``), its weights frozen, its later records NaN. Divergence is a
result, not an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Kind:
    """A kind of related experiment (``gammasweep.related.experiments.KINDS``): the defaults of its settings and
    ``simulate(settings, lr, seeds, data_seed, record_steps, log) -> xr.Dataset`` over (run, step, ...)."""

    DEFAULTS: dict
    simulate: Callable[..., xr.Dataset]


@dataclass(frozen=True)
class Trajectory:
    """Records of R runs: records[name] is (R, len(record_steps), ...); diverged_step (R,) is -1 for runs
    that did not diverge."""

    record_steps: np.ndarray
    records: dict[str, np.ndarray]
    diverged_step: np.ndarray

    def dataset(self, about: dict[str, tuple[str, str]], dims: dict[str, tuple[str, ...]] | None = None) -> xr.Dataset:
        """The records as variables over (run, step, *dims[name]) with about[name] = (long_name, units),
        and ``diverged_step`` (run)."""
        dims = dims or {}
        variables = {name: (("run", "step", *dims.get(name, ())), value) for name, value in self.records.items()}
        ds = xr.Dataset(variables, coords={"step": self.record_steps})
        for name, (long_name, units) in about.items():
            ds[name].attrs.update(long_name=long_name, units=units)
        ds["diverged_step"] = ("run", self.diverged_step)
        ds["diverged_step"].attrs.update(long_name="step at which the run diverged (-1: never)", units="1")
        return ds


def descend(
    params: Params,
    batch_loss: Callable[[Params, int], torch.Tensor],
    lr: torch.Tensor,
    record_steps: np.ndarray,
    record: Callable[[Params], dict[str, torch.Tensor]],
    weight_decay: torch.Tensor | float = 0.0,
    divergence_cap: float = 1e12,
    log: Callable[[str], None] = print,
) -> Trajectory:
    """Run ``lr.shape[1]`` steps of p <- p - lr[:, t] (dL_t/dp + weight_decay p) on every run.

    params: name -> (R, ...) float64 tensors (updated in place). batch_loss(params, t): the (R,)
    losses of step t's batches. lr: (R, steps) step sizes. record(params): name -> (R, ...)
    measurements, taken before the update of each step in ``record_steps`` (a step equal to
    ``steps`` means after the last update). weight_decay: a float or (R,) per run.
    """
    runs, steps = lr.shape
    weights = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    decay = torch.as_tensor(weight_decay, dtype=lr.dtype).expand(runs)
    alive = torch.ones(runs, dtype=torch.bool)
    diverged_step = torch.full((runs,), -1, dtype=torch.int64)
    taken: dict[str, list[torch.Tensor]] = {}
    at = {int(s): i for i, s in enumerate(record_steps)}
    report_every, start = max(steps // 10, 1), time.perf_counter()

    def measure() -> None:
        with torch.no_grad():
            for name, value in record(weights).items():
                mask = alive.view(-1, *[1] * (value.dim() - 1))
                taken.setdefault(name, []).append(torch.where(mask, value.to(torch.float64), torch.nan))

    every_run_alive, no_decay = True, not bool(decay.any())  # the common case takes fewer tensor ops per step
    for t in range(steps):
        if t in at:
            measure()
        loss = batch_loss(weights, t)
        ok = torch.isfinite(loss) & (loss <= divergence_cap)
        every_run_alive = every_run_alive and bool(ok.all())
        if not every_run_alive:
            diverged_step = torch.where(alive & ~ok, t, diverged_step)
            alive = alive & ok
        total = loss.sum() if every_run_alive else torch.where(alive, loss, 0.0).sum()
        grads = torch.autograd.grad(total, list(weights.values()))
        with torch.no_grad():
            for w, g in zip(weights.values(), grads):
                shape = (-1, *[1] * (w.dim() - 1))
                update = lr[:, t].view(shape) * (g if no_decay else g + decay.view(shape) * w)
                w -= update if every_run_alive else torch.where(alive.view(shape), update, 0.0)  # (NaN) never lands
        if (t + 1) % report_every == 0:
            log(
                f"step {t + 1}/{steps}: alive {int(alive.sum())}/{runs}, batch loss median "
                f"{float(loss.detach()[alive].median()) if alive.any() else float('nan'):.4g}; "
                f"{(t + 1) / (time.perf_counter() - start):.0f} steps/s"
            )
    if steps in at:
        measure()
    for name, w in weights.items():
        params[name] = w.detach()
    return Trajectory(
        record_steps=np.asarray(record_steps),
        records={k: torch.stack(v, 1).numpy() for k, v in taken.items()},
        diverged_step=diverged_step.numpy(),
    )


def record_schedule(steps: int, points: int) -> np.ndarray:
    """About ``points`` evenly spaced record steps 0 .. steps (both ends included), as integers."""
    return np.unique(np.linspace(0, steps, max(points, 2)).round().astype(np.int64))


def batch_indices(generators: Sequence[np.random.Generator], steps: int, train: int, batch_size: int) -> torch.Tensor:
    """(R, steps, B) example indices: B draws with replacement per step from each run's generator;
    ``batch_size >= train``: every example at every step (GD), B = train."""
    if batch_size >= train:
        return torch.arange(train).expand(len(generators), steps, -1)
    return torch.from_numpy(np.stack([rng.integers(0, train, (steps, batch_size)) for rng in generators]))
