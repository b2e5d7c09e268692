"""A class-balanced preview of a pool or test-set HDF5 file (``gammasweep.data.stream``'s layout), read
without loading the file: its labels in full, then only the chosen image rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from gammasweep.data.pools import as_uint8, open_pool


def preview_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """File rows of the preview, int64 (K, per_class) for the classes 0 .. K - 1 = max label: per
    class a seeded choice of ``per_class`` of its rows, ascending; -1 where a class has fewer."""
    if per_class < 1:
        raise ValueError(f"per_class={per_class} must be >= 1")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; got {labels.min()}")
    rng = np.random.default_rng(seed)
    rows = np.full((int(labels.max()) + 1 if len(labels) else 0, per_class), -1, dtype=np.int64)
    for k in range(len(rows)):
        of_class = np.flatnonzero(labels == k)
        chosen = np.sort(rng.choice(of_class, min(per_class, len(of_class)), replace=False))
        rows[k, : len(chosen)] = chosen
    return rows


def pool_preview(path: str | Path, per_class: int, seed: int = 0) -> xr.Dataset:
    """``per_class`` images of each class of the file at ``path`` (``preview_rows``; the same seed
    gives the same images).

    Returns ``images`` uint8 (class, sample, y, x, channel), a float32 pool's rounded and clipped to
    0..255, zero where a class has fewer than ``per_class`` images; ``row`` int64 (class, sample),
    each image's row in the file, -1 for none; ``count`` int64 (class), the images of each class in
    the whole file. attrs: ``path``, ``size`` (images in the file), ``per_class``, ``seed``. A missing
    or unreadable file is ``open_pool``'s error.
    """
    path = Path(path)
    with open_pool(path) as f:
        labels = f["labels"][:]
        rows = preview_rows(labels, per_class, seed)
        picked = np.sort(rows[rows >= 0])  # h5py reads a list of rows given in increasing order
        shape = f["images"].shape[1:]
        read = as_uint8(f["images"][picked]) if len(picked) else np.empty((0, *shape), np.uint8)
    images = np.zeros((*rows.shape, *shape), dtype=np.uint8)
    images[rows >= 0] = read[np.searchsorted(picked, rows[rows >= 0])]
    return xr.Dataset(
        {
            "images": (("class", "sample", "y", "x", "channel"), images),
            "row": (("class", "sample"), rows),
            "count": (("class",), np.bincount(labels, minlength=len(rows)).astype(np.int64)),
        },
        coords={"class": np.arange(len(rows)), "sample": np.arange(per_class)},
        attrs={"path": str(path), "size": len(labels), "per_class": per_class, "seed": seed},
    )
