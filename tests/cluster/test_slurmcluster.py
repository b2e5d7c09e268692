"""End-to-end check: Snakemake's slurm executor on a real local SLURM cluster.

Starts a single-node SLURM cluster (tests/cluster/slurmcluster.py: munged,
slurmctld, slurmd with fake GPUs) and runs a tiny standalone Snakefile
through ``snakemake --executor slurm``.  Every rule must run as its own SLURM
job, and only the ``gpu=1`` rules may request a GPU.

Needs root and the packages from ``.ci/install-system.sh``; it fails (it is
never skipped) when they are missing.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from slurmcluster import (  # noqa: E402
    INSTALL_HINT,
    local_slurm_cluster,
    missing_binaries,
    slurm_available,
    wait_for_completed_jobs,
)

SNAKEFILE = textwrap.dedent(
    """\
    # Standalone workflow for tests/cluster/test_slurmcluster.py
    rule all:
        input:
            "out/gpu_a.txt",
            "out/gpu_b.txt",
            "out/cpu.txt",


    rule gpu_a:
        output:
            "out/gpu_a.txt",
        resources:
            gpu=1,
            runtime=5,
            mem_mb=100,
        shell:
            "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"


    rule gpu_b:
        output:
            "out/gpu_b.txt",
        resources:
            gpu=1,
            runtime=5,
            mem_mb=100,
        shell:
            "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"


    rule cpu:
        output:
            "out/cpu.txt",
        resources:
            runtime=5,
            mem_mb=100,
        shell:
            "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"
    """
)

RULES = {"gpu_a": True, "gpu_b": True, "cpu": False}  # rule -> requests a GPU


def _snakemake_cmd(workdir: pathlib.Path, partition: str, slurm_logdir: pathlib.Path):
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(workdir / "Snakefile"),
        "--directory",
        str(workdir),
        "--executor",
        "slurm",
        "--jobs",
        "4",
        # sacct exists but fails without an accounting database
        # ("Slurm accounting storage is disabled"), the plugin's default
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--default-resources",
        f"slurm_partition={partition}",
        # first status poll after 1 s (the plugin adds 10 s per poll in
        # which no job finished, and falls back to 1 s after one finished);
        # must stay <= MinJobAge/3 or the plugin switches to sacct
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--slurm-logdir",
        str(slurm_logdir),
        "--slurm-keep-successful-logs",
        "--latency-wait",
        "10",
        "--printshellcmds",
        "--verbose",
        "--nocolor",
    ]


def test_snakemake_slurm_executor_runs_rules_as_slurm_jobs(tmp_path):
    if not slurm_available():
        pytest.fail(
            f"SLURM/munge not installed (missing: {', '.join(missing_binaries())}); {INSTALL_HINT}",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the local SLURM test cluster must be started as root", pytrace=False)

    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)
    slurm_logdir = tmp_path / "slurm_logs"
    snakemake_log = tmp_path / "snakemake.log"

    # the jobs run `python -m snakemake` via sbatch --export=ALL: the venv's
    # python/snakemake must be first on PATH
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        del env[var]

    with local_slurm_cluster(tmp_path / "slurm") as cluster:
        started = time.monotonic()
        with open(snakemake_log, "w") as log:
            proc = subprocess.run(
                _snakemake_cmd(workdir, cluster.partition, slurm_logdir),
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=150,
            )
        elapsed = time.monotonic() - started
        output = snakemake_log.read_text(errors="replace")
        assert proc.returncode == 0, (
            f"snakemake exited with {proc.returncode} after {elapsed:.0f}s\n{output[-6000:]}\n{cluster.logs()}"
        )
        try:
            jobs = wait_for_completed_jobs(cluster, count=len(RULES), timeout=30)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n--- snakemake output ---\n{output[-4000:]}")

    # ---- outputs exist and were written inside SLURM jobs -------------------
    for rule, gpu in RULES.items():
        out = workdir / "out" / f"{rule}.txt"
        assert out.exists(), f"missing output {out}\n{output[-4000:]}"
        text = out.read_text().strip()
        assert text.startswith("job=") and text != "job= gpus=none", text
        slurm_job_id = int(text.split()[0].removeprefix("job="))
        by_id = {j["job_id"]: j for j in jobs}
        assert slurm_job_id in by_id, (rule, text, jobs)
        assert by_id[slurm_job_id]["comment"] == f"rule_{rule}"
        # the fake GPU (gres.conf File=/dev/null) is exported as device 0
        assert ("gpus=none" not in text) == gpu, text

    # ---- one SLURM job per rule, all from this snakemake run ----------------
    summary = [(j["job_id"], j["name"], j["comment"], j["state"], j["tres_request"]) for j in jobs]
    comments = sorted(j["comment"] for j in jobs)
    assert comments == sorted(f"rule_{r}" for r in RULES), summary
    assert len({j["name"] for j in jobs}) == 1, summary  # the run's uuid
    for job in jobs:
        rule = job["comment"].removeprefix("rule_")
        assert job["state"] == "COMPLETED", summary
        assert job["exit_code"] == "0:0", summary
        assert job["partition"] == cluster.partition
        assert job["min_memory_node"] == "100M", job["fields"]
        assert job["time_limit"] == "00:05:00", job["fields"]
        # plugin 2.8.0 turns resources gpu=1 into `sbatch --gpus=1`
        if RULES[rule]:
            assert job["requests_gpu"], summary
            assert job["gpus_requested"] == 1, summary
            assert "TresPerJob=gres:gpu:1" in job["tres_request"], summary
            assert job["gpus_allocated"] == 1, summary
        else:
            assert not job["requests_gpu"], summary
            assert job["tres_request"] == "", summary
            assert job["gpus_allocated"] == 0, summary
