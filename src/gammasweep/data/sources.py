"""The real datasets: their image shape, their classes, the files they come from, and how to read them.

A source's files are downloads declared in the config under ``downloads:`` (URL and pinned
checksums) by the names its :class:`Source` lists; :func:`read_source` turns the fetched files into
the train and test splits, each uint8 images (N, H, W, C) and int64 labels (N,).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gammasweep.data.formats import read_cifar, read_mnist, read_tinyimagenet

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, H, W, C), labels int64 (N,)
DIGITS_TEST_SIZE = 397  # real 8x8 digits held out as the test set (the other 1400 train the generator)


@dataclass(frozen=True)
class Source:
    """A real dataset: image shape (H, W, C), number of classes, the names of its downloads in the
    config, and a reader from those files (name -> path) to its (train, test) splits."""

    shape: tuple[int, int, int]
    num_classes: int
    files: tuple[str, ...]
    reader: Callable[[Mapping[str, Path]], tuple[Split, Split]]


def fetch_sklearn_digits(test_size: int, seed: int) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) as uint8 0..255.

    Returns ``(train, test)``; the ``test_size`` test images are a seeded random split held out
    from everything else.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:test_size], order[test_size:]
    return (images[train], labels[train]), (images[test], labels[test])


def _mnist(files: Mapping[str, Path]) -> tuple[Split, Split]:
    return (
        read_mnist(files["mnist_train_images"], files["mnist_train_labels"]),
        read_mnist(files["mnist_test_images"], files["mnist_test_labels"]),
    )


def _splits(
    name: str, read: Callable[[Path, str], Split], train: str, test: str
) -> Callable[[Mapping[str, Path]], tuple[Split, Split]]:
    """A reader of one archive ``name`` holding both splits."""
    return lambda files: (read(files[name], train), read(files[name], test))


SOURCES: dict[str, Source] = {
    "sklearn_digits": Source((8, 8, 1), 10, (), lambda files: fetch_sklearn_digits(DIGITS_TEST_SIZE, seed=0)),
    "mnist": Source(
        (28, 28, 1), 10, ("mnist_train_images", "mnist_train_labels", "mnist_test_images", "mnist_test_labels"), _mnist
    ),
    "cifar10": Source((32, 32, 3), 10, ("cifar10",), _splits("cifar10", read_cifar, "train", "test")),
    "cifar100": Source((32, 32, 3), 100, ("cifar100",), _splits("cifar100", read_cifar, "train", "test")),
    "tinyimagenet": Source(
        (64, 64, 3), 200, ("tinyimagenet",), _splits("tinyimagenet", read_tinyimagenet, "train", "val")
    ),
}


def read_source(source: str, files: Mapping[str, Path]) -> tuple[Split, Split]:
    """The (train, test) splits of ``source`` from its fetched files (download name -> path)."""
    return SOURCES[source].reader(files)
