"""The project's dependency lists, read for the tests, .ci/test-floors.sh and `make lock`: pyproject.toml's
requirements and their floors, the conda environment's lists (envs/gammasweep.yaml) and the lock file
(requirements/lock.txt).

    python tests/dependencies.py floors   # 'name==floor' for every requirement: a pip constraints file
    python tests/dependencies.py lock     # the lock file: the installed versions of all gammasweep[test] needs
"""

from __future__ import annotations

import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
CONDA_ENV = REPO / "envs" / "gammasweep.yaml"
LOCK = REPO / "requirements" / "lock.txt"


def project() -> dict:
    """pyproject.toml's [project] table."""
    return tomllib.loads(PYPROJECT.read_text())["project"]


def project_requirements(extras: tuple[str, ...] = ("test",)) -> list[Requirement]:
    """The package's dependencies, then those of ``extras``."""
    table = project()
    return [
        Requirement(r) for r in table["dependencies"] + [r for e in extras for r in table["optional-dependencies"][e]]
    ]


def floor(requirement: Requirement) -> Version:
    """The lowest version ``requirement`` allows: its highest '>=', '==' or '~=' bound, which it must allow."""
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    if not bounds:
        raise ValueError(f"{requirement} has no floor: give it a '>=' bound, the lowest version the code works with")
    lowest = max(bounds)
    if not requirement.specifier.contains(lowest, prereleases=True):
        raise ValueError(f"{requirement} excludes its own floor {lowest}")
    return lowest


def conda_env(path: Path = CONDA_ENV) -> tuple[list[str], list[Requirement]]:
    """A conda environment file's conda packages (as written) and its pip list."""
    conda, pip = [], []
    for entry in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(entry, dict):
            pip += [Requirement(r) for r in entry["pip"]]
        else:
            conda.append(entry)
    return conda, pip


def lock_versions(path: Path = LOCK) -> dict[NormalizedName, Version]:
    """The pinned version of every package of a lock file of 'name==version' lines (and comments)."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{path}: {line!r} is not a 'name==version' pin")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def installed_closure(root: str = "gammasweep", extras: tuple[str, ...] = ("test",)) -> dict[str, str]:
    """The installed version of every distribution ``root[extras]`` needs, directly or not (markers read for
    this interpreter and platform), by its own spelling of its name; ``root`` itself left out."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in reversed(list(metadata.distributions()))}
    found, seen, todo = {}, set(), [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        dist = installed[canonicalize_name(name)]
        if name != root:
            found[dist.metadata["Name"]] = dist.version
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in {"", *wanted}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


def lock_file() -> str:
    """requirements/lock.txt's text: the installed closure of gammasweep[test], pinned."""
    header = (
        f"# The known-good set: what gammasweep[test] needs, as installed where the tests passed (Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}).\n"
        "# Rewrite it with `make lock`; install with it: README.md, 'Installs'.\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(installed_closure().items()))


if __name__ == "__main__":
    if sys.argv[1:] == ["floors"]:
        print("\n".join(f"{r.name}=={floor(r)}" for r in project_requirements()))
    elif sys.argv[1:] == ["lock"]:
        print(lock_file(), end="")
    else:
        sys.exit(__doc__)
