"""The workflow through a real single-node SLURM cluster (tests/cluster/slurmcluster.py): every pack of
cells is its own SLURM job with a GPU request, and the pipeline completes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import pytest
import yaml
from slurmcluster import INSTALL_HINT, local_slurm_cluster, missing_binaries, slurm_available, wait_for_completed_jobs
from workflow_helpers import (
    REPO,
    assert_cells_equal_an_uninterrupted_run,
    long_pack_config,
    micro_config,
    scratch_workflow,
    snakemake,
    snakemake_env,
)

from gammasweep.plan.config import load_schema
from gammasweep.plan.plan import Plan

GPU_RULES = {"train_generator", "sample_shard", "quality_gate", "train_pack", "eta_brackets", "train_column"}


def _site_profile(root, partition: str, **settings) -> str:
    """The shipped SLURM profile with its placeholders filled in, as a user would, and ``settings``."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = partition
    del profile["default-resources"]["slurm_account"]
    profile |= {
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "latency-wait": 10,
        "jobs": 8,
        **settings,
    }
    (root / "site").mkdir()
    (root / "site" / "config.yaml").write_text(yaml.safe_dump(profile))
    return "site"


def _on_the_cpu(config: dict) -> dict:
    """``config`` with its jobs on the CPU: the local cluster's GPUs are fake (/dev/null, /dev/zero), and a
    job given one fails with device 'auto', where torch cannot use it (tested below)."""
    config["training"] = config["training"] | {"device": "cpu"}
    return config


def test_every_pack_of_cells_runs_as_its_own_gpu_job_on_slurm(tmp_path):
    if not slurm_available():
        pytest.fail(f"SLURM/munge not installed (missing: {missing_binaries()}); {INSTALL_HINT}")
    config = _on_the_cpu(micro_config(losses=("mse",)))
    del config["experiments"]["mlp_mse"]["training"]  # no probes: what runs where is the question here
    config["experiments"]["mlp_mse_adaptive"] = config["experiments"]["mlp_mse"] | {"eta_grid": "adaptive"}
    config["figures"] = {
        "phase": config["figures"]["phase_mlp_mse"],  # figures are local rules: two will do
        "coverage": {"plot": "adaptive_coverage", "experiments": ["mlp_mse_adaptive", "mlp_mse"]},
    }
    root = scratch_workflow(tmp_path / "workflow", config)
    profile = _site_profile(root, "debug")
    with local_slurm_cluster(tmp_path / "slurm") as cluster:
        assert cluster.partition == "debug"
        result = snakemake(root, "--configfile", "micro.yaml", "--profile", profile, timeout=1200)
        assert result.returncode == 0, result.stderr[-6000:] + cluster.logs()
        brackets = json.loads((root / "results" / "brackets" / "mlp_mse_adaptive.json").read_text())["columns"]
        expected = {
            "train_generator": 1,
            "sample_shard": 2,
            "merge_pool": 1,
            "quality_gate": 1,
            "train_pack": 2,
            "aggregate": 1,
            "eta_brackets": 1,
            "train_column": sum(record["edge"] > 0 for record in brackets.values()),
            "aggregate_adaptive": 1,
        }
        jobs = wait_for_completed_jobs(cluster, sum(expected.values()))
    for job in jobs:  # the slurm executor's comment: rule_<rule>[_wildcards_<values>]
        job["rule"] = re.sub(
            r"^train_\w+_pack\d{4}$", "train_pack", job["comment"].removeprefix("rule_").split("_wildcards_")[0]
        )
    # fetch_source, the figures and `all` are local rules; everything else ran as a SLURM job, the
    # columns planned after the checkpoint eta_brackets included.
    assert Counter(job["rule"] for job in jobs) == expected
    assert all(job["state"] == "COMPLETED" and job["exit_code"] == "0:0" for job in jobs), jobs
    for job in jobs:
        assert job["requests_gpu"] == (job["rule"] in GPU_RULES), job
    # The 4 cell files of the full grid were written by the 2 pack jobs, 2 cells each.
    pack_jobs = {str(job["job_id"]) for job in jobs if job["rule"] == "train_pack"}
    written_by = []
    for cell in (root / "results" / "runs" / "mlp_mse").rglob("*.h5"):
        with h5py.File(cell) as f:
            written_by.append(json.loads(f.attrs["provenance"])["slurm_job_id"])
    assert sorted(Counter(written_by).items()) == sorted((job, 2) for job in pack_jobs)
    for name in config["figures"]:
        assert (root / "results" / "figures" / f"{name}.pdf").exists()


