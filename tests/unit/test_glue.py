"""The workflow scripts' shared glue: a job's log, and torch only where the job computes with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

JOB = """
import sys, types
{before}
from gammasweep.jobs.glue import job_log
snakemake = types.SimpleNamespace(threads=1, log=[sys.argv[1]])
with job_log(snakemake):
    print("to the log")
    from gammasweep.figures import render  # what a figure job imports
print("torch" in sys.modules, sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None)
"""


def _run(tmp_path: Path, before: str = "") -> tuple[str, str]:
    log = tmp_path / "job.log"
    out = subprocess.run(
        [sys.executable, "-c", JOB.format(before=before), str(log)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip(), log.read_text()


def test_a_figure_job_never_imports_torch_and_its_output_goes_to_the_log(tmp_path):
    stdout, log = _run(tmp_path)
    assert stdout == "False None" and log == "to the log\n"


def test_a_torch_job_runs_on_its_thread_count(tmp_path):
    stdout, _ = _run(tmp_path, before="import torch; torch.set_num_threads(2)")
    assert stdout == "True 1"
