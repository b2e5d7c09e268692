"""Step-size schedules (gammasweep.sweep.schedules), in the gamma-eta trainer and the related experiments' loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_setup

from gammasweep.data.stream import OnlineStream
from gammasweep.related.descent import descend, record_schedule
from gammasweep.sweep.schedules import Schedule
from gammasweep.sweep.train import Members, train

QUIET = {"log": lambda message: None}


def test_constant_decay_and_each_warmup_shape():
    assert np.array_equal(Schedule().factors(5), np.ones(5))
    decayed = Schedule.from_config({"decay": {"at": 0.3, "factor": 4.0}}).factors(10)
    assert decayed.tolist() == [1.0] * 3 + [0.25] * 7
    held = Schedule.from_config({"warmup": {"steps": 4, "start": 0.125, "shape": "constant"}}).factors(6)
    assert held.tolist() == [0.125] * 4 + [1.0] * 2
    linear = Schedule.from_config({"warmup": {"steps": 4, "start": 0.2}}).factors(5)
    np.testing.assert_allclose(linear, [0.2, 0.4, 0.6, 0.8, 1.0])
    exponential = Schedule.from_config({"warmup": {"steps": 3, "start": 1 / 8, "shape": "exponential"}}).factors(4)
    np.testing.assert_allclose(exponential, [1 / 8, 1 / 4, 1 / 2, 1.0])  # x2 per step
    both = Schedule.from_config(
        {"warmup": {"steps": 2, "start": 0.5, "shape": "constant"}, "decay": {"at": 0.5, "factor": 10}}
    ).factors(4)
    np.testing.assert_allclose(both, [0.5, 0.5, 0.1, 0.1])
    assert "warm-up" in Schedule.from_config({"warmup": {"steps": 2, "start": 0.5}}).describe()
    with pytest.raises(ValueError, match="shape"):
        Schedule(warmup_steps=2, warmup_shape="cosine")
    with pytest.raises(ValueError, match="fraction"):
        Schedule(decay_at=1.5)


def test_the_trainer_follows_the_schedule_and_stays_bit_identical_without_one(digits_files, test_set):
    """A schedule that halves eta for the whole run is the run at eta / 2, to the bit; a decay at
    half-time leaves the first half untouched and changes the second; no schedule = before."""
    steps = 40
    stream = OnlineStream(digits_files[0], 16, steps, data_seed=0)
    setup = make_setup(steps=steps, dtype=torch.float64)
    members = Members([0, 1], [1.0, 1.0], [0.4, 0.4])
    plain = train(setup, members, stream, *test_set, **QUIET)
    same = train(dataclasses.replace(setup, schedule={}), members, stream, *test_set, **QUIET)
    halved = train(
        dataclasses.replace(setup, schedule={"warmup": {"steps": steps, "start": 0.5, "shape": "constant"}}),
        members,
        stream,
        *test_set,
        **QUIET,
    )
    half_eta = train(setup, Members([0, 1], [1.0, 1.0], [0.2, 0.2]), stream, *test_set, **QUIET)
    decayed = train(
        dataclasses.replace(setup, schedule={"decay": {"at": 0.5, "factor": 100.0}}),
        members,
        stream,
        *test_set,
        **QUIET,
    )
    np.testing.assert_array_equal(plain.test_loss, same.test_loss)
    np.testing.assert_array_equal(halved.test_loss, half_eta.test_loss)
    np.testing.assert_array_equal(halved.train_loss, half_eta.train_loss)
    first_half = decayed.step <= steps // 2  # a record at step t is the loss before update t
    np.testing.assert_array_equal(decayed.train_loss_at_step[:, first_half], plain.train_loss_at_step[:, first_half])
    assert not np.allclose(decayed.test_loss[:, -1], plain.test_loss[:, -1])


def test_descend_follows_per_run_step_sizes_and_records_divergence():
    """GD on f(w) = w^2 / 2 per run: w_t = w_0 prod(1 - lr_s). A run with lr 3 grows by |1 - 3| = 2
    per step and is recorded as diverged past the cap, its weights frozen, its later records NaN."""
    steps = 30
    lr = torch.tensor([[0.5] * steps, [0.1] * 10 + [0.2] * 20, [3.0] * steps], dtype=torch.float64)
    params = {"w": torch.ones(3, 2, dtype=torch.float64)}
    record_steps = record_schedule(steps, 4)
    trajectory = descend(
        params,
        lambda p, t: 0.5 * p["w"].square().sum(1),
        lr,
        record_steps,
        lambda p: {"norm": p["w"].norm(dim=1)},
        divergence_cap=1e6,
        **QUIET,
    )
    assert record_steps.tolist() == [0, 10, 20, 30]
    expected = np.sqrt(2) * np.array([[np.prod(1 - lr[r, :s].numpy()) for s in record_steps] for r in range(2)])
    np.testing.assert_allclose(trajectory.records["norm"][:2], expected, rtol=1e-12)
    # The loss before update t is 4^t: it first exceeds the cap 1e6 at t = 10.
    assert trajectory.diverged_step.tolist() == [-1, -1, 10]
    assert np.isnan(trajectory.records["norm"][2, -1]) and torch.isfinite(params["w"][2]).all()


def test_weight_decay_shrinks_by_its_factor():
    """With a zero loss, weight decay alone multiplies the weights by (1 - lr wd) per step."""
    lr = torch.full((2, 5), 0.1, dtype=torch.float64)
    params = {"w": torch.ones(2, 3, dtype=torch.float64)}
    descend(
        params,
        lambda p, t: 0.0 * p["w"].sum(1),
        lr,
        np.array([5]),
        lambda p: {},
        weight_decay=torch.tensor([0.0, 0.5], dtype=torch.float64),
        **QUIET,
    )
    np.testing.assert_allclose(params["w"][:, 0].numpy(), [1.0, 0.95**5], rtol=1e-14)