def test_a_job_given_a_gpu_that_torch_cannot_use_fails_loudly(tmp_path):
    """device 'auto' (the default config's) in a SLURM job given a fake GPU: the generator's job fails,
    naming the GPU and torch's reason, instead of training on the node's CPU."""
    if not slurm_available():
        pytest.fail(f"SLURM/munge not installed (missing: {missing_binaries()}); {INSTALL_HINT}")
    root = scratch_workflow(tmp_path / "workflow", micro_config(losses=("mse",)))
    profile = _site_profile(root, "debug", retries=0)
    with local_slurm_cluster(tmp_path / "slurm") as cluster:
        result = snakemake(root, "--configfile", "micro.yaml", "--profile", profile, "results/data/micro/generator.pt")
        assert result.returncode != 0, result.stderr[-3000:] + cluster.logs()
    log = (root / "results" / "logs" / "data" / "micro" / "train_generator.log").read_text()
    assert "(CUDA_VISIBLE_DEVICES) but torch cannot use CUDA" in log and "`device: cpu`" in log, log[-3000:]
    assert not (root / "results" / "data" / "micro" / "generator.pt").exists()


def _job_ids(comment: str) -> list[str]:
    """Ids of the queued or running SLURM jobs whose comment (the executor's rule_<rule>) is ``comment``."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] == [comment]]


def _start_now(job_id: str, timeout: float = 60.0) -> None:
    """Lift the ~2 minutes SLURM holds a requeued job before it is eligible again (an admin's
    `scontrol update StartTime=now`), once the job is pending again."""
    deadline = time.monotonic() + timeout
    while (
        subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        != "PENDING"
    ):
        assert time.monotonic() < deadline, f"requeued job {job_id} never became pending"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)


# scancel: the job fails and the profile's retry (a new SLURM job) resumes it. scontrol requeue (what
# preemption with requeue does) with --slurm-requeue: SLURM itself restarts the same job, which resumes.
INTERRUPTIONS = {
    "scancel": (["scancel"], {}),
    "requeue": (["scontrol", "requeue"], {"slurm-requeue": True, "retries": 0}),
}


LONG_PACK = _on_the_cpu(long_pack_config(width=512, steps=1000))


@pytest.fixture(scope="module")
def long_pack_data(tmp_path_factory) -> Path:
    """The long pack's data stage, built once here: the interruption tests send only the pack job
    through SLURM (the data rules' SLURM jobs are the first test's)."""
    root = scratch_workflow(tmp_path_factory.mktemp("long_pack_data"), LONG_PACK)
    result = snakemake(
        root,
        "--configfile",
        "micro.yaml",
        "--cores",
        "2",
        "results/data/micro/quality.json",
        "results/data/sources/sklearn_digits/test.h5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "results" / "data"


@pytest.mark.parametrize("interruption", sorted(INTERRUPTIONS))
def test_an_interrupted_pack_job_checkpoints_and_resumes(tmp_path, interruption, long_pack_data):
    """SLURM sends SIGTERM: the pack saves its checkpoint and exits; the restarted job resumes from
    there, and the cells equal an uninterrupted run of the same pack."""
    if not slurm_available():
        pytest.fail(f"SLURM/munge not installed (missing: {missing_binaries()}); {INSTALL_HINT}")
    command, settings = INTERRUPTIONS[interruption]
    root = scratch_workflow(tmp_path / "workflow", LONG_PACK)
    shutil.copytree(long_pack_data, root / "results" / "data")
    cells = Plan(LONG_PACK, load_schema(REPO / "config" / "schema.yaml")).cell_files("mlp_mse")
    profile = _site_profile(root, "debug", **settings)
    log = root / "results" / "logs" / "train" / "mlp_mse" / "pack0000.log"
    with local_slurm_cluster(tmp_path / "slurm"):
        workflow = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", "--profile", profile, *cells],
            cwd=root,
            env=snakemake_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 900
            while not (log.exists() and "step 200/1000" in log.read_text()):
                assert workflow.poll() is None and time.monotonic() < deadline, "the pack never got going"
                time.sleep(0.2)
            job_ids = _job_ids("rule_train_mlp_mse_pack0000")
            assert len(job_ids) == 1
            subprocess.run([*command, job_ids[0]], check=True, timeout=30)
            if interruption == "requeue":
                _start_now(job_ids[0])
            output = workflow.communicate(timeout=900)[0]
        finally:
            if workflow.poll() is None:
                workflow.kill()
        assert workflow.returncode == 0, output[-6000:]
    text = log.read_text()  # the restarted job's log
    assert "checkpoint: resuming from step" in text and "resuming from step 0" not in text, text
    assert not (root / "results" / "checkpoints" / "mlp_mse" / "pack0000.pt").exists()
    assert_cells_equal_an_uninterrupted_run(root, "mlp_mse", tmp_path)
