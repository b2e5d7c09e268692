"""Training pools, test sets and the online data stream.

Every pool and test set is an HDF5 file with ``images`` (uint8, N x H x W x C, chunked per image
block) and ``labels`` (int64, N). The online stream reads a pool in a fixed order set by a data
seed: step t gets samples ``order[B t : B (t + 1)]`` -- one pass, no sample is ever reused, and
every cell of a sweep sees the same stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from gammasweep.io import atomic_path


@dataclass(frozen=True)
class Source:
    """A real dataset: the image shape (H, W, C) and the number of classes."""

    shape: tuple[int, int, int]
    num_classes: int


SOURCES: dict[str, Source] = {
    "sklearn_digits": Source(shape=(8, 8, 1), num_classes=10),
    "mnist": Source(shape=(28, 28, 1), num_classes=10),
}


def write_images(path: str | Path, images: np.ndarray, labels: np.ndarray, attrs: Mapping | None = None) -> None:
    """Atomically write uint8 images (N, H, W, C) and int64 labels (N,) to an HDF5 file."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        chunk = (min(len(images), 1024), *images.shape[1:]) if len(images) else None
        f.create_dataset("images", data=images, chunks=chunk)
        f.create_dataset("labels", data=labels.astype(np.int64))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def read_images(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images uint8 (N, H, W, C), labels int64 (N,)), the first ``limit`` if given."""
    with h5py.File(path, "r") as f:
        n = len(f["labels"]) if limit is None else min(limit, len(f["labels"]))
        return f["images"][:n], f["labels"][:n]


def fetch_sklearn_digits(test_size: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) as uint8 0..255.

    Returns ``(train, test)``, each ``(images (N, 8, 8, 1), labels (N,))``; the ``test_size``
    test images are a seeded random split held out from everything else.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:test_size], order[test_size:]
    return (images[train], labels[train]), (images[test], labels[test])


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, H, W, C) in 0..255 -> float (B, H, W, C), per channel (x / 255 - mean) / std."""
    x = images.to(dtype) / 255.0
    return (x - torch.tensor(mean, dtype=dtype, device=x.device)) / torch.tensor(std, dtype=dtype, device=x.device)


class OnlineStream:
    """One pass over a pool: batch t holds samples ``order[B t : B (t + 1)]`` of a seeded order.

    The whole pass (``steps * batch_size`` samples) is read once into memory as uint8.
    """

    def __init__(self, pool: str | Path, batch_size: int, steps: int, data_seed: int) -> None:
        with h5py.File(pool, "r") as f:
            size = len(f["labels"])
            needed = batch_size * steps
            if needed > size:
                raise ValueError(
                    f"online training needs steps x batch = {steps} x {batch_size} = {needed} samples, "
                    f"but the pool {pool} holds {size}: enlarge the pool or shorten the run"
                )
            order = np.random.default_rng(data_seed).permutation(size)[:needed]
            sorted_idx = np.sort(order)
            images, labels = f["images"][sorted_idx], f["labels"][sorted_idx]
        # Undo the sort so that the stream follows the seeded order.
        where = np.searchsorted(sorted_idx, order)
        self.images = torch.from_numpy(images[where])
        self.labels = torch.from_numpy(labels[where])
        self.batch_size = batch_size

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of step t: uint8 images (B, H, W, C) and int64 labels (B,)."""
        sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return self.images[sl], self.labels[sl]
