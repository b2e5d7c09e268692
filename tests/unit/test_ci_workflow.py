"""CI as its users run it: GitHub's workflow passes actionlint (GitHub itself cannot be reached from here) and runs
the make targets that .ci/run runs, on the events the README names; each target runs what it says; the pre-commit
hooks are the formatter versions pyproject.toml pins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

TOOLS = Path(sys.executable).parent  # the test environment's pinned actionlint


def workflow(repo: Path) -> dict:
    """The GitHub Actions workflow, parsed."""
    return yaml.safe_load((repo / ".github" / "workflows" / "ci.yml").read_text())


def make_targets(commands: list[str]) -> list[str]:
    """The make targets the shell commands run, in order."""
    return [target for command in commands if command.startswith("make ") for target in command.split()[1:]]


def test_the_github_workflow_passes_actionlint(repo):
    result = subprocess.run(
        [str(TOOLS / "actionlint"), "-no-color", ".github/workflows/ci.yml"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_runs_the_make_targets_of_ci_run_on_the_events_the_readme_names(repo):
    ci = workflow(repo)
    assert {"push", "pull_request", "schedule", "workflow_dispatch"} <= set(ci[True])  # YAML 1.1 reads `on` as True
    jobs = ci["jobs"]
    targets = {
        name: make_targets([step["run"] for step in job["steps"] if "run" in step]) for name, job in jobs.items()
    }
    assert targets == {
        "lint": ["venv", "lint"],
        "dry-run": ["venv", "dry-run"],
        "test-fast": ["venv", "test-fast"],
        "test": ["venv", "test"],
    }
    assert "if" not in jobs["lint"] and "if" not in jobs["dry-run"]  # every push and pull request
    assert jobs["test-fast"]["if"] == "github.event_name == 'push'"
    assert jobs["test"]["if"] == "github.event_name != 'push'"  # pull requests, the schedule, on demand
    assert ci["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert ci["concurrency"]["cancel-in-progress"] is True
    # .ci/run: the same targets; `make test` holds the unit tier
    ci_run = make_targets([line.strip() for line in (repo / ".ci" / "run").read_text().splitlines()])
    assert ci_run == ["lint", "dry-run", "test"]


@pytest.mark.parametrize(
    "target, commands",
    [
        (
            "lint",
            [
                "snakemake --lint\n",
                "snakemake --lint --configfile config/paper.yaml\n",
                "snakefmt --check Snakefile workflow/rules\n",
                "ruff check src tests bench workflow/scripts\n",
                "ruff format --check src tests bench workflow/scripts\n",
            ],
        ),
        (
            "dry-run",
            [
                "snakemake -n --quiet rules\n",
                "snakemake -n --quiet rules --configfile config/paper.yaml\n",
                "bash .ci/slurm-dry-run.sh",
            ],
        ),
        ("test-fast", ["pytest tests/unit\n"]),
        ("test", ["install-system.sh", "pytest\n"]),
    ],
)
def test_each_make_target_runs_what_it_says(repo, target, commands):
    result = subprocess.run(["make", "-n", target], cwd=repo, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    missing = [command for command in commands if command not in result.stdout]
    assert not missing, result.stdout


def test_the_pre_commit_hooks_are_the_versions_pyproject_pins(repo):
    test_extra = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pins = {name: version for name, _, version in (r.partition("==") for r in test_extra) if version}
    hooks = {
        entry["repo"].rsplit("/", 1)[-1]: entry
        for entry in yaml.safe_load((repo / ".pre-commit-config.yaml").read_text())["repos"]
    }
    assert hooks["ruff-pre-commit"]["rev"] == f"v{pins['ruff']}"
    assert hooks["snakefmt"]["rev"] == f"v{pins['snakefmt']}"
    assert hooks["snakefmt"]["hooks"][0]["additional_dependencies"] == [f"black=={pins['black']}"]
