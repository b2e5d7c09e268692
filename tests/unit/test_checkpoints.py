"""Resumable training: a stopped run resumes from its checkpoint bit-identically; a bad or foreign checkpoint is
never used (killed job processes: tests/workflow/test_job_faults.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import make_setup

from gammasweep.data.pools import read_images, write_images
from gammasweep.data.stream import OnlineStream
from gammasweep.sweep.checkpoints import STOP, Checkpoint, Interrupted
from gammasweep.sweep.train import Curves, Members, train

# Four members, one of which diverges at step 1 (so the pack is compacted before the stop).
MEMBERS = Members(seeds=[0, 1, 0, 1], gammas=[1.0, 0.1, 3.0, 1.0], etas=[0.05, 0.005, 0.2, 1e8])
PROBES = {
    "sharpness": {"examples": 32, "iterations": 4},
    "spectrum": {"examples": 32, "iterations": 4},
    "outputs": {"examples": 16},
    "weight_movement": {},
}  # per-eval and final-only records resume too


def _assert_same(a: Curves, b: Curves) -> None:
    assert sorted(a.arrays()) == sorted(b.arrays())
    for name, values in a.arrays().items():
        np.testing.assert_array_equal(values, b.arrays()[name], err_msg=name)


@pytest.fixture(params=["sgd", "adam"])  # Adam's moments are part of the state too
def run(digits_files, test_set, request):
    setup = make_setup(steps=60, dtype=torch.float32, probes=PROBES, optimizer={"name": request.param})
    stream = OnlineStream(digits_files[0], 16, 60, 0)

    def go(**kwargs) -> Curves:
        return train(setup, MEMBERS, stream, *test_set, check_every=4, **kwargs)

    return go


def _stop(run, tmp_path, stop: int, steps: int) -> None:
    """Run until a stop request at step ``stop`` of ``steps``, which writes the checkpoint ``tmp_path/pack.pt``."""
    messages = []

    def stop_there(message: str) -> None:
        messages.append(message)
        if message.startswith(f"step {stop}/"):
            STOP.set()

    saves = Checkpoint(tmp_path / "pack.pt", every_seconds=1e9, log=messages.append)
    try:
        with pytest.raises(Interrupted, match=f"stopped before step {stop} of {steps}"):
            run(log=stop_there, checkpoint=saves)
    finally:
        STOP.clear()
    assert (tmp_path / "pack.pt").exists() and f"checkpoint: step {stop} saved" in messages[-1]


def _stop_and_resume(run, tmp_path, stop: int, steps: int) -> Curves:
    """Run until a stop request at step ``stop`` of ``steps`` (``_stop``), then rerun: the curves of the run
    resumed from the checkpoint."""
    _stop(run, tmp_path, stop, steps)
    messages = []
    resumed = run(log=messages.append, checkpoint=Checkpoint(tmp_path / "pack.pt", 1e9, messages.append))
    assert any(f"resuming from step {stop}" in m for m in messages)
    return resumed


def test_a_stopped_run_resumes_bit_identically(run, tmp_path):
    reference = run(log=lambda m: None)
    resumed = _stop_and_resume(run, tmp_path, stop=30, steps=60)
    assert resumed.diverged.tolist() == [False, False, False, True]
    _assert_same(resumed, reference)


def test_a_stopped_resnet18_run_resumes_bit_identically_with_its_running_statistics(digits_files, test_set, tmp_path):
    """BatchNorm's running statistics, every row's (one row compacted away before the stop) and theta_0's,
    are part of the checkpoint: the test losses after the resume read them."""
    setup = make_setup(
        steps=20,
        model={"name": "resnet18", "width": 2},
        probes={"sharpness": {"examples": 16, "iterations": 2}, "outputs": {"examples": 16}},
    )
    members = Members(seeds=[0, 1, 1], gammas=[1.0, 3.0, 1.0], etas=[0.05, 0.2, 1e8])  # the third diverges

    def run(**kwargs) -> Curves:
        return train(setup, members, OnlineStream(digits_files[0], 16, 20, 0), *test_set, check_every=4, **kwargs)

    reference = run(log=lambda m: None)
    resumed = _stop_and_resume(run, tmp_path, stop=10, steps=20)
    assert resumed.diverged.tolist() == [False, False, True]
    _assert_same(resumed, reference)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None], ids=["empty", "garbage", "other-run"])
def test_a_bad_or_foreign_checkpoint_is_reported_and_never_used(run, tmp_path, content):
    path = tmp_path / "pack.pt"
    if content is None:  # a valid checkpoint of other settings
        torch.save({"fingerprint": "another run", "step": 50}, path)
    else:
        path.write_bytes(content)
    messages = []
    curves = run(log=messages.append, checkpoint=Checkpoint(path, 1e9, messages.append))
    expected = "belongs to other settings" if content is None else "is unreadable"
    assert any(expected in m and "starting from step 0" in m for m in messages), messages
    _assert_same(curves, run(log=lambda m: None))


@pytest.mark.parametrize(
    "state",
    [[1, 2], {"fingerprint": "this run"}, {"fingerprint": "this run", "step": "5"}],
    ids=["not-a-dict", "no-step", "step-not-an-integer"],
)
def test_a_checkpoint_without_a_training_state_is_reported_by_name_and_never_used(tmp_path, state):
    path = tmp_path / "pack.pt"
    torch.save(state, path)
    messages = []
    assert Checkpoint(path, 1e9, messages.append).load("this run", {}) is None
    assert messages == [f"checkpoint {path} holds no training state with a step; starting from step 0"]


@pytest.mark.parametrize("change", ["data_seed", "batch_size", "pool", "test_set"])
def test_a_checkpoint_of_other_data_is_reported_and_ignored(digits_files, test_set, tmp_path, monkeypatch, change):
    """A run stopped at step 10, then rerun with one thing of its data changed (the checkpoint's path and the
    settings are the same): it starts from step 0, says why, and equals a fresh run on the new data."""
    # One chunk of every member, as on a GPU: on a CPU the chunk size follows the batch size, and so would the
    # settings' fingerprint.
    monkeypatch.setattr("gammasweep.sweep.train.chunk_size", lambda model, params, x: len(MEMBERS.seeds))
    pool = tmp_path / "pool.h5"
    shutil.copy(digits_files[0], pool)
    setup = make_setup(steps=20)

    def run(data_seed: int = 0, batch_size: int = 16, test: tuple = test_set, **kwargs) -> Curves:
        stream = OnlineStream(pool, batch_size, 20, data_seed)
        return train(setup, MEMBERS, stream, *test, check_every=4, **kwargs)

    _stop(run, tmp_path, stop=10, steps=20)
    if change == "pool":  # the pool sampled again: other images under the same name
        images, labels = read_images(pool)
        write_images(pool, images[::-1].copy(), labels[::-1].copy())
    new = {
        "data_seed": {"data_seed": 1},
        "batch_size": {"batch_size": 8},
        "pool": {},
        "test_set": {"test": (test_set[0][:200], test_set[1][:200])},
    }[change]
    messages = []
    curves = run(**new, log=messages.append, checkpoint=Checkpoint(tmp_path / "pack.pt", 1e9, messages.append))
    expected = f"checkpoint {tmp_path / 'pack.pt'} was written for other data ({change}): ignored, starting from step 0"
    assert expected in messages and not any("resuming" in m for m in messages), messages
    _assert_same(curves, run(**new, log=lambda m: None))
