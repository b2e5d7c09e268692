"""Resumable training: a stopped run resumes from its checkpoint bit-identically; a bad or foreign checkpoint is
never used (killed job processes: tests/workflow/test_job_faults.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setup

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


def test_a_stopped_run_resumes_bit_identically(run, tmp_path):
    reference = run(log=lambda m: None)
    messages = []

    def stop_at_step_30(message: str) -> None:
        messages.append(message)
        if message.startswith("step 30/"):
            STOP.set()

    saves = Checkpoint(tmp_path / "pack.pt", every_seconds=1e9, log=messages.append)
    try:
        with pytest.raises(Interrupted, match="stopped before step 30 of 60"):
            run(log=stop_at_step_30, checkpoint=saves)
    finally:
        STOP.clear()
    assert (tmp_path / "pack.pt").exists() and "checkpoint: step 30 saved" in messages[-1]
    resumed = run(log=messages.append, checkpoint=Checkpoint(tmp_path / "pack.pt", 1e9, messages.append))
    assert any("resuming from step 30" in m for m in messages)
    assert resumed.diverged.tolist() == [False, False, False, True]
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
