"""The code keeps its format and lint rules (ruff: pyproject.toml; snakefmt for the Snakefile and the
rules); `make format` fixes what it can."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(sys.executable).parent  # the test environment's pinned ruff and snakefmt
PYTHON_TREES = ["src", "tests", "bench", "workflow/scripts"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *PYTHON_TREES],
        ["ruff", "format", "--check", *PYTHON_TREES],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_the_code_is_formatted_and_lint_clean(repo, command):
    result = subprocess.run(
        [str(TOOLS / command[0]), *command[1:]], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{' '.join(command)} (run `make format`):\n{result.stdout}{result.stderr}"[-4000:]
