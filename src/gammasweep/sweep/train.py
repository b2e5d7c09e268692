"""The online trainer: E members of one model trained together with plain SGD (the paper's; or
SignSGD or Adam, ``gammasweep.sweep.optimizers``), at a constant learning rate (the paper's) or on a
schedule (``gammasweep.sweep.schedules``).

Members are stacked along a leading dimension (the layers of ``gammasweep.sweep.parameterization`` are
built for it) and each has its own seed, gamma and eta, so the seeds of one cell and a pack of
many cells are the same computation: one shared data batch per step, one GEMM per layer for all
members, the frozen initial network evaluated once per distinct seed. Divergence is a result: a
member whose loss turns non-finite or exceeds the cap is recorded as diverged at that step and
dropped; the others go on, untouched by its numbers. Diverged at step t means the weights after t
updates blew up: eval step t already reads them (``results.analysis.cell_diverged``), and a blow-up
by the last update is read off the final test loss.

BatchNorm keeps the authors' modes (``vision_tasks.py``: ``model.train()`` before training,
``model.eval()`` in ``test_model``): the training step normalizes on the batch and updates the
running statistics of every row and of the frozen initial network (the authors' frozen copy is in
training mode too, so its running statistics follow the training batches); the test evaluation
normalizes on the running statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from gammasweep.data.augment import StrongAugment, augment, step_generator
from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.probes.recorder import Network, ProbeRecorder
from gammasweep.results.curves import Curves, eval_steps, record_steps
from gammasweep.sweep.checkpoints import STOP, Checkpoint, Interrupted, fingerprint, tensor_digest
from gammasweep.sweep.losses import LOSSES, TEST_LOSSES
from gammasweep.sweep.models import build_model
from gammasweep.sweep.optimizers import Optimizer
from gammasweep.sweep.parameterization import (
    batch_statistics,
    centered_output,
    learning_rate,
    running_statistics,
    update_scales,
)
from gammasweep.sweep.schedules import Schedule


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
    divergence_cap: float | None  # a batch loss above it is divergence; None: only a NaN or inf loss (the authors')
    record_points: int
    test_batch_size: int
    probes: dict = field(default_factory=dict)  # probe name -> its settings (``gammasweep.probes.recorder``)
    optimizer: dict = field(default_factory=dict)  # ``gammasweep.sweep.optimizers.Optimizer`` settings; default SGD
    schedule: dict = field(default_factory=dict)  # ``gammasweep.sweep.schedules.Schedule`` config; default constant
    augment: dict = field(default_factory=dict)  # ``gammasweep.data.augment.StrongAugment`` settings; {} = none


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
    with batch_statistics(model), torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        functional_call(model, one, (x,))
    weights = sum(v.numel() * v.element_size() for v in one.values())
    return max(1, CPU_CHUNK_BYTES // (saved + 2 * weights))


@dataclass
class TrainState:
    """Everything a run changes as it trains, in one object: saved whole to a checkpoint and
    restored from it, and compacted (diverged rows dropped) in one call.

    Row tensors (``ROWS``) have one entry per row still training, in ``chunks`` order: ``seed_row``
    (the row's index into the distinct seeds), ``gamma``, ``lr``, ``member`` (which member the row
    is), ``alive``, ``block_sum`` (its train losses summed since the last record), and the BatchNorm
    running statistics ``stats`` (name -> (rows, C); {} without BatchNorm). ``init_stats`` (name -> (S, C)):
    the frozen initial network's, one per distinct seed, never dropped. Member tensors are
    indexed by member and never dropped: ``diverged_step`` (E,), -1 while alive, and the curves
    ``train_mean``, ``train_at`` (E, records) and ``test_loss``, ``test_acc`` (E, evals).
    """

    ROWS: ClassVar[tuple[str, ...]] = ("seed_row", "gamma", "lr", "member", "alive", "block_sum")
    FORMAT: ClassVar[int] = 3  # of the saved dict; part of the checkpoint's fingerprint

    step: int  # the next step to train
    block_len: int  # steps summed in block_sum
    per_chunk: int  # rows per chunk (``chunk_size``)
    chunks: list[tuple[slice, dict[str, torch.Tensor]]]  # the rows' trainable weights, per chunk
    moments: dict[str, torch.Tensor]  # the optimizer's state of every row (Adam's); chunks update views
    probes: dict[str, torch.Tensor]  # the probes' records so far (``ProbeRecorder.records``)
    stats: dict[str, torch.Tensor]  # every row's BatchNorm running statistics; a training pass updates views
    init_stats: dict[str, torch.Tensor]  # theta_0's, per distinct seed
    seed_row: torch.Tensor
    gamma: torch.Tensor
    lr: torch.Tensor
    member: torch.Tensor
    alive: torch.Tensor
    block_sum: torch.Tensor
    diverged_step: torch.Tensor
    train_mean: torch.Tensor
    train_at: torch.Tensor
    test_loss: torch.Tensor
    test_acc: torch.Tensor

    @staticmethod
    def split(stacked: dict[str, torch.Tensor], per_chunk: int) -> list[tuple[slice, dict[str, torch.Tensor]]]:
        """Rows of stacked weights in chunks of ``per_chunk``: (rows, trainable weights)."""
        rows = [slice(i, i + per_chunk) for i in range(0, len(next(iter(stacked.values()))), per_chunk)]
        return [(r, {k: v[r].detach().clone().requires_grad_() for k, v in stacked.items()}) for r in rows]

    def weights(self) -> dict[str, torch.Tensor]:
        """The current weights of every row, the chunks joined again."""
        return {k: torch.cat([weights[k].detach() for _, weights in self.chunks]) for k in self.chunks[0][1]}

    def compact(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (indices): every row tensor, the weights, the moments, the running statistics."""
        for name in self.ROWS:
            setattr(self, name, getattr(self, name)[keep])
        self.moments = {k: v[keep] for k, v in self.moments.items()}
        self.stats = {k: v[keep] for k, v in self.stats.items()}
        self.chunks = self.split({k: v[keep] for k, v in self.weights().items()}, self.per_chunk)

    def save(self, checkpoint: Checkpoint, key: str, data: dict) -> None:
        """Write the whole state to ``checkpoint`` (the weights stacked, not chunked), for the run of
        settings ``key`` on ``data`` (``Checkpoint.save``)."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "chunks"}
        checkpoint.save({**state, "weights": self.weights()}, key, data)

    @classmethod
    def load(cls, saved: dict, device: torch.device) -> TrainState:
        """The state ``save`` wrote, on ``device``."""
        to = lambda value: value.to(device) if isinstance(value, torch.Tensor) else value  # noqa: E731
        state = {f.name: saved[f.name] for f in fields(cls) if f.name != "chunks"}
        state = {
            k: {n: to(v) for n, v in value.items()} if isinstance(value, dict) else to(value)
            for k, value in state.items()
        }
        weights = {k: v.to(device) for k, v in saved["weights"].items()}
        return cls(**state, chunks=cls.split(weights, state["per_chunk"]))


def train(
    setup: Setup,
    members: Members,
    stream: OnlineStream,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    log: Callable[[str], None] = print,
    check_every: int = 16,
    checkpoint: Checkpoint | None = None,
    pool_budget_bytes: float | None = None,
) -> Curves:
    """Train every member online for ``setup.steps`` steps of its optimizer (SGD unless
    ``setup.optimizer`` says otherwise) and record its curves.

    The members' stacked weights are held in chunks (``chunk_size``), each a forward/backward
    pass per step. Every ``check_every`` steps (the only host synchronization besides progress
    output) diverged members are dropped, so they cost nothing afterwards. With a ``checkpoint``
    the run resumes from it if it was written for these settings and this data (the stream's data seed,
    batch size and pool files, and the test set: ``gammasweep.sweep.checkpoints``), saves it periodically
    and on a stop request (then raises Interrupted).
    The stream serves its batches on the device (``OnlineStream.to_device``): held there whole if it
    fits ``pool_budget_bytes`` (bytes of device memory; default ``gammasweep.data.stream.device_budget``),
    else in windows of many steps.
    """
    dev, dt, n = setup.device, setup.dtype, len(members.seeds)
    seeds = sorted(set(members.seeds))
    model = build_model(setup.model, setup.input_shape, setup.num_classes, seeds).to(dev, dt)
    init = {k: v.detach() for k, v in model.named_parameters()}  # frozen theta_0, one per distinct seed
    init_stats = {k: v.clone() for k, v in running_statistics(model).items()}  # its BatchNorms' (S, C), at init
    optimizer = Optimizer(**setup.optimizer)
    scales = update_scales(model, optimizer.name)  # per tensor, the factor on a member's learning rate
    lr_factor = torch.tensor(
        Schedule.from_config(setup.schedule).factors(setup.steps), dtype=dt, device=dev
    )  # (steps,)
    loss_fn, test_loss_fn = LOSSES[setup.loss], TEST_LOSSES[setup.loss]
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
    rec, evals = record_steps(setup.steps, setup.record_points), eval_steps(setup.steps)
    seed_row = torch.tensor([seeds.index(s) for s in members.seeds], device=dev)  # (E,) member -> its seed
    blank = lambda cols: torch.full((n, cols), float("nan"), dtype=dt, device=dev)  # noqa: E731
    s = TrainState(  # a fresh run; replaced by the checkpoint's below when there is one
        step=0,
        block_len=0,
        per_chunk=per_chunk,
        chunks=TrainState.split({k: v[seed_row] for k, v in init.items()}, per_chunk),
        moments=optimizer.state({k: v[seed_row] for k, v in init.items()}),
        probes={},
        stats={k: v[seed_row] for k, v in init_stats.items()},
        init_stats=init_stats,
        seed_row=seed_row,
        gamma=torch.tensor(members.gammas, dtype=dt, device=dev),
        lr=torch.tensor(
            [learning_rate(model.width, eta, optimizer.name) for eta in members.etas], dtype=dt, device=dev
        ),
        member=torch.arange(n, device=dev),
        alive=torch.ones(n, dtype=torch.bool, device=dev),
        block_sum=torch.zeros(n, dtype=dt, device=dev),
        diverged_step=torch.full((n,), -1, dtype=torch.int64, device=dev),
        train_mean=blank(len(rec)),
        train_at=blank(len(rec)),
        test_loss=blank(len(evals)),
        test_acc=blank(len(evals)),
    )

    def centered(rows: slice, weights: dict, x: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        """Centered outputs (rows, B, C); ``g0`` (S, B, C) is theta_0's output, once per distinct seed.
        The rows' running statistics are views: a training-mode pass updates them in place."""
        stats = {k: v[rows] for k, v in s.stats.items()}
        return centered_output(
            functional_call(model, {**weights, **stats}, (x,)), g0[s.seed_row[rows]], s.gamma[rows].view(-1, 1, 1)
        )

    def initial_output(x: torch.Tensor) -> torch.Tensor:
        """theta_0's outputs (S, B, C) with its own running statistics (updated in place in training mode)."""
        return functional_call(model, {**init, **s.init_stats}, (x,))

    test_batches = list(zip(x_test.split(setup.test_batch_size), y_test.split(setup.test_batch_size)))
    model.eval()
    with torch.no_grad():  # theta_0's test outputs, computed once unless BatchNorm's running statistics move them
        fixed_test_g0 = [] if init_stats else [initial_output(x) for x, _ in test_batches]

    net = Network(
        model=model,
        loss=loss_fn,
        centered=centered,
        initial=lambda rows: {k: v[s.seed_row[rows]] for k, v in init.items()},
        initial_output=initial_output,
        lr_unit=learning_rate(model.width, 1.0),
    )

    def training_batch(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` images of the pass, normalized, with their labels (never augmented)."""
        images, labels = stream.head(count)
        return normalize(images.to(dev), setup.mean, setup.std, dt), labels.to(dev)

    probes = ProbeRecorder(
        setup.probes, net, x_test, y_test, members.seeds, len(evals), setup.num_classes, training_batch
    )
    s.probes = probes.records

    def evaluate(column: int) -> None:
        """Test loss and accuracy (and the probes) of the current weights into ``column``; NaN for
        diverged members. BatchNorm in eval mode, on the running statistics (the probes choose their own)."""
        total_loss, correct = (
            torch.zeros(len(s.member), dtype=dt, device=dev),
            torch.zeros(len(s.member), dtype=dt, device=dev),
        )
        model.eval()
        with torch.no_grad():  # (the Hessian probes switch gradients on for themselves)
            test_g0 = fixed_test_g0 or [initial_output(x) for x, _ in test_batches]
            for (x, y), g0 in zip(test_batches, test_g0):
                for rows, weights in s.chunks:
                    out = centered(rows, weights, x, g0)
                    total_loss[rows] += test_loss_fn(out, y) * len(y)
                    correct[rows] += (out.argmax(-1) == y).sum(-1)
            probes.measure(column, int(evals[column]), s.chunks, s.member, s.alive)
        s.test_loss[s.member, column] = torch.where(s.alive, total_loss / len(y_test), torch.nan)
        s.test_acc[s.member, column] = torch.where(s.alive, correct / len(y_test), torch.nan)

    cap = math.inf if setup.divergence_cap is None else setup.divergence_cap

    def fine(loss: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(loss) & (loss <= cap)

    def optimizer_step(x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        """Update ``t`` on batch (x, y) of every row whose loss is fine; returns the losses (rows,) before it.
        BatchNorm in training mode: every row's running statistics and theta_0's take a step towards the batch's."""
        model.train()
        with torch.no_grad():
            g0 = initial_output(x)
        loss = torch.empty(len(s.member), dtype=dt, device=dev)
        for rows, weights in s.chunks:
            chunk_loss = loss_fn(centered(rows, weights, x, g0), y)
            grads = torch.autograd.grad(chunk_loss.sum(), list(weights.values()))
            with torch.no_grad():  # a diverged row's weights are garbage from here on and never read
                step = -(s.lr[rows] * lr_factor[t] * (s.alive[rows] & fine(chunk_loss)))
                optimizer.apply(weights, grads, {k: v[rows] for k, v in s.moments.items()}, step, scales, t)
            loss[rows] = chunk_loss.detach()
        return loss

    rec_index, eval_index = {int(step): i for i, step in enumerate(rec)}, {int(step): i for i, step in enumerate(evals)}
    report_every, start = max(setup.steps // 10, 1), time.perf_counter()
    # What a checkpoint must match to be resumed: the settings (all that shapes the numbers) and the data they are
    # computed from (the stream's seed, batch size and pool files; the test set, hashed: see ``checkpoints``).
    run_key = fingerprint(setup, members, check_every, per_chunk, TrainState.FORMAT)
    run_data = {**stream.identity, "test_set": tensor_digest(test_images, test_labels)}
    if checkpoint and (saved := checkpoint.load(run_key, run_data)):
        s = TrainState.load(saved, dev)
        probes.records = s.probes
    first = s.step
    for t in range(first, setup.steps):
        if checkpoint and t > first and checkpoint.due():
            s.step = t
            s.save(checkpoint, run_key, run_data)
            if STOP.is_set():
                raise Interrupted(f"stopped before step {t} of {setup.steps}; rerun to resume from {checkpoint.path}")
        if t in eval_index:
            evaluate(eval_index[t])
        images, labels = stream.batch(t)
        loss = optimizer_step(inputs(images, t), labels, t)
        ok = fine(loss)
        s.diverged_step[s.member] = torch.where(s.alive & ~ok, t, s.diverged_step[s.member])
        s.alive = s.alive & ok
        loss = torch.where(s.alive, loss, torch.nan)
        s.block_sum, s.block_len = s.block_sum + loss, s.block_len + 1
        if t in rec_index:
            s.train_mean[s.member, rec_index[t]], s.train_at[s.member, rec_index[t]] = s.block_sum / s.block_len, loss
            s.block_sum, s.block_len = torch.zeros_like(s.block_sum), 0
        if (t + 1) % report_every == 0:
            log(
                f"step {t + 1}/{setup.steps}: alive {int(s.alive.sum())}/{n}, train loss min "
                f"{loss.nan_to_num(torch.inf).min().item():.4g}; "
                f"{(t + 1 - first) * n / (time.perf_counter() - start):.0f} member-steps/s"
            )
        if (t + 1) % check_every == 0 and not s.alive.all():  # compact: drop the diverged rows
            keep = s.alive.nonzero().squeeze(1)
            if len(keep) == 0:
                log(f"all {n} members diverged; stopping at step {t + 1}")
                break
            s.compact(keep)
    else:
        evaluate(len(evals) - 1)
        blown = s.alive & ~fine(s.test_loss[s.member, -1])  # the last update's blow-up: no training loss sees it
        s.diverged_step[s.member] = torch.where(blown, setup.steps, s.diverged_step[s.member])
    as_np = lambda a: a.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    return Curves(
        step=rec,
        train_loss=as_np(s.train_mean),
        train_loss_at_step=as_np(s.train_at),
        eval_step=evals,
        test_loss=as_np(s.test_loss),
        test_accuracy=as_np(s.test_acc),
        diverged=(s.diverged_step >= 0).cpu().numpy(),
        diverged_step=s.diverged_step.cpu().numpy(),
        probes=probes.curves(evals),
    )
