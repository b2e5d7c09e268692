"""The install routes against the package registry (they need the network; what they list is checked
offline by tests/unit/test_environments.py): the conda environment's pip list and the lock file resolve,
the lock to exactly itself, and the conda environment's post-deploy script installs the package from the
workflow's base directory. Conda itself is not tested: its channels are out of reach here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dependencies import CONDA_ENV, LOCK, REPO, conda_env, lock_versions
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

POST_DEPLOY = CONDA_ENV.with_name(CONDA_ENV.stem + ".post-deploy.sh")


def dry_run(tmp_path: Path, *requirements: str) -> dict[NormalizedName, Version]:
    """What pip would install for ``requirements`` into an empty environment, from the registry."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report]
        + list(requirements),
        check=True,
        capture_output=True,
        timeout=900,
    )
    installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): Version(i["metadata"]["version"]) for i in installs}


def test_the_conda_environments_pip_list_resolves_from_the_registry(tmp_path):
    _, pip = conda_env()
    resolved = dry_run(tmp_path, *map(str, pip))
    for requirement in pip:
        assert requirement.specifier.contains(resolved[canonicalize_name(requirement.name)], prereleases=True)


def test_the_lock_resolves_from_the_registry_to_exactly_itself(tmp_path):
    """Consistent (pip finds no conflict) and closed (it pins everything its packages need)."""
    assert dry_run(tmp_path, "--requirement", str(LOCK)) == lock_versions()


def test_the_post_deploy_script_installs_the_package_from_the_workflows_base_directory(tmp_path):
    """Run as Snakemake runs it: inside the new environment, from elsewhere, with the Snakefile's variable."""
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True, timeout=300)
    inside = {k: v for k, v in os.environ.items() if k != "GAMMASWEEP_BASEDIR"}
    inside |= {"PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(env_dir)}
    unset = subprocess.run(["bash", POST_DEPLOY], cwd=tmp_path, env=inside, capture_output=True, text=True)
    assert unset.returncode != 0 and "GAMMASWEEP_BASEDIR: is not set" in unset.stderr, unset.stderr
    subprocess.run(
        ["bash", POST_DEPLOY],
        cwd=tmp_path,
        env=inside | {"GAMMASWEEP_BASEDIR": str(REPO)},
        check=True,
        capture_output=True,
        timeout=600,
    )
    where = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import gammasweep; print(gammasweep.__file__)"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where) == REPO / "src" / "gammasweep" / "__init__.py"
