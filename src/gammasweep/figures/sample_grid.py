"""Samples of a generated pool per class (paper App. A10, MNIST-1M), beside real test images:
one row per class, read from previews (``gammasweep.data.preview.pool_preview``), never the whole pool."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import SubFigure

PER_CLASS = 8  # samples per class of each file, unless the figure's options say otherwise
CELL_INCHES = 0.45  # the side of one image in the grid
GRID = {"wspace": 0.05, "hspace": 0.05, "left": 0.1, "right": 0.98, "bottom": 0.02, "top": 0.92}  # of a block


def on_classes(preview: xr.Dataset, classes: np.ndarray) -> xr.Dataset:
    """A preview on ``classes``: a class it lacks holds no images (count 0, row -1)."""
    return preview.reindex({"class": classes}, fill_value={"images": 0, "row": -1, "count": 0})


def draw_block(block: SubFigure, preview: xr.Dataset, title: str) -> None:
    """The images of ``preview`` as a (class x sample) grid on a subfigure, class labels on the left;
    a missing sample (row -1) leaves its place blank. 1 channel: grayscale 0..255; 3: RGB."""
    channels = preview.sizes["channel"]
    if channels not in (1, 3):
        raise ValueError(f"{preview.attrs['path']}: {channels} channels; only 1 (grayscale) or 3 (RGB) are drawn")
    classes, samples = preview["class"].values, preview.sizes["sample"]
    axes = block.subplots(len(classes), samples, squeeze=False, gridspec_kw=GRID)
    for (k, s), ax in np.ndenumerate(axes):
        ax.set(xticks=[], yticks=[])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if s == 0:
            ax.set_ylabel(str(classes[k]), rotation=0, ha="right", va="center")
        if preview["row"].values[k, s] < 0:
            continue
        image = preview["images"].values[k, s]
        if channels == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
    block.suptitle(title)


def sample_grid(cubes: list[xr.Dataset], options: dict) -> tuple[plt.Figure, pd.DataFrame]:
    """cubes: [generated pool's preview, real test set's preview (optional)]; options: per_class
    (default ``PER_CLASS``; the previews must hold at least as many samples per class); seed (the
    previews' seeded choice of images, read where the previews are opened, ``figures.open_input``).

    One row per class (the classes of either file): ``per_class`` generated samples, then, set
    apart, ``per_class`` real ones. The table has one row per class: the pool's image count and
    share of the pool, and (with a real set) the real set's count and share.
    """
    if len(cubes) not in (1, 2):
        raise ValueError(f"sample_grid reads a generated pool's preview and optionally a real one; got {len(cubes)}")
    per_class = options.get("per_class", PER_CLASS)
    for preview in cubes:
        if preview.sizes["sample"] < per_class:
            raise ValueError(
                f"the preview of {preview.attrs['path']} holds {preview.sizes['sample']} samples per "
                f"class, fewer than per_class = {per_class}: read it with pool_preview(..., {per_class})"
            )
    classes = np.unique(np.concatenate([preview["class"].values for preview in cubes]))
    previews = [on_classes(preview.isel(sample=slice(per_class)), classes) for preview in cubes]
    titles = ["generated", "real"][: len(previews)]
    fig = plt.figure(figsize=(CELL_INCHES * per_class * len(previews) + 0.6, CELL_INCHES * len(classes) + 0.8))
    blocks = fig.subfigures(1, len(previews), wspace=0.08, squeeze=False)[0]
    for block, preview, title in zip(blocks, previews, titles):
        draw_block(block, preview, title)
    table = pd.DataFrame({"class": classes})
    for name, preview in zip(("pool", "real"), previews):
        count = preview["count"].values
        table[f"{name}_count"] = count
        table[f"{name}_share"] = count / max(preview.attrs["size"], 1)
    sizes = ", ".join(f"{title} {preview.attrs['size']:,} images" for title, preview in zip(titles, previews))
    fig.suptitle(f"{per_class} samples per class ({sizes})", y=1.02)
    return fig, table
