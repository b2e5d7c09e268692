"""The workflow through a real single-node SLURM cluster (tests/slurmcluster.py): every pack of
cells is its own SLURM job with a GPU request, and the pipeline completes."""

from __future__ import annotations

import json
import re
from collections import Counter

import h5py
import pytest
import yaml
from slurmcluster import INSTALL_HINT, local_slurm_cluster, missing_binaries, slurm_available, wait_for_completed_jobs
from workflow_helpers import REPO, micro_config, scratch_workflow, snakemake

GPU_RULES = {"train_generator", "sample_shard", "train_pack"}


def _site_profile(root, partition: str) -> str:
    """The shipped SLURM profile with its placeholders filled in, as a user would."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = partition
    del profile["default-resources"]["slurm_account"]
    profile |= {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1,
                "seconds-between-status-checks": 1, "latency-wait": 10, "jobs": 8}
    (root / "site").mkdir()
    (root / "site" / "config.yaml").write_text(yaml.safe_dump(profile))
    return "site"


def test_every_pack_of_cells_runs_as_its_own_gpu_job_on_slurm(tmp_path):
    if not slurm_available():
        pytest.fail(f"SLURM/munge not installed (missing: {missing_binaries()}); {INSTALL_HINT}")
    config = micro_config(losses=("mse",))
    root = scratch_workflow(tmp_path / "workflow", config)
    profile = _site_profile(root, "debug")
    with local_slurm_cluster(tmp_path / "slurm") as cluster:
        assert cluster.partition == "debug"
        result = snakemake(root, "--configfile", "micro.yaml", "--profile", profile, timeout=1200)
        assert result.returncode == 0, result.stderr[-6000:] + cluster.logs()
        expected = {"train_generator": 1, "sample_shard": 2, "merge_pool": 1, "train_pack": 2, "aggregate": 1}
        jobs = wait_for_completed_jobs(cluster, sum(expected.values()))
    for job in jobs:  # the slurm executor's comment: rule_<rule>[_wildcards_<values>]
        job["rule"] = re.sub(r"^train_\w+_pack\d{4}$", "train_pack", job["comment"].removeprefix("rule_").split("_wildcards_")[0])
    # fetch_source, the figures and `all` are local rules; everything else ran as a SLURM job.
    assert Counter(job["rule"] for job in jobs) == expected
    assert all(job["state"] == "COMPLETED" and job["exit_code"] == "0:0" for job in jobs), jobs
    for job in jobs:
        assert job["requests_gpu"] == (job["rule"] in GPU_RULES), job
    # The 4 cell files were written by the 2 pack jobs, 2 cells each.
    pack_jobs = {str(job["job_id"]) for job in jobs if job["rule"] == "train_pack"}
    written_by = []
    for cell in (root / "results" / "runs").rglob("*.h5"):
        with h5py.File(cell) as f:
            written_by.append(json.loads(f.attrs["provenance"])["slurm_job_id"])
    assert sorted(Counter(written_by).items()) == sorted((job, 2) for job in pack_jobs)
    for name in config["figures"]:
        assert (root / "results" / "figures" / f"{name}.pdf").exists()
