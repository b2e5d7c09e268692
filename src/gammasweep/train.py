"""The online trainer: E members of one model trained together with plain SGD (the paper's; or
SignSGD or Adam, ``gammasweep.optimizers``), at a constant learning rate (the paper's) or on a
schedule (``gammasweep.schedules``).

Members are stacked along a leading dimension (the layers of ``gammasweep.parameterization`` are
built for it) and each has its own seed, gamma and eta, so the seeds of one cell and a pack of
many cells are the same computation: one shared data batch per step, one GEMM per layer for all
members, the frozen initial network evaluated once per distinct seed. Divergence is a result: a
member whose loss turns non-finite or exceeds the cap is recorded as diverged at that step and
dropped; the others go on, untouched by its numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from gammasweep.augment import StrongAugment, augment, step_generator
from gammasweep.checkpoints import STOP, Checkpoint, Interrupted, fingerprint
from gammasweep.curves import Curves, eval_steps, record_steps
from gammasweep.data import OnlineStream, normalize
from gammasweep.losses import LOSSES
from gammasweep.models import build_model
from gammasweep.optimizers import Optimizer
from gammasweep.parameterization import centered_output, learning_rate, update_scales
from gammasweep.probes import Network, ProbeRecorder
from gammasweep.schedules import Schedule


@dataclass(frozen=True)
class Members:
    """Per-member settings, each of length E."""

    seeds: list[int]
    gammas: list[float]
    etas: list[float]


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
    probes: dict = field(default_factory=dict)  # probe name -> its settings (``gammasweep.probes``)
    optimizer: dict = field(default_factory=dict)  # ``gammasweep.optimizers.Optimizer`` settings; default SGD
    schedule: dict = field(default_factory=dict)  # ``gammasweep.schedules.Schedule`` config; default constant
    augment: dict = field(default_factory=dict)  # ``gammasweep.augment.StrongAugment`` settings; {} = none


CPU_CHUNK_BYTES = 32 * 2**20  # on a CPU, members per chunk are capped so a chunk's working set stays in cache


def chunk_size(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> int:
    """Members trained per forward/backward pass: all of them on a GPU; on a CPU as many as fit
    ``CPU_CHUNK_BYTES`` with their weights, gradients and the activations saved for the backward
    pass of batch ``x`` (measured on one member), as a large pack falls out of cache there."""
    if x.device.type != "cpu":
        return len(next(iter(params.values())))
    saved = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    one = {k: v[:1].detach().requires_grad_() for k, v in params.items()}
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        functional_call(model, one, (x,))
    weights = sum(v.numel() * v.element_size() for v in one.values())
    return max(1, CPU_CHUNK_BYTES // (saved + 2 * weights))


def train(setup: Setup, members: Members, stream: OnlineStream, test_images: torch.Tensor,
          test_labels: torch.Tensor, log: Callable[[str], None] = print, check_every: int = 16,
          checkpoint: Checkpoint | None = None, pool_budget_bytes: float | None = None) -> Curves:
    """Train every member online for ``setup.steps`` steps of its optimizer (SGD unless
    ``setup.optimizer`` says otherwise) and record its curves.

    The members' stacked weights are held in chunks (``chunk_size``), each a forward/backward
    pass per step. Every ``check_every`` steps (the only host synchronization besides progress
    output) diverged members are dropped, so they cost nothing afterwards. With a ``checkpoint``
    the run resumes from it, saves it periodically and on a stop request (then raises Interrupted).
    The stream serves its batches on the device (``OnlineStream.to_device``): held there whole if it
    fits ``pool_budget_bytes`` (bytes of device memory; default ``gammasweep.data.device_budget``),
    else in windows of many steps.
    """
    dev, dt, n = setup.device, setup.dtype, len(members.seeds)
    seeds = sorted(set(members.seeds))
    model = build_model(setup.model, setup.input_shape, setup.num_classes, seeds).to(dev, dt)
    init = {k: v.detach() for k, v in model.named_parameters()}  # frozen theta_0, one per distinct seed
    seed_row = torch.tensor([seeds.index(s) for s in members.seeds], device=dev)  # (E,) member -> its seed
    gamma = torch.tensor(members.gammas, dtype=dt, device=dev)
    optimizer = Optimizer(**setup.optimizer)
    scales = update_scales(model, optimizer.name)  # per tensor, the factor on a member's learning rate
    lr = torch.tensor([learning_rate(model.width, eta, optimizer.name) for eta in members.etas], dtype=dt, device=dev)
    lr_factor = torch.tensor(Schedule.from_config(setup.schedule).factors(setup.steps), dtype=dt, device=dev)  # (steps,)
    member = torch.arange(n, device=dev)  # which member each row is (rows shrink on compaction)
    loss_fn = LOSSES[setup.loss]
    x_test, y_test = normalize(test_images.to(dev), setup.mean, setup.std, dt), test_labels.to(dev)
    augmentation = StrongAugment(**setup.augment) if setup.augment else None
    stream.to_device(dev, pool_budget_bytes, log)

    def inputs(images: torch.Tensor, t: int) -> torch.Tensor:
        """Step t's uint8 batch (on the device, where the stream serves it), strongly augmented (a fresh
        draw per data seed and step, so a resumed run sees the same images) if the dataset says so, normalized."""
        if augmentation:
            images = augment(images, augmentation, step_generator(stream.data_seed, t, dev))
        return normalize(images, setup.mean, setup.std, dt)

    per_chunk = chunk_size(model, init, inputs(stream.batch(0)[0], 0))

    def split(stacked: dict[str, torch.Tensor]) -> list[tuple[slice, dict[str, torch.Tensor]]]:
        """Rows of the stacked weights in chunks of ``per_chunk``: (rows, trainable weights)."""
        rows = [slice(i, i + per_chunk) for i in range(0, len(member), per_chunk)]
        return [(r, {k: v[r].detach().clone().requires_grad_() for k, v in stacked.items()}) for r in rows]

    chunks = split({k: v[seed_row] for k, v in init.items()})
    moments = optimizer.state({k: v[seed_row] for k, v in init.items()})  # Adam's, every row; chunks update views

    def stacked() -> dict[str, torch.Tensor]:
        """The current weights of every row, the chunks joined again."""
        return {k: torch.cat([weights[k].detach() for _, weights in chunks]) for k in init}

    def centered(rows: slice, weights: dict, x: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        """Centered outputs (rows, B, C); ``g0`` (S, B, C) is theta_0's output, once per distinct seed."""
        return centered_output(functional_call(model, weights, (x,)), g0[seed_row[rows]], gamma[rows].view(-1, 1, 1))

    with torch.no_grad():  # test batches (x, y, theta_0's output): the frozen network's part is computed once
        test_batches = [(x, y, functional_call(model, init, (x,))) for x, y in
                        zip(x_test.split(setup.test_batch_size), y_test.split(setup.test_batch_size))]

    rec, evals = record_steps(setup.steps, setup.record_points), eval_steps(setup.steps)
    net = Network(model=model, loss=loss_fn, centered=centered,
                  initial=lambda rows: {k: v[seed_row[rows]] for k, v in init.items()},
                  initial_output=lambda x: functional_call(model, init, (x,)), lr_unit=learning_rate(model.width, 1.0))
    probes = ProbeRecorder(setup.probes, net, x_test, y_test, members.seeds, len(evals), setup.num_classes)

    def evaluate(column: int) -> None:
        """Test loss and accuracy (and the probes) of the current weights into ``column``; NaN for
        diverged members."""
        total_loss, correct = torch.zeros(len(member), dtype=dt, device=dev), torch.zeros(len(member), dtype=dt, device=dev)
        with torch.no_grad():  # (the Hessian probes switch gradients on for themselves)
            for x, y, g0 in test_batches:
                for rows, weights in chunks:
                    out = centered(rows, weights, x, g0)
                    total_loss[rows] += loss_fn(out, y) * len(y)
                    correct[rows] += (out.argmax(-1) == y).sum(-1)
            probes.measure(column, int(evals[column]), chunks, member, alive)
        test_loss[member, column] = torch.where(alive, total_loss / len(y_test), torch.nan)
        test_acc[member, column] = torch.where(alive, correct / len(y_test), torch.nan)

    def fine(loss: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(loss) & (loss <= setup.divergence_cap)

    def optimizer_step(x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        """Update ``t`` on batch (x, y) of every row whose loss is fine; returns the losses (rows,) before it."""
        with torch.no_grad():
            g0 = functional_call(model, init, (x,))
        loss = torch.empty(len(member), dtype=dt, device=dev)
        for rows, weights in chunks:
            chunk_loss = loss_fn(centered(rows, weights, x, g0), y)
            grads = torch.autograd.grad(chunk_loss.sum(), list(weights.values()))
            with torch.no_grad():  # a diverged row's weights are garbage from here on and never read
                step = -(lr[rows] * lr_factor[t] * (alive[rows] & fine(chunk_loss)))
                optimizer.apply(weights, grads, {k: v[rows] for k, v in moments.items()}, step, scales, t)
            loss[rows] = chunk_loss.detach()
        return loss

    rec_index, eval_index = {int(s): i for i, s in enumerate(rec)}, {int(s): i for i, s in enumerate(evals)}
    blank = lambda cols: torch.full((n, cols), float("nan"), dtype=dt, device=dev)  # noqa: E731
    train_mean, train_at, test_loss, test_acc = blank(len(rec)), blank(len(rec)), blank(len(evals)), blank(len(evals))
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    diverged_step = torch.full((n,), -1, dtype=torch.int64, device=dev)
    block_sum, block_len = torch.zeros(n, dtype=dt, device=dev), 0
    report_every, start, first = max(setup.steps // 10, 1), time.perf_counter(), 0
    run_key = fingerprint(setup, members, check_every, per_chunk)  # all that shapes the numbers
    mutable = ("seed_row", "gamma", "lr", "member", "alive", "diverged_step", "block_sum",
               "train_mean", "train_at", "test_loss", "test_acc")
    if checkpoint and (saved := checkpoint.load(run_key)):
        first, block_len = saved["step"], saved["block_len"]
        (seed_row, gamma, lr, member, alive, diverged_step, block_sum,
         train_mean, train_at, test_loss, test_acc) = (saved[k].to(dev) for k in mutable)
        probes.records, moments = ({k: v.to(dev) for k, v in saved[part].items()} for part in ("probes", "moments"))
        chunks = split({k: v.to(dev) for k, v in saved["weights"].items()})
    for t in range(first, setup.steps):
        if checkpoint and t > first and checkpoint.due():
            values = (seed_row, gamma, lr, member, alive, diverged_step, block_sum, train_mean, train_at, test_loss, test_acc)
            checkpoint.save({"step": t, "block_len": block_len, "weights": stacked(), "probes": probes.records,
                             "moments": moments, **dict(zip(mutable, values))}, run_key)
            if STOP.is_set():
                raise Interrupted(f"stopped before step {t} of {setup.steps}; rerun to resume from {checkpoint.path}")
        if t in eval_index:
            evaluate(eval_index[t])
        images, labels = stream.batch(t)
        loss = optimizer_step(inputs(images, t), labels, t)
        ok = fine(loss)
        diverged_step[member] = torch.where(alive & ~ok, t, diverged_step[member])
        alive = alive & ok
        loss = torch.where(alive, loss, torch.nan)
        block_sum, block_len = block_sum + loss, block_len + 1
        if t in rec_index:
            train_mean[member, rec_index[t]], train_at[member, rec_index[t]] = block_sum / block_len, loss
            block_sum, block_len = torch.zeros_like(block_sum), 0
        if (t + 1) % report_every == 0:
            log(f"step {t + 1}/{setup.steps}: alive {int(alive.sum())}/{n}, train loss min "
                f"{loss.nan_to_num(torch.inf).min().item():.4g}; {(t + 1 - first) * n / (time.perf_counter() - start):.0f} member-steps/s")
        if (t + 1) % check_every == 0 and not alive.all():  # compact: drop the diverged rows
            keep = alive.nonzero().squeeze(1)
            if len(keep) == 0:
                log(f"all {n} members diverged; stopping at step {t + 1}")
                break
            kept, moments = ({k: v[keep] for k, v in part.items()} for part in (stacked(), moments))
            seed_row, gamma, lr, member, alive, block_sum = (a[keep] for a in (seed_row, gamma, lr, member, alive, block_sum))
            chunks = split(kept)
    else:
        evaluate(len(evals) - 1)
    as_np = lambda a: a.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    return Curves(step=rec, train_loss=as_np(train_mean), train_loss_at_step=as_np(train_at), eval_step=evals,
                  test_loss=as_np(test_loss), test_accuracy=as_np(test_acc),
                  diverged=(diverged_step >= 0).cpu().numpy(), diverged_step=diverged_step.cpu().numpy(),
                  probes=probes.curves(evals))
