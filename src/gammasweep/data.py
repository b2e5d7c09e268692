"""Training pools, test sets and the online data stream.

Every pool and test set is an HDF5 file with ``images`` (uint8, N x H x W x C, chunked per image
block) and ``labels`` (int64, N). The online stream reads a pool in a fixed order set by a data
seed: step t gets samples ``order[B t : B (t + 1)]`` -- one pass, no sample is ever reused, and
every cell of a sweep sees the same stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from gammasweep.io import atomic_path


class ImageWriter:
    """Appends blocks of images and labels, in order, to a pool being written by ``image_writer``."""

    def __init__(self, f: h5py.File, total: int, shape: tuple[int, int, int]) -> None:
        self.total, self.shape, self.written = total, tuple(shape), 0
        chunk = (min(total, 1024), *self.shape) if total else None  # one chunk per block of images
        self._images = f.create_dataset("images", shape=(total, *self.shape), dtype=np.uint8, chunks=chunk)
        self._labels = f.create_dataset("labels", shape=(total,), dtype=np.int64)

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append uint8 images (n, H, W, C) and their n labels (any integer dtype, stored as int64)."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.shape:
            raise ValueError(f"images must be uint8 (n, {', '.join(map(str, self.shape))}), "
                             f"got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
        end = self.written + len(images)
        if end > self.total:
            raise ValueError(f"writing {len(images)} more images after {self.written} "
                             f"exceeds the {self.total} declared")
        self._images[self.written:end] = images
        self._labels[self.written:end] = labels.astype(np.int64)
        self.written = end


@contextlib.contextmanager
def image_writer(path: str | Path, total: int, shape: tuple[int, int, int],
                 attrs: Mapping | None = None) -> Iterator[ImageWriter]:
    """Stream ``total`` images of ``shape`` (H, W, C) into an HDF5 pool, block by block, atomically.

    The file appears under ``path`` only if the block succeeds and exactly ``total`` images were
    written; otherwise nothing is left under that name.
    """
    chunk_bytes = min(total, 1024) * int(np.prod(shape))
    # A chunk cache that holds a few chunks, so blocks not aligned to the chunks are not re-read.
    with atomic_path(path) as tmp, h5py.File(tmp, "w", rdcc_nbytes=max(1 << 20, 4 * chunk_bytes)) as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        writer = ImageWriter(f, total, shape)
        yield writer
        if writer.written != total:
            raise ValueError(f"{path}: {writer.written} images written but {total} declared; nothing was written")


def write_images(path: str | Path, images: np.ndarray, labels: np.ndarray, attrs: Mapping | None = None) -> None:
    """Atomically write uint8 images (N, H, W, C) and int64 labels (N,) to an HDF5 file."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
    with image_writer(path, len(images), images.shape[1:], attrs) as writer:
        writer.write(images, labels)


def read_images(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images uint8 (N, H, W, C), labels int64 (N,)), the first ``limit`` if given."""
    with open_pool(Path(path)) as f:
        n = len(f["labels"]) if limit is None else min(limit, len(f["labels"]))
        return f["images"][:n], f["labels"][:n]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, H, W, C) in 0..255 (or float in [0, 1], e.g. augmented) -> float (B, H, W, C), per
    channel (x - mean) / std of x in [0, 1]."""
    x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
    return (x - torch.tensor(mean, dtype=dtype, device=x.device)) / torch.tensor(std, dtype=dtype, device=x.device)


class OnlineStream:
    """Batch t holds samples ``order[B t : B (t + 1)]`` of a seeded order of a pool.

    Online (the default): one pass, no sample reused; a run longer than the pool is an error.
    With ``epochs=True`` (a finite real dataset trained for several epochs) the order is one fresh
    seeded permutation per epoch; its first epoch is the one-pass order.

    A pool is one HDF5 file or several (the parts of a fetched dataset), indexed one after another.
    The rows the run reads are loaded once into memory as uint8, block by block, so any subset of a
    large pool is read at the disk's speed and a multi-epoch run holds the pool only once.
    """

    def __init__(self, pool: str | Path | Sequence[str | Path], batch_size: int, steps: int, data_seed: int,
                 block_rows: int = 65536, epochs: bool = False) -> None:
        paths = [Path(pool)] if isinstance(pool, (str, Path)) else [Path(p) for p in pool]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open_pool(path)) for path in paths]
            sizes = [len(f["labels"]) for f in files]
            needed, total = batch_size * steps, sum(sizes)
            if needed > total and not epochs:
                raise ValueError(
                    f"online training needs steps x batch = {steps} x {batch_size} = {needed} samples, "
                    f"but the pool {', '.join(map(str, paths))} holds {total}: enlarge the pool or shorten the run"
                )
            rng = np.random.default_rng(data_seed)
            order = np.concatenate([rng.permutation(total) for _ in range(-(-needed // total))])[:needed]
            rows = np.unique(order)  # the pool rows the run reads, ascending
            self.images = torch.empty((len(rows), *files[0]["images"].shape[1:]), dtype=torch.uint8)
            self.labels = torch.empty(len(rows), dtype=torch.int64)
            start = 0
            for f, size in zip(files, sizes, strict=True):
                for block in range(start, start + size, block_rows):
                    lo, hi = np.searchsorted(rows, [block, min(block + block_rows, start + size)])
                    if hi > lo:
                        local = rows[lo:hi] - start
                        first, last = int(local[0]), int(local[-1]) + 1
                        self.images[lo:hi] = torch.from_numpy(f["images"][first:last][local - first])
                        self.labels[lo:hi] = torch.from_numpy(f["labels"][first:last][local - first])
                start += size
        self.slot = torch.from_numpy(np.searchsorted(rows, order))  # stream position -> row of self.images
        self.batch_size, self.data_seed = batch_size, data_seed

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of step t: uint8 images (B, H, W, C) and int64 labels (B,)."""
        rows = self.slot[step * self.batch_size:(step + 1) * self.batch_size]
        return self.images[rows], self.labels[rows]


def open_pool(path: Path) -> h5py.File:
    """Open a pool or test-set file for reading; a missing or unreadable one is a clear error."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the workflow makes it (snakemake {path})")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"{path} is unreadable ({err}), e.g. truncated: delete it and rebuild it with "
                      f"snakemake {path}") from None
