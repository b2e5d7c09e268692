"""The install routes agree with pyproject.toml: every requirement has a floor (.ci/test-floors.sh installs
them), the conda environment of `--sdm conda` lists the same requirements and installs the package from
the workflow's base directory, and the lock file satisfies every range. That they install from the
registry: tests/workflow/test_environment_installs.py."""

from __future__ import annotations

import os
import re

from dependencies import CONDA_ENV, LOCK, REPO, conda_env, floor, lock_versions, project, project_requirements
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version


def by_name(requirements) -> dict:
    return {canonicalize_name(r.name): r for r in requirements}


def test_every_requirement_has_a_floor_it_allows():
    floors = {canonicalize_name(r.name): floor(r) for r in project_requirements()}
    assert floors["denoising-diffusion-pytorch"] >= Version("2.3.2")  # cond_keep_mask (data/diffusion.py)


def test_torchvisions_floor_is_the_release_of_torchs_floor():
    floors = {canonicalize_name(r.name): floor(r) for r in project_requirements()}
    torch, torchvision = floors["torch"], floors["torchvision"]
    assert (torch.major, torchvision.major, torchvision.minor) == (2, 0, torch.minor + 15), (torch, torchvision)


def test_the_conda_environment_lists_pyprojects_requirements():
    conda, pip = conda_env()
    assert by_name(pip) == by_name(project_requirements(extras=())), "envs/gammasweep.yaml's pip list"
    python = next(entry for entry in conda if entry.startswith("python="))
    assert SpecifierSet(project()["requires-python"]).contains(python.removeprefix("python=") + ".0")
    assert sorted(conda) == sorted([python, "pip"])  # everything else comes from the registry, as in `make venv`


def test_the_conda_environment_installs_the_package_from_the_workflows_base_directory():
    """Snakemake runs <env>.post-deploy.sh, found beside the environment file, inside the new environment;
    it reads the base directory from the variable that the Snakefile exports (what it installs there:
    tests/workflow/test_environment_installs.py)."""
    script = CONDA_ENV.with_name(CONDA_ENV.stem + ".post-deploy.sh")
    assert os.access(script, os.X_OK)
    (variable,) = re.findall(r"\$\{(\w+):\?", script.read_text())
    assert f"os.environ.update({variable}=os.path.abspath(workflow.basedir))" in (REPO / "Snakefile").read_text()


def test_the_lock_satisfies_every_requirement_and_leaves_the_project_out():
    pins = lock_versions()
    assert "gammasweep" not in pins
    for name, requirement in by_name(project_requirements()).items():
        assert name in pins, f"{LOCK.name} lacks {requirement}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{LOCK.name}: {name}=={pins[name]}"
