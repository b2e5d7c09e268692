"""Training jobs as processes: killed (SIGTERM, kill -9) mid-run and resumed from their checkpoint with
identical results, a full disk, and an adaptive column retried after a failure in its second round."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import h5_datasets

from gammasweep.jobs import train as jobs
from gammasweep.jobs.train import train_column, train_pack


# Four members, one of which diverges at step 1 (so the pack is compacted before the stop).
def _cells(tmp_path, name: str, steps: int = 1200) -> tuple[list[dict], list[str]]:
    base = {
        "experiment": "t",
        "dataset": "digits",
        "model": {"name": "mlp", "width": 64, "depth": 3},
        "loss": "mse",
        "batch_size": 1,
        "steps": steps,
        "seeds": [0, 1],
        "data_seed": 0,
        "dtype": "float64",
        "input_shape": [8, 8, 1],
        "num_classes": 10,
        "normalization": {"mean": [0.3], "std": [0.4]},
        "device": "cpu",
        "float64_below_gamma": 1e-2,
        "divergence_cap": 1e4,
        "record_points": 20,
        "test_batch_size": 400,
        "test_examples": 400,
        "probes": {"weight_movement": {}, "outputs": {"examples": 16}},
    }
    cells = [base | {"gamma": g, "eta": e} for g, e in ((1.0, 0.01), (0.1, 1e-3))]
    return cells, [str(tmp_path / name / f"cell{i}.h5") for i in range(len(cells))]


def _job_command(
    tmp_path, digits_files, name: str, steps: int = 1200, preamble: str = "", **checkpointing
) -> tuple[list[str], list[str]]:
    """(command, cell files) of a pack job in its own process, as a workflow rule runs it;
    ``preamble``: Python run first in that process."""
    cells, outs = _cells(tmp_path, name, steps)
    args = tmp_path / f"{name}.json"
    args.write_text(
        json.dumps(
            {
                "cells": cells,
                "pool": str(digits_files[0]),
                "test": str(digits_files[1]),
                "outs": outs,
                "pack": name,
                **checkpointing,
            }
        )
    )
    code = (
        preamble
        + "import json, sys; from gammasweep.jobs.train import train_pack; train_pack(**json.load(open(sys.argv[1])))"
    )
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
    job, outs = _job(
        tmp_path,
        digits_files,
        "killed",
        checkpoint=str(checkpoint),
        checkpoint_seconds=1e9 if kill == signal.SIGTERM else 0.0,
    )
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
    full_disk = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
    )
    command, outs = _job_command(tmp_path, digits_files, "full", steps=20, preamble=full_disk)
    job = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert job.returncode != 0
    assert f"could not write {outs[0]}" in job.stderr and "nothing was written under that name" in job.stderr, (
        job.stderr
    )
    assert list((tmp_path / "full").iterdir()) == []  # neither the cell file nor its temporary


def test_a_column_retried_after_a_failure_in_its_second_round_does_not_retrain_its_first(
    tmp_path, digits_files, monkeypatch
):
    """Snakemake deletes a failed column job's output directory; its finished rounds wait outside it, so the
    retry trains from the failed round on, and the column equals an uninterrupted one's. The bracket puts the
    edge at index 1 and nothing below 1e6 diverges: rounds [0, 1], [2], [3]."""
    cells = [
        cell | {"eta": eta} for cell in _cells(tmp_path, "unused", steps=100)[0][:1] for eta in (1e-4, 1e-3, 1e-2, 1e6)
    ]
    brackets = tmp_path / "brackets.json"
    brackets.write_text(json.dumps({"columns": {"1.000e+00": {"edge": 1}}}))
    rounds: list[list[float]] = []
    run_cells = jobs.run_cells

    def failing_in_round_2(chosen: list[dict], *args, **kwargs):
        rounds.append([cell["eta"] for cell in chosen])
        if len(rounds) == 2:
            raise RuntimeError("the node died in round 2")
        return run_cells(chosen, *args, **kwargs)

    def column(name: str) -> tuple[str, list[str], str]:
        """Train the column into tmp_path/name (its output directory, cell files, finished rounds)."""
        out = tmp_path / name / "gamma_1"
        files = [str(out / f"eta_{i}.h5") for i in range(len(cells))]
        args = (cells, files, str(digits_files[0]), str(digits_files[1]), str(brackets), "1.000e+00", 0, str(out))
        train_column(*args, str(tmp_path / name / "rounds"), checkpoint=str(tmp_path / name / "round.pt"))
        return str(out), files, str(tmp_path / name / "rounds")

    monkeypatch.setattr(jobs, "run_cells", failing_in_round_2)
    with pytest.raises(RuntimeError, match="round 2"):
        column("retried")
    shutil.rmtree(tmp_path / "retried" / "gamma_1", ignore_errors=True)  # what Snakemake does to a failed job's output
    assert rounds == [[1e-4, 1e-3], [1e-2]]
    retry_from = len(rounds)
    out, files, kept = column("retried")
    assert rounds[retry_from:] == [[1e-2], [1e6]], "the retry trained the first round again"
    assert not os.path.exists(kept)
    monkeypatch.setattr(jobs, "run_cells", run_cells)
    reference, reference_files, _ = column("uninterrupted")
    assert json.loads(open(f"{out}/column.json").read()) == json.loads(open(f"{reference}/column.json").read())
    assert (
        sorted(os.listdir(out)) == sorted(os.listdir(reference)) == ["column.json", *(f"eta_{i}.h5" for i in range(4))]
    )
    for retried, uninterrupted in zip(files, reference_files, strict=True):
        a, b = h5_datasets(retried), h5_datasets(uninterrupted)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
