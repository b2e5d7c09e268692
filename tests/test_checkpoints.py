"""Resumable training: a stopped or killed pack resumes from its checkpoint, bit-identical on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import h5_datasets, make_setup

from gammasweep.checkpoints import STOP, Checkpoint, Interrupted
from gammasweep.data import OnlineStream
from gammasweep.jobs import train_pack
from gammasweep.train import Curves, Members, train

# Four members, one of which diverges at step 1 (so the pack is compacted before the stop).
MEMBERS = Members(seeds=[0, 1, 0, 1], gammas=[1.0, 0.1, 3.0, 1.0], etas=[0.05, 0.005, 0.2, 1e8])
PROBES = {"sharpness": {"examples": 32, "iterations": 4}, "spectrum": {"examples": 32, "iterations": 4},
          "outputs": {"examples": 16}, "weight_movement": {}}  # per-eval and final-only records resume too


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


def _cells(tmp_path, name: str, steps: int = 1200) -> tuple[list[dict], list[str]]:
    base = {"experiment": "t", "dataset": "digits", "model": {"name": "mlp", "width": 64, "depth": 3},
            "loss": "mse", "batch_size": 1, "steps": steps, "seeds": [0, 1], "data_seed": 0, "dtype": "float64",
            "input_shape": [8, 8, 1], "num_classes": 10, "normalization": {"mean": [0.3], "std": [0.4]},
            "device": "cpu", "float64_below_gamma": 1e-2, "divergence_cap": 1e4, "record_points": 20,
            "test_batch_size": 400, "test_examples": 400, "probes": {"weight_movement": {}, "outputs": {"examples": 16}}}
    cells = [base | {"gamma": g, "eta": e} for g, e in ((1.0, 0.01), (0.1, 1e-3))]
    return cells, [str(tmp_path / name / f"cell{i}.h5") for i in range(len(cells))]


def _job_command(tmp_path, digits_files, name: str, steps: int = 1200, preamble: str = "",
                 **checkpointing) -> tuple[list[str], list[str]]:
    """(command, cell files) of a pack job in its own process, as a workflow rule runs it;
    ``preamble``: Python run first in that process."""
    cells, outs = _cells(tmp_path, name, steps)
    args = tmp_path / f"{name}.json"
    args.write_text(json.dumps({"cells": cells, "pool": str(digits_files[0]), "test": str(digits_files[1]),
                                "outs": outs, "pack": name, **checkpointing}))
    code = preamble + "import json, sys; from gammasweep.jobs import train_pack; train_pack(**json.load(open(sys.argv[1])))"
    return [sys.executable, "-c", code, str(args)], outs


def _job(tmp_path, digits_files, name: str, **checkpointing) -> tuple[subprocess.Popen, list[str]]:
    """Start a pack job in its own process, its stdout and stderr on one pipe."""
    command, outs = _job_command(tmp_path, digits_files, name, **checkpointing)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), outs


def _wait_for(job: subprocess.Popen, text: str) -> None:
    for line in job.stdout:
        if text in line:
            return
    raise AssertionError(f"the job ended before printing {text!r}")


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_killed_pack_job_resumes_from_its_checkpoint_with_identical_results(tmp_path, digits_files, kill):
    """SIGTERM (SLURM's notice): checkpoint and exit non-zero. kill -9: nothing to catch, the last
    periodic checkpoint is resumed. Either way the rerun's cell files equal an uninterrupted run's."""
    checkpoint = tmp_path / "pack.pt"
    job, outs = _job(tmp_path, digits_files, "killed", checkpoint=str(checkpoint),
                     checkpoint_seconds=1e9 if kill == signal.SIGTERM else 0.0)
    _wait_for(job, "step 240/1200" if kill == signal.SIGTERM else "checkpoint: step 300 saved")
    job.send_signal(kill)
    output = job.communicate(timeout=120)[0]
    assert job.returncode != 0 and checkpoint.exists(), output
    assert not any(os.path.exists(p) for p in outs), "no cell file from an interrupted job"
    if kill == signal.SIGTERM:
        assert "stopped before step" in output and "rerun to resume" in output
    rerun, _ = _job(tmp_path, digits_files, "killed", checkpoint=str(checkpoint), checkpoint_seconds=1e9)
    rerun_output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0 and "checkpoint: resuming from step" in rerun_output, rerun_output
    assert not checkpoint.exists()
    cells, reference = _cells(tmp_path, "reference")
    train_pack(cells, str(digits_files[0]), str(digits_files[1]), reference, "reference")
    for resumed, uninterrupted in zip(outs, reference):
        a, b = h5_datasets(resumed), h5_datasets(uninterrupted)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_full_disk_fails_the_job_clearly_and_leaves_nothing_half_written(tmp_path, digits_files):
    """The file-size limit (RLIMIT_FSIZE) makes every write past 4 kB fail as a full disk would."""
    full_disk = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                 "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); ")
    command, outs = _job_command(tmp_path, digits_files, "full", steps=20, preamble=full_disk)
    job = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert job.returncode != 0
    assert f"could not write {outs[0]}" in job.stderr and "nothing was written under that name" in job.stderr, job.stderr
    assert list((tmp_path / "full").iterdir()) == []  # neither the cell file nor its temporary
