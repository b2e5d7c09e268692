"""The per-class sample grid (App. A10): the class-balanced preview of a pool file, read row by row,
and the figure drawn from a generated pool's preview beside a real test set's."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gammasweep.data.pools import read_images, write_images
from gammasweep.data.preview import pool_preview, preview_rows
from gammasweep.figures import render
from gammasweep.figures.sample_grid import sample_grid
from gammasweep.figures.style import theme


def _pool(path: Path, counts: list[int], shape: tuple[int, int, int] = (6, 5, 1), seed: int = 0) -> Path:
    """A pool of random uint8 images with ``counts[k]`` images of class k, the classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    write_images(path, rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8), labels)
    return path


def _image_axes(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.images]


def test_preview_is_balanced_counted_and_reads_the_chosen_rows(tmp_path):
    path = _pool(tmp_path / "pool.h5", [30, 25, 40])
    images, labels = read_images(path)
    preview = pool_preview(path, per_class=4, seed=3)
    assert preview["images"].dims == ("class", "sample", "y", "x", "channel")
    assert preview["images"].shape == (3, 4, 6, 5, 1) and preview["images"].dtype == np.uint8
    assert list(preview["count"].values) == [30, 25, 40]
    assert preview.attrs["size"] == 95 and preview.attrs["path"] == str(path)
    rows = preview["row"].values
    np.testing.assert_array_equal(rows, preview_rows(labels, 4, 3))  # the rows it should pick
    assert (labels[rows] == np.arange(3)[:, None]).all()  # each row of its class
    assert len(np.unique(rows)) == rows.size and (np.diff(rows, axis=1) > 0).all()  # no row twice, in file order
    np.testing.assert_array_equal(preview["images"].values, images[rows])  # exactly those rows' images


def _peak_bytes(read) -> int:
    """Peak bytes Python and numpy allocate while ``read()`` runs."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_preview_does_not_load_the_pool(tmp_path):
    path = _pool(tmp_path / "pool.h5", [2000] * 10, shape=(16, 16, 1))  # 5.1 MB of images, 160 kB of labels
    assert _peak_bytes(lambda: read_images(path)) > 5_000_000
    assert _peak_bytes(lambda: pool_preview(path, 8)) < 1_000_000


def test_preview_is_deterministic_in_its_seed(tmp_path):
    path = _pool(tmp_path / "pool.h5", [30, 30])
    first, again, other = (pool_preview(path, 5, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(first["images"].values, again["images"].values)
    assert (first["row"].values != other["row"].values).any()


def test_preview_of_an_unbalanced_pool_marks_what_is_missing(tmp_path):
    preview = pool_preview(_pool(tmp_path / "pool.h5", [6, 2, 0, 5]), per_class=4)
    assert list(preview["count"].values) == [6, 2, 0, 5]
    assert ((preview["row"].values >= 0).sum(axis=1) == [4, 2, 0, 4]).all()
    assert not preview["images"].values[1, 2:].any() and not preview["images"].values[2].any()


def test_preview_of_a_missing_or_truncated_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pool_preview(tmp_path / "absent.h5", 4)
    path = _pool(tmp_path / "pool.h5", [50, 50], shape=(16, 16, 1))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OSError, match="unreadable"):
        pool_preview(path, 4)
    with pytest.raises(ValueError, match="per_class"):
        pool_preview(_pool(tmp_path / "other.h5", [3]), 0)


def test_grid_of_generated_and_real_digits(digits_files, tmp_path):
    pool, test = digits_files
    with theme():
        fig, table = sample_grid([pool_preview(pool, 8), pool_preview(test, 8)], {"per_class": 6})
        fig.savefig(tmp_path / "grid.png", bbox_inches="tight")
    assert len(_image_axes(fig)) == 10 * 6 * 2
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["generated", "real"]
    assert _image_axes(fig)[0].images[0].get_cmap().name == "gray"
    pool_labels, test_labels = read_images(pool)[1], read_images(test)[1]
    assert list(table.columns) == ["class", "pool_count", "pool_share", "real_count", "real_share"]
    np.testing.assert_array_equal(table["pool_count"], np.bincount(pool_labels))
    np.testing.assert_array_equal(table["real_count"], np.bincount(test_labels))
    np.testing.assert_allclose(table["pool_share"].sum(), 1.0)
    plt.close(fig)


def test_grid_of_an_unbalanced_pool_shows_its_counts(tmp_path):
    generated = pool_preview(_pool(tmp_path / "pool.h5", [9, 1, 0]), 3)  # class 3 never generated
    real = pool_preview(_pool(tmp_path / "test.h5", [4, 4, 4, 4], seed=1), 3)
    fig, table = sample_grid([generated, real], {"per_class": 3})
    assert len(_image_axes(fig)) == (3 + 1 + 0 + 0) + 4 * 3
    assert list(table["class"]) == [0, 1, 2, 3]
    assert list(table["pool_count"]) == [9, 1, 0, 0] and list(table["real_count"]) == [4, 4, 4, 4]
    np.testing.assert_allclose(table["pool_share"], [0.9, 0.1, 0.0, 0.0])
    plt.close(fig)


def test_grid_of_rgb_images_without_a_real_set(tmp_path):
    preview = pool_preview(_pool(tmp_path / "pool.h5", [5, 5], shape=(4, 4, 3)), 2)
    fig, table = sample_grid([preview], {"per_class": 2})
    axes = _image_axes(fig)
    assert len(axes) == 4 and axes[0].images[0].get_array().shape == (4, 4, 3)
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["generated"]
    assert list(table.columns) == ["class", "pool_count", "pool_share"]
    with pytest.raises(ValueError, match="fewer than per_class"):
        sample_grid([preview], {"per_class": 3})
    plt.close(fig)


def test_the_figure_rule_renders_a_grid_from_pool_and_test_files(digits_files, tmp_path):
    outputs = {fmt: tmp_path / f"samples.{fmt}" for fmt in ("pdf", "png", "csv")}
    render("sample_grid", list(digits_files), {"per_class": 3, "seed": 1}, outputs)
    assert outputs["pdf"].read_bytes()[:5] == b"%PDF-" and outputs["png"].stat().st_size > 0
    table = pd.read_csv(outputs["csv"])
    np.testing.assert_array_equal(table["pool_count"], np.bincount(read_images(digits_files[0])[1]))


def test_preview_of_a_float32_pool_is_its_uint8_quantization(tmp_path):
    """A float32 pool (the [0, 1] scale, unclipped) previews as uint8, rounded and clipped."""
    uint8_path = _pool(tmp_path / "uint8.h5", [5, 5])
    images, labels = read_images(uint8_path)
    raw = (images / 255.0).astype(np.float32)
    raw[0, 0, 0, 0], raw[1, 0, 0, 0] = -0.3, 1.7
    write_images(tmp_path / "float32.h5", raw, labels)
    preview, expected = pool_preview(tmp_path / "float32.h5", 5), pool_preview(uint8_path, 5)
    clipped = images.copy()
    clipped[0, 0, 0, 0], clipped[1, 0, 0, 0] = 0, 255
    assert preview["images"].dtype == np.uint8
    np.testing.assert_array_equal(preview["images"].values, clipped[expected["row"].values])
