"""The data stage from remote files, served by a real HTTP server on 127.0.0.1: MNIST's IDX files
and, through the real workflow, a fetched dataset (CIFAR-5M in miniature: npz parts) with its test
set (a cifar-10-python.tar.gz)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io

import numpy as np
import pytest
import yaml
from dataset_files import cifar10_archive, idx_bytes
from httpserver import FileServer
from workflow_helpers import micro_config, scratch_workflow, snakemake

from gammasweep.data.pools import read_images
from gammasweep.jobs.data import fetch_source

RNG = np.random.default_rng(0)
PART_IMAGES = 120


def test_mnist_is_fetched_from_its_idx_files(tmp_path):
    images = {split: RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8) for split, n in (("train", 30), ("test", 20))}
    labels = {split: RNG.integers(0, 10, len(images[split])).astype(np.uint8) for split in images}
    published = {  # download name -> (file name, content)
        "mnist_train_images": ("train-images-idx3-ubyte.gz", images["train"]),
        "mnist_train_labels": ("train-labels-idx1-ubyte.gz", labels["train"]),
        "mnist_test_images": ("t10k-images-idx3-ubyte.gz", images["test"]),
        "mnist_test_labels": ("t10k-labels-idx1-ubyte.gz", labels["test"]),
    }
    files = {f"/{file}": gzip.compress(idx_bytes(array, 0x08)) for file, array in published.values()}
    with FileServer(files) as server:
        downloads = {
            name: {
                "remote": {"url": server.url(f"/{file}"), "md5": hashlib.md5(files[f"/{file}"]).hexdigest()},
                "path": str(tmp_path / "downloads" / name),
            }
            for name, (file, _) in published.items()
        }
        fetch_source("mnist", downloads, str(tmp_path / "train.h5"), str(tmp_path / "test.h5"))
    for split in ("train", "test"):
        got_images, got_labels = read_images(tmp_path / f"{split}.h5")
        np.testing.assert_array_equal(got_images[..., 0], images[split])
        np.testing.assert_array_equal(got_labels, labels[split])


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=x, Y=y)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server of 3 CIFAR-5M parts (120 images each) and a CIFAR-10 archive; the part arrays."""
    parts = [
        (RNG.integers(0, 256, (PART_IMAGES, 32, 32, 3), dtype=np.uint8), RNG.integers(0, 10, PART_IMAGES))
        for _ in range(3)
    ]
    split = lambda n: (RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), RNG.integers(0, 10, n))  # noqa: E731
    archive = cifar10_archive(tmp_path_factory.mktemp("cifar") / "c10.tar.gz", split(10), split(50)).read_bytes()
    files = {f"/cifar5m/part{k}.npz": _npz(*part) for k, part in enumerate(parts)} | {
        "/cifar-10-python.tar.gz": archive
    }
    with FileServer(files) as server:
        yield server, parts


def fetched_config(server) -> dict:
    """An MLP on the miniature CIFAR-5M: 30 steps x batch 8 = 240 images, i.e. parts 0 and 1 only."""
    config = micro_config(losses=("mse",))
    archive = server.files["/cifar-10-python.tar.gz"]
    config["downloads"] = {f"c5m_part{k}": {"url": server.url(f"/cifar5m/part{k}.npz")} for k in range(3)}
    config["downloads"]["cifar10"] = {
        "url": server.url("/cifar-10-python.tar.gz"),
        "md5": hashlib.md5(archive).hexdigest(),
    }
    config["datasets"] = {
        "c5m": {
            "kind": "fetched",
            "source": "cifar10",
            "format": "cifar5m",
            "parts": ["c5m_part0", "c5m_part1", "c5m_part2"],
            "images_per_part": PART_IMAGES,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        }
    }
    config["experiments"]["mlp_mse"] |= {
        "dataset": "c5m",
        "steps": 30,
        "batch_size": 8,
        "gamma": [1.0],
        "eta": [0.01],
        "pack_size": 1,
    }
    config["figures"] = {"curves_mlp_mse": {"plot": "loss_curves", "experiments": ["mlp_mse"]}}
    return config


@pytest.fixture(scope="module")
def fetched_run(served, tmp_path_factory):
    server, _ = served
    root = scratch_workflow(tmp_path_factory.mktemp("fetched"), fetched_config(server))
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return root


def test_a_fetched_dataset_runs_end_to_end_reading_only_the_parts_it_needs(served, fetched_run):
    server, parts = served
    assert (fetched_run / "results" / "figures" / "curves_mlp_mse.pdf").exists()
    assert sorted(p.name for p in (fetched_run / "results" / "data" / "c5m" / "parts").iterdir()) == ["0.h5", "1.h5"]
    assert not [r for r in server.requests if r.path == "/cifar5m/part2.npz"], "part 2 is never needed"
    for k in (0, 1):
        images, labels = read_images(fetched_run / "results" / "data" / "c5m" / "parts" / f"{k}.h5")
        np.testing.assert_array_equal(images, parts[k][0])
        np.testing.assert_array_equal(labels, parts[k][1])
    log = (fetched_run / "results" / "logs" / "data" / "c5m" / "fetch_part_0.log").read_text()
    assert "sha256: " in log  # the unpinned part's record, printed as the line to pin it
    assert (fetched_run / "results" / "downloads" / "c5m_part0.json").exists()


def test_a_corrupted_download_is_reported_refetched_and_never_used(served, fetched_run):
    server, parts = served
    download = fetched_run / "results" / "downloads" / "c5m_part0"
    download.write_bytes(download.read_bytes()[:5000])  # cut short on disk
    (fetched_run / "results" / "data" / "c5m" / "parts" / "0.h5").unlink()
    before = sum(r.path == "/cifar5m/part0.npz" for r in server.requests)
    again = snakemake(fetched_run, "--configfile", "micro.yaml", "--cores", "1", "results/data/c5m/parts/0.h5")
    assert again.returncode == 0, again.stderr[-3000:]
    log = (fetched_run / "results" / "logs" / "data" / "c5m" / "fetch_part_0.log").read_text()
    assert str(download) in log or "c5m_part0" in log
    assert "expected" in log and "found 5000 bytes" in log, log
    assert sum(r.path == "/cifar5m/part0.npz" for r in server.requests) == before + 1
    images, _ = read_images(fetched_run / "results" / "data" / "c5m" / "parts" / "0.h5")
    np.testing.assert_array_equal(images, parts[0][0])


def test_fetched_datasets_are_checked_before_any_job(served, tmp_path):
    server, _ = served
    config = fetched_config(server)
    broken = copy.deepcopy(config)
    del broken["downloads"]["c5m_part1"]
    root = scratch_workflow(tmp_path, broken)
    result = snakemake(root, "--configfile", "micro.yaml", "-n")
    output = result.stdout + result.stderr  # a dry-run prints the error on stdout
    assert result.returncode != 0 and "needs the downloads ['c5m_part1']" in output, output[-2000:]
    config["experiments"]["mlp_mse"]["steps"] = 100  # 800 images > 3 x 120
    (root / "micro.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(root, "--configfile", "micro.yaml", "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "exceeds the 360 images of dataset 'c5m'" in output, output[-2000:]
