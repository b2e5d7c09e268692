"""The online trainer: E ensemble members of one model trained together with plain SGD.

Members are stacked along a leading dimension and trained with ``torch.func.vmap``; each member
has its own seed, gamma and eta, so an ensemble of seeds (one cell) and, later, a pack of cells
are the same computation. Divergence is a result: a member whose loss turns non-finite or exceeds
the cap is frozen and recorded as diverged at that step; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from gammasweep.data import OnlineStream, normalize
from gammasweep.losses import LOSSES
from gammasweep.models import build_model
from gammasweep.parameterization import centered_output, learning_rate


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-member values (E,) to broadcast against a stacked tensor (E, ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def eval_steps(total_steps: int) -> np.ndarray:
    """Test-evaluation steps 0, 1, 2, 5, 10, 20, 50, ... up to and including ``total_steps``."""
    steps = {0, total_steps}
    decade = 1
    while decade <= total_steps:
        steps.update(m * decade for m in (1, 2, 5) if m * decade <= total_steps)
        decade *= 10
    return np.array(sorted(steps), dtype=np.int64)


def record_steps(total_steps: int, count: int) -> np.ndarray:
    """About ``count`` log-spaced training steps in [0, total_steps - 1] at which the loss is recorded."""
    grid = np.round(np.geomspace(1, max(total_steps - 1, 1), max(count - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [total_steps - 1]]))


@dataclass(frozen=True)
class Members:
    """Per-member settings, each of length E."""

    seeds: list[int]
    gammas: list[float]
    etas: list[float]


@dataclass
class Curves:
    """What a training run records. E members, R record steps, V evaluation steps."""

    step: np.ndarray  # (R,) training steps of the train-loss records
    train_loss: np.ndarray  # (E, R) mean batch loss over the steps since the previous record
    train_loss_at_step: np.ndarray  # (E, R) the batch loss at exactly that step
    eval_step: np.ndarray  # (V,) number of SGD updates done when the test set was evaluated
    test_loss: np.ndarray  # (E, V)
    test_accuracy: np.ndarray  # (E, V) fraction in [0, 1]
    diverged: np.ndarray  # (E,) bool
    diverged_step: np.ndarray  # (E,) first step whose loss was non-finite or above the cap; -1 if none


@dataclass(frozen=True)
class Setup:
    """The resolved settings of a run (see ``config/schema.yaml`` for the meaning of each)."""

    model: dict
    input_shape: tuple[int, int, int]
    num_classes: int
    loss: str
    steps: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: torch.dtype
    device: torch.device
    divergence_cap: float
    record_points: int
    test_batch_size: int


def train(setup: Setup, members: Members, stream: OnlineStream, test_images: torch.Tensor,
          test_labels: torch.Tensor, log: Callable[[str], None] = print) -> Curves:
    """Train every member online for ``setup.steps`` SGD steps and record its curves."""
    dev, dt, n = setup.device, setup.dtype, len(members.seeds)
    nets = [build_model(setup.model, setup.input_shape, setup.num_classes, s).to(dev, dt) for s in members.seeds]
    params = {k: v.detach() for k, v in stack_module_state(nets)[0].items()}
    base = nets[0].to("meta")  # the architecture only; the weights live in ``params``
    params0 = {k: v.clone() for k, v in params.items()}  # frozen theta_0 of the centered model
    gamma = torch.tensor(members.gammas, dtype=dt, device=dev)
    lr = torch.tensor([learning_rate(base.width, eta) for eta in members.etas], dtype=dt, device=dev)
    loss_fn = LOSSES[setup.loss]

    def g(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    def member_loss(p: dict, g0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, gam: torch.Tensor) -> torch.Tensor:
        return loss_fn(centered_output(g(p, x), g0, gam), y)

    outputs = vmap(g, in_dims=(0, None))  # (E, B, C) for one shared batch
    step_grads = vmap(grad_and_value(member_loss), in_dims=(0, 0, None, None, 0))
    x_test = normalize(test_images.to(dev), setup.mean, setup.std, dt)
    y_test = test_labels.to(dev)

    def evaluate(alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Test loss and accuracy (E,) of the current ``params`` (read at call time); NaN for dead members."""
        total_loss, correct = torch.zeros(n, dtype=dt, device=dev), torch.zeros(n, dtype=dt, device=dev)
        for i in range(0, len(y_test), setup.test_batch_size):
            x, y = x_test[i:i + setup.test_batch_size], y_test[i:i + setup.test_batch_size]
            f = centered_output(outputs(params, x), outputs(params0, x), gamma.view(-1, 1, 1))
            total_loss += vmap(loss_fn, in_dims=(0, None))(f, y) * len(y)
            correct += (f.argmax(-1) == y).sum(-1)
        nan = torch.tensor(float("nan"), dtype=dt, device=dev)
        return torch.where(alive, total_loss / len(y_test), nan), torch.where(alive, correct / len(y_test), nan)

    rec, evals = record_steps(setup.steps, setup.record_points), eval_steps(setup.steps)
    rec_index, eval_index = {int(s): i for i, s in enumerate(rec)}, {int(s): i for i, s in enumerate(evals)}
    blank = lambda cols: torch.full((n, cols), float("nan"), dtype=dt, device=dev)  # noqa: E731
    train_mean, train_at, test_loss, test_acc = blank(len(rec)), blank(len(rec)), blank(len(evals)), blank(len(evals))
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    diverged_step = torch.full((n,), -1, dtype=torch.int64, device=dev)
    block_sum, block_len = torch.zeros(n, dtype=dt, device=dev), 0
    report_every = max(setup.steps // 10, 1)
    for t in range(setup.steps):
        if t in eval_index:
            test_loss[:, eval_index[t]], test_acc[:, eval_index[t]] = evaluate(alive)
        images, labels = stream.batch(t)
        x, y = normalize(images.to(dev), setup.mean, setup.std, dt), labels.to(dev)
        grads, loss = step_grads(params, outputs(params0, x), x, y, gamma)
        ok = torch.isfinite(loss) & (loss <= setup.divergence_cap)
        diverged_step = torch.where(alive & ~ok, t, diverged_step)
        alive = alive & ok
        params = {k: torch.where(_per_member(alive, p), p - _per_member(lr, p) * grads[k], p) for k, p in params.items()}
        loss = torch.where(alive, loss, torch.nan)
        block_sum, block_len = block_sum + loss, block_len + 1
        if t in rec_index:
            train_mean[:, rec_index[t]], train_at[:, rec_index[t]] = block_sum / block_len, loss
            block_sum, block_len = torch.zeros_like(block_sum), 0
        if (t + 1) % report_every == 0:
            log(f"step {t + 1}/{setup.steps}: train loss {loss.tolist()}, alive {int(alive.sum())}/{n}")
            if not alive.any():
                log(f"all {n} members diverged; stopping at step {t + 1}")
                break
    test_loss[:, -1], test_acc[:, -1] = evaluate(alive)
    as_np = lambda a: a.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    return Curves(step=rec, train_loss=as_np(train_mean), train_loss_at_step=as_np(train_at), eval_step=evals,
                  test_loss=as_np(test_loss), test_accuracy=as_np(test_acc),
                  diverged=(diverged_step >= 0).cpu().numpy(), diverged_step=diverged_step.cpu().numpy())
