"""Pools and test sets on disk: HDF5 files with ``images`` (N x H x W x C, chunked per image block)
and ``labels`` (int64, N), written atomically block by block and opened with a clear error when
missing or unreadable. Images are uint8 (pixel values 0..255) or, for a generated pool stored as the
authors store theirs, float32 (pixel values on the [0, 1] scale, unclipped). Imports no torch:
figures preview pools with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from gammasweep.results.io import atomic_path

IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))  # uint8: 0..255; float32: the [0, 1] scale


def as_uint8(images: np.ndarray) -> np.ndarray:
    """Images of either stored dtype as uint8 0..255; float32 ones rounded and clipped (the quantization
    of uint8 storage)."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def open_pool(path: Path) -> h5py.File:
    """Open a pool or test-set file for reading; a missing or unreadable one is a clear error."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the workflow makes it (snakemake {path})")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise OSError(
            f"{path} is unreadable ({err}), e.g. truncated: delete it and rebuild it with snakemake {path}"
        ) from None


class ImageWriter:
    """Appends blocks of images and labels, in order, to a pool being written by ``image_writer``."""

    def __init__(self, f: h5py.File, total: int, shape: tuple[int, int, int], dtype: np.dtype = np.uint8) -> None:
        self.total, self.shape, self.dtype, self.written = total, tuple(shape), np.dtype(dtype), 0
        if self.dtype not in IMAGE_DTYPES:
            raise ValueError(f"images are stored as one of {[str(d) for d in IMAGE_DTYPES]}, not {self.dtype}")
        chunk = (min(total, 1024), *self.shape) if total else None  # one chunk per block of images
        self._images = f.create_dataset("images", shape=(total, *self.shape), dtype=self.dtype, chunks=chunk)
        self._labels = f.create_dataset("labels", shape=(total,), dtype=np.int64)

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append images (n, H, W, C) of the pool's dtype and their n labels (any integer dtype, stored as int64)."""
        if images.dtype != self.dtype or images.ndim != 4 or images.shape[1:] != self.shape:
            raise ValueError(
                f"images must be {self.dtype} (n, {', '.join(map(str, self.shape))}), got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
        end = self.written + len(images)
        if end > self.total:
            raise ValueError(
                f"writing {len(images)} more images after {self.written} exceeds the {self.total} declared"
            )
        self._images[self.written : end] = images
        self._labels[self.written : end] = labels.astype(np.int64)
        self.written = end


@contextlib.contextmanager
def image_writer(
    path: str | Path,
    total: int,
    shape: tuple[int, int, int],
    attrs: Mapping | None = None,
    dtype: np.dtype = np.uint8,
) -> Iterator[ImageWriter]:
    """Stream ``total`` images of ``shape`` (H, W, C) and ``dtype`` (one of ``IMAGE_DTYPES``) into an
    HDF5 pool, block by block, atomically.

    The file appears under ``path`` only if the block succeeds and exactly ``total`` images were
    written; otherwise nothing is left under that name.
    """
    chunk_bytes = min(total, 1024) * int(np.prod(shape)) * np.dtype(dtype).itemsize
    # A chunk cache that holds a few chunks, so blocks not aligned to the chunks are not re-read.
    with atomic_path(path) as tmp, h5py.File(tmp, "w", rdcc_nbytes=max(1 << 20, 4 * chunk_bytes)) as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        writer = ImageWriter(f, total, shape, dtype)
        yield writer
        if writer.written != total:
            raise ValueError(f"{path}: {writer.written} images written but {total} declared; nothing was written")


def write_images(path: str | Path, images: np.ndarray, labels: np.ndarray, attrs: Mapping | None = None) -> None:
    """Atomically write images (N, H, W, C), uint8 or float32, and int64 labels (N,) to an HDF5 file."""
    if images.dtype not in IMAGE_DTYPES or images.ndim != 4:
        raise ValueError(f"images must be uint8 or float32 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
    with image_writer(path, len(images), images.shape[1:], attrs, images.dtype) as writer:
        writer.write(images, labels)


def read_images(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images (N, H, W, C) as stored, uint8 or float32; labels int64 (N,)), the first ``limit`` if given."""
    with open_pool(Path(path)) as f:
        n = len(f["labels"]) if limit is None else min(limit, len(f["labels"]))
        return f["images"][:n], f["labels"][:n]
