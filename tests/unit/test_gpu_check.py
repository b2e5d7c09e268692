"""bench/gpu_check.sh keeps going past a part that fails and always writes its report; its full run needs a GPU,
its smoke run (GPU_CHECK_SMOKE=1) minutes: bench/README.md, "GPU check"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def gpu_check(repo: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """bench/gpu_check.sh run in full-size mode (the smoke mode off) with ``env`` added, its report in ``out``."""
    return subprocess.run(
        ["bash", "bench/gpu_check.sh", str(out)],
        cwd=repo,
        env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SMOKE": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def parts(out: Path) -> dict[str, dict]:
    """The parts of summary.json by name."""
    return {p["part"]: p for p in json.loads((out / "summary.json").read_text())["parts"]}


def test_a_failed_part_is_recorded_and_the_next_one_runs(repo, tmp_path):
    result = gpu_check(repo, tmp_path, GPU_CHECK_PARTS="no-such-part env")
    assert result.returncode == 1, result.stderr
    found = parts(tmp_path)
    assert found["no-such-part"]["status"] == "unknown part"
    env = found["env"]  # the device part: it fails where torch sees no CUDA device
    assert env["status"] == ("passed" if torch.cuda.is_available() else "failed (exit 1)"), env
    report = (tmp_path / "report.md").read_text()
    assert "| no-such-part | unknown part |" in report and "## env" in report
    assert f"torch {torch.__version__}" in (tmp_path / "env.log").read_text()


def test_parts_beyond_the_time_budget_are_recorded_as_not_run(repo, tmp_path):
    result = gpu_check(repo, tmp_path, GPU_CHECK_PARTS="env unit-tier", GPU_CHECK_BUDGET="3")
    assert result.returncode == 1, result.stderr
    assert {p["status"] for p in parts(tmp_path).values()} == {"not run: the budget was spent"}
    assert "| unit-tier | not run: the budget was spent |" in (tmp_path / "report.md").read_text()
