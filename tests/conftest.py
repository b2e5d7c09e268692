"""Shared fixtures (the repository root, a small real pool of scikit-learn's digits) and the tiers.

The tests come in three tiers, one folder each, and each test is marked with its folder's name:
``unit`` (functions and science checks; ``make test-fast``), ``workflow`` (Snakemake runs of micro
configs), ``cluster`` (a real single-node SLURM cluster on localhost). ``make test`` runs them all;
``pytest -m unit`` or ``pytest tests/unit`` one tier. The helpers beside this file serve every tier.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gammasweep.data.pools import read_images, write_images
from gammasweep.data.sources import fetch_sklearn_digits
from gammasweep.sweep.train import Setup

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "workflow", "cluster")

# The tests train tiny networks, often beside the workflow jobs they start: one thread each avoids
# oversubscribing the cores (two threads under load made small steps 10-25x slower).
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier: the folder it lives in under tests/."""
    for item in items:
        tier = item.path.relative_to(REPO / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory) -> tuple[Path, Path]:
    """(pool, test) HDF5 files of real 8x8 digits: 1400 training images, 397 test images."""
    root = tmp_path_factory.mktemp("digits")
    (train, test) = fetch_sklearn_digits(397, seed=0)
    write_images(root / "pool.h5", *train)
    write_images(root / "test.h5", *test)
    return root / "pool.h5", root / "test.h5"


@pytest.fixture(scope="session")
def test_set(digits_files) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_images(digits_files[1])
    return torch.from_numpy(images), torch.from_numpy(labels)


def make_setup(
    steps: int = 20, dtype: torch.dtype = torch.float32, loss: str = "mse", width: int = 32, depth: int = 3, **overrides
) -> Setup:
    """A small MLP run on 8x8 digits."""
    fields = dict(
        model={"name": "mlp", "width": width, "depth": depth},
        input_shape=(8, 8, 1),
        num_classes=10,
        loss=loss,
        steps=steps,
        mean=(0.3,),
        std=(0.4,),
        dtype=dtype,
        device=torch.device("cpu"),
        divergence_cap=1e4,
        record_points=10,
        test_batch_size=128,
    )
    return Setup(**{**fields, **overrides})


def h5_datasets(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (groups walked), by its path in the file."""
    found = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return found
