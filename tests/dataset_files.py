"""Small files in the datasets' published formats, built by hand for the tests."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file as MNIST publishes it: 0x0000, type code, ndim, big-endian uint32 dims, big-endian data."""
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def cifar_batch(images_hwc: np.ndarray, labels: np.ndarray, label_key: bytes) -> bytes:
    """A batch pickled as CIFAR publishes it (Python 2 str keys, i.e. bytes; rows of R, G, B planes)."""
    data = images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)
    batch = {
        b"batch_label": b"testing batch",
        label_key: [int(v) for v in labels],
        b"data": data,
        b"filenames": [b"img_%d.png" % k for k in range(len(labels))],
    }
    return pickle.dumps(batch, protocol=2)


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A .tar.gz holding ``members`` (name -> content) in the given order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def cifar10_archive(path: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """A cifar-10-python.tar.gz: ``train`` split over the 5 data batches, ``test`` in test_batch."""
    images, labels = train
    cuts = np.array_split(np.arange(len(labels)), 5)
    members = {
        f"cifar-10-batches-py/data_batch_{k + 1}": cifar_batch(images[cut], labels[cut], b"labels")
        for k, cut in enumerate(cuts)
    }
    members["cifar-10-batches-py/test_batch"] = cifar_batch(*test, b"labels")
    return write_tar(path, members)
