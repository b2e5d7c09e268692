"""The readers of the published dataset formats, on small files written in exactly those formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from dataset_files import cifar_batch, idx_bytes, write_tar
from PIL import Image

from gammasweep.data.formats import (
    convert_cifar5m_part,
    format_problem,
    iter_npz_rows,
    npz_array_info,
    read_cifar,
    read_cifar10,
    read_cifar100,
    read_idx,
    read_mnist,
    read_tinyimagenet,
)
from gammasweep.data.pools import image_writer, read_images, write_images

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------------------------- IDX


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path, gz):
    images = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, 7).astype(np.uint8)
    ipath = write(tmp_path / "images-idx3-ubyte", idx_bytes(images, 0x08), gz)
    lpath = write(tmp_path / "labels-idx1-ubyte", idx_bytes(labels, 0x08), gz)
    got_images, got_labels = read_mnist(ipath, lpath)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(got_images[..., 0], images)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
    ("code", "dtype"), [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)]
)
def test_idx_other_types_big_endian(tmp_path, code, dtype):
    array = (RNG.standard_normal((3, 4, 5)) * 100).astype(dtype)
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(array, code), gz=False))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated(tmp_path, gz):
    data = idx_bytes(RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8), 0x08)
    path = write(tmp_path / "t.idx", data[:-10], gz)
    with pytest.raises(ValueError, match=r"t\.idx.*truncated"):
        read_idx(path)
    path = write(tmp_path / "h.idx", data[:9], gz)  # cut inside the dimensions
    with pytest.raises(ValueError, match=r"h\.idx.*truncated IDX header"):
        read_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8), 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        read_idx(path)


def test_idx_trailing_bytes_and_bad_magic(tmp_path):
    data = idx_bytes(np.zeros((2, 3), np.uint8), 0x08)
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(write(tmp_path / "long.idx", data + b"\0", gz=False))
    with pytest.raises(ValueError, match=r"bad\.idx.*bad IDX magic 0x00000702"):
        read_idx(write(tmp_path / "bad.idx", b"\x00\x00\x07\x02" + data[4:], gz=True))
    with pytest.raises(ValueError, match="bad IDX magic"):
        read_idx(write(tmp_path / "png.idx", b"\x89PNG" + data[4:], gz=False))


def test_mnist_count_mismatch_and_shape(tmp_path):
    ipath = write(tmp_path / "i", idx_bytes(np.zeros((4, 28, 28), np.uint8), 0x08), gz=True)
    lpath = write(tmp_path / "l", idx_bytes(np.zeros(3, np.uint8), 0x08), gz=True)
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        read_mnist(ipath, lpath)
    small = write(tmp_path / "s", idx_bytes(np.zeros((3, 27, 28), np.uint8), 0x08), gz=True)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        read_mnist(small, lpath)
    bad_labels = write(tmp_path / "b", idx_bytes(np.array([1, 2, 10, 3], np.uint8), 0x08), gz=True)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        read_mnist(ipath, bad_labels)


# ------------------------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """A cifar-10-python.tar.gz: 5 train batches of 3 images and a test batch of 4, members in shuffled order."""
    images = RNG.integers(0, 256, (19, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, 19)
    members = {
        f"cifar-10-batches-py/data_batch_{k + 1}": cifar_batch(
            images[3 * k : 3 * k + 3], labels[3 * k : 3 * k + 3], b"labels"
        )
        for k in range(5)
    }
    members["cifar-10-batches-py/test_batch"] = cifar_batch(images[15:], labels[15:], b"labels")
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    order = [
        "cifar-10-batches-py/readme.html",
        *[f"cifar-10-batches-py/data_batch_{k}" for k in (4, 2, 5, 1, 3)],
        "cifar-10-batches-py/test_batch",
        "cifar-10-batches-py/batches.meta",
    ]
    path = write_tar(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", {m: members[m] for m in order})
    return path, images, labels


def test_cifar10_round_trip(cifar10):
    path, images, labels = cifar10
    for split, sl in (("train", slice(0, 15)), ("test", slice(15, 19))):
        got_images, got_labels = read_cifar10(path, split)
        assert got_images.dtype == np.uint8 and got_images.shape == (sl.stop - sl.start, 32, 32, 3)
        assert got_images.flags.c_contiguous
        np.testing.assert_array_equal(got_images, images[sl])  # the HWC pixel layout, batches in order 1..5
        assert got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_labels, labels[sl])
        np.testing.assert_array_equal(read_cifar(path, split)[0], images[sl])


def test_cifar_pixel_layout(tmp_path):
    """Row k of b'data' is 1024 red, then 1024 green, then 1024 blue values, each plane row-major."""
    data = np.zeros((1, 3072), np.uint8)
    data[0, 0] = 200  # red of pixel (0, 0)
    data[0, 1024 + 33] = 100  # green of pixel (1, 1)
    data[0, 2048 + 32 * 31 + 5] = 50  # blue of pixel (31, 5)
    blob = pickle.dumps({b"data": data, b"labels": [3]}, protocol=2)
    path = write_tar(tmp_path / "c.tar.gz", {"cifar-10-batches-py/test_batch": blob})
    images, labels = read_cifar10(path, "test")
    assert images[0, 0, 0].tolist() == [200, 0, 0]
    assert images[0, 1, 1].tolist() == [0, 100, 0]
    assert images[0, 31, 5].tolist() == [0, 0, 50]
    assert int(images.sum()) == 350 and labels.tolist() == [3]


def test_cifar100(tmp_path):
    images = RNG.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    fine = np.array([0, 99, 42, 7, 13, 56])

    def batch(sl):
        return pickle.dumps(
            {
                b"filenames": [],
                b"batch_label": b"x",
                b"fine_labels": fine[sl].tolist(),
                b"coarse_labels": (fine[sl] // 5).tolist(),
                b"data": images[sl].transpose(0, 3, 1, 2).reshape(-1, 3072),
            },
            protocol=2,
        )

    path = write_tar(
        tmp_path / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/meta": b"",
            "cifar-100-python/test": batch(slice(4, 6)),
            "cifar-100-python/train": batch(slice(0, 4)),
        },
    )
    for reader in (read_cifar, read_cifar100):
        got_images, got_labels = reader(path, "train")
        np.testing.assert_array_equal(got_images, images[:4])
        np.testing.assert_array_equal(got_labels, fine[:4])
    np.testing.assert_array_equal(read_cifar100(path, "test")[1], fine[4:])
    with pytest.raises(ValueError, match="is a CIFAR-100 archive, not CIFAR-10"):
        read_cifar10(path, "train")


def test_cifar_errors(tmp_path, cifar10):
    path, images, labels = cifar10
    with pytest.raises(ValueError, match="split must be"):
        read_cifar10(path, "val")
    with pytest.raises(ValueError, match="is a CIFAR-10 archive, not CIFAR-100"):
        read_cifar100(path, "test")
    ok = cifar_batch(images[:2], labels[:2], b"labels")
    partial = write_tar(tmp_path / "partial.tar.gz", {f"cifar-10-batches-py/data_batch_{k}": ok for k in (1, 2, 4, 5)})
    with pytest.raises(ValueError, match=r"partial\.tar\.gz.*lacks member\(s\) cifar-10-batches-py/data_batch_3"):
        read_cifar10(partial, "train")
    with pytest.raises(ValueError, match="no CIFAR test members found"):
        read_cifar10(partial, "test")
    bad = write_tar(
        tmp_path / "bad.tar.gz",
        {"cifar-10-batches-py/test_batch": cifar_batch(images[:2], np.array([3, 10]), b"labels")},
    )
    with pytest.raises(ValueError, match=r"test_batch: labels must lie in 0\.\.9"):
        read_cifar10(bad, "test")
    short = pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [1, 2]}, protocol=2)
    with pytest.raises(ValueError, match=r"uint8 \(N, 3072\)"):
        read_cifar10(write_tar(tmp_path / "short.tar.gz", {"cifar-10-batches-py/test_batch": short}), "test")
    blob = path.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz"):
        read_cifar10(tmp_path / "cut.tar.gz", "train")


class _Payload:
    """An object whose unpickling calls ``call(*args)``: what a crafted CIFAR batch could run in the reader."""

    def __init__(self, call: Callable, *args: object) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return self.call, self.args


@pytest.mark.parametrize("code", ["os.system", "builtins.exec"])
def test_cifar_pickle_naming_foreign_code_is_refused_and_nothing_runs(tmp_path, code):
    marker = tmp_path / "ran"
    payload = {
        "os.system": _Payload(os.system, f"touch {shlex.quote(str(marker))}"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }[code]
    crafted = pickle.dumps({b"data": payload, b"labels": [1]}, protocol=2)
    path = write_tar(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": crafted})
    with pytest.raises(ValueError, match=r"test_batch: refused to load (posix|__builtin__)\.(system|exec): a CIFAR"):
        read_cifar(path, "test")
    assert not marker.exists()


@pytest.mark.parametrize("module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_cifar_batch_naming_numpy_as_either_version_writes_it_loads(tmp_path, module):
    """CIFAR's own files (pickled with numpy 1) name ``numpy.core.multiarray._reconstruct``, numpy 2
    ``numpy._core.multiarray._reconstruct``: the restricted unpickler takes both."""
    images, labels = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), np.array([0, 9, 4])
    blob = re.sub(rb"numpy\.(_?)core\.multiarray\n", module + b"\n", cifar_batch(images, labels, b"labels"))
    assert b"c" + module + b"\n_reconstruct\n" in blob  # protocol 2: a GLOBAL opcode, names in plain text
    path = write_tar(tmp_path / "c.tar.gz", {"cifar-10-batches-py/test_batch": blob})
    got_images, got_labels = read_cifar10(path, "test")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("cifar-10-python.tar.gz", gzip.compress(b"x"), None),
        ("/mnist/t10k-labels-idx1-ubyte.gz", b"\x00\x00\x08\x01", "is not a gzip file"),
        ("part0.npz", b"PK\x03\x04rest", None),
        ("tiny-imagenet-200.zip", b"  <!DOCTYPE html><html></html>", "(an HTML page, not data)"),
        ("x.tar", bytes(257) + b"ustar\x0000", None),
        ("x.tar", bytes(300), "is not a tar file"),
        ("train-images-idx3-ubyte", b"<html>", None),  # an ending not known here: not judged
    ],
)
def test_format_problem_judges_a_file_by_the_magic_its_name_calls_for(tmp_path, name, content, problem):
    (tmp_path / "f").write_bytes(content)
    found = format_problem(tmp_path / "f", name)
    assert found is None if problem is None else problem in found


# --------------------------------------------------------------------------------------- npz (CIFAR-5M)


@pytest.fixture(scope="module", params=["savez", "savez_compressed"])
def cifar5m(request, tmp_path_factory):
    """A CIFAR-5M part in miniature: X uint8 (N, 32, 32, 3), Y labels, saved as np.savez / np.savez_compressed."""
    x = RNG.integers(0, 256, (203, 32, 32, 3), dtype=np.uint8)
    y = RNG.integers(0, 10, 203)
    path = tmp_path_factory.mktemp("c5m") / f"cifar5m_part0_{request.param}.npz"
    getattr(np, request.param)(path, X=x, Y=y)
    return path, x, y


def test_npz_info_and_rows(cifar5m):
    path, x, y = cifar5m
    assert npz_array_info(path, "X") == ((203, 32, 32, 3), np.dtype(np.uint8))
    assert npz_array_info(path, "Y") == ((203,), y.dtype)
    for rows in (1, 7, 64, 203, 500):
        blocks = list(iter_npz_rows(path, "X", rows))
        assert [len(b) for b in blocks[:-1]] == [rows] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= rows
        np.testing.assert_array_equal(np.concatenate(blocks), np.load(path)["X"])
        assert blocks[0].flags.writeable
    np.testing.assert_array_equal(np.concatenate(list(iter_npz_rows(path, "Y", 50))), y)


def test_npz_errors(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, F=np.asfortranarray(np.zeros((4, 3), np.uint8)), O=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="Fortran-order"):
        next(iter_npz_rows(path, "F", 2))
    with pytest.raises(ValueError, match="object arrays"):
        npz_array_info(path, "O")
    with pytest.raises(ValueError, match=r"no array 'X' \(the archive holds \['F', 'O'\]\)"):
        npz_array_info(path, "X")
    with pytest.raises(ValueError, match="must be positive"):
        next(iter_npz_rows(path, "F", 0))
    # A member whose data stop short of what its header declares.
    buf = io.BytesIO()
    np.save(buf, np.zeros((10, 4), np.int32))
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as zf:
        zf.writestr("A.npy", buf.getvalue()[:-20])
    with pytest.raises(ValueError, match=r"A: truncated: the data ends inside row 8 of 10"):
        list(iter_npz_rows(tmp_path / "short.npz", "A", 3))
    # A file cut short (as by an interrupted copy): the zip's central directory is gone.
    blob = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz: not a readable zip archive"):
        npz_array_info(tmp_path / "cut.npz", "F")
    # A member whose stored bytes were corrupted: the CRC check at its end catches it.
    x = np.arange(4000, dtype=np.int64)
    np.savez(tmp_path / "crc.npz", X=x)
    blob = bytearray((tmp_path / "crc.npz").read_bytes())
    at = blob.find(x[1000:1002].tobytes())
    blob[at] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"crc\.npz:X: corrupt member"):
        list(iter_npz_rows(tmp_path / "crc.npz", "X", 1000))


def test_convert_cifar5m(tmp_path, cifar5m):
    path, x, y = cifar5m
    lines = []
    out = tmp_path / "part0.h5"
    assert convert_cifar5m_part(path, out, rows_per_chunk=64, log=lines.append) == 203
    images, labels = read_images(out)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    assert labels.dtype == np.int64
    with h5py.File(out) as f:
        assert f["images"].chunks == (203, 32, 32, 3) and f.attrs["source_file"] == path.name
    assert len(lines) == 4 and "203/203" in lines[-1]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((5, 32, 32, 3), np.int16), "Y": np.zeros(5, np.int64)}, r"X must be uint8 \(N, 32, 32, 3\)"),
        ({"X": np.zeros((5, 32, 32), np.uint8), "Y": np.zeros(5, np.int64)}, r"X must be uint8 \(N, 32, 32, 3\)"),
        ({"X": np.zeros((5, 3, 32, 32), np.uint8), "Y": np.zeros(5, np.int64)}, r"X must be uint8 \(N, 32, 32, 3\)"),
        ({"X": np.zeros((5, 32, 32, 3), np.uint8), "Y": np.zeros(4, np.int64)}, "Y must hold 5 labels"),
        ({"X": np.zeros((5, 32, 32, 3), np.uint8), "Y": np.array([0, 1, 10, 2, 3])}, r"labels must lie in 0\.\.9"),
        ({"X": np.zeros((5, 32, 32, 3), np.uint8), "Y": np.array([0, 1, -1, 2, 3])}, r"labels must lie in 0\.\.9"),
        ({"X": np.zeros((5, 32, 32, 3), np.uint8)}, r"no array 'Y'"),
    ],
)
def test_convert_cifar5m_refuses(tmp_path, arrays, message):
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        convert_cifar5m_part(tmp_path / "p.npz", tmp_path / "out.h5", log=lambda _: None)
    assert not (tmp_path / "out.h5").exists()
    assert not list(tmp_path.glob(".out.h5.*"))  # no temporary file left behind


# ----------------------------------------------------------------------------------- the HDF5 writer


def test_image_writer_streams_and_matches_write_images(tmp_path):
    images = RNG.integers(0, 256, (2500, 8, 8, 1), dtype=np.uint8)
    labels = RNG.integers(0, 10, 2500).astype(np.int32)
    with image_writer(tmp_path / "s.h5", 2500, (8, 8, 1), {"a": 1}) as writer:
        for start in range(0, 2500, 700):
            writer.write(images[start : start + 700], labels[start : start + 700])
    write_images(tmp_path / "w.h5", images, labels, {"a": 1})
    for name in ("s.h5", "w.h5"):
        got_images, got_labels = read_images(tmp_path / name)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        with h5py.File(tmp_path / name) as f:
            assert f["images"].chunks == (1024, 8, 8, 1) and f["labels"].dtype == np.int64 and f.attrs["a"] == 1


def test_image_writer_refuses_incomplete_or_excess(tmp_path):
    images = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match="3 images written but 4 declared"):
        with image_writer(tmp_path / "p.h5", 4, (8, 8, 1)) as writer:
            writer.write(images[:3], np.zeros(3))
    with pytest.raises(ValueError, match="exceeds the 4 declared"):
        with image_writer(tmp_path / "p.h5", 4, (8, 8, 1)) as writer:
            writer.write(images[:3], np.zeros(3))
            writer.write(images[:3], np.zeros(3))
    with pytest.raises(ValueError, match=r"uint8 \(n, 8, 8, 1\)"):
        with image_writer(tmp_path / "p.h5", 4, (8, 8, 1)) as writer:
            writer.write(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4))
    with pytest.raises(ValueError, match=r"float32 \(n, 8, 8, 1\), got uint8"):
        with image_writer(tmp_path / "p.h5", 4, (8, 8, 1), dtype=np.float32) as writer:
            writer.write(images, np.zeros(4))
    with pytest.raises(ValueError, match="stored as one of"):
        with image_writer(tmp_path / "p.h5", 4, (8, 8, 1), dtype=np.float16):
            pass
    assert not list(tmp_path.iterdir())


def test_write_images_empty(tmp_path):
    write_images(tmp_path / "e.h5", np.zeros((0, 8, 8, 1), np.uint8), np.zeros(0, np.int64))
    images, labels = read_images(tmp_path / "e.h5")
    assert images.shape == (0, 8, 8, 1) and labels.shape == (0,)


# ------------------------------------------------------------------------------------------ TinyImageNet

WNIDS = ["n02000000", "n01000000", "n03000000"]  # deliberately not sorted: class k is line k


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny-imagenet-200.zip in the official layout: 3 classes, 3 train images each, 4 val images, one grayscale."""
    root = "tiny-imagenet-200"
    files: dict[str, bytes] = {
        f"{root}/wnids.txt": ("\n".join(WNIDS) + "\n").encode(),
        f"{root}/words.txt": b"n01000000\tthing\n",
    }
    train = {}
    for w in WNIDS:
        files[f"{root}/train/{w}/{w}_boxes.txt"] = b""
        for k in (0, 1, 10):
            array = RNG.integers(0, 256, (64, 64) if (w, k) == (WNIDS[1], 1) else (64, 64, 3), dtype=np.uint8)
            name = f"{root}/train/{w}/images/{w}_{k}.JPEG"
            files[name] = train[name] = jpeg(array)
    val_wnids = {"val_0.JPEG": WNIDS[2], "val_1.JPEG": WNIDS[0], "val_2.JPEG": WNIDS[1], "val_3.JPEG": WNIDS[2]}
    val = {}
    for name, w in val_wnids.items():
        files[f"{root}/val/images/{name}"] = val[name] = jpeg(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    files[f"{root}/val/val_annotations.txt"] = "".join(
        f"{n}\t{w}\t0\t1\t62\t63\n" for n, w in reversed(val_wnids.items())
    ).encode()
    files[f"{root}/test/images/test_0.JPEG"] = jpeg(np.zeros((64, 64, 3), np.uint8))
    path = tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return path, files, train, val, val_wnids


def decode(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def test_tinyimagenet_train(tiny):
    path, _, train, _, _ = tiny
    images, labels = read_tinyimagenet(path, "train")
    names = sorted(train)
    assert images.dtype == np.uint8 and images.shape == (9, 64, 64, 3) and labels.dtype == np.int64
    np.testing.assert_array_equal(images, np.stack([decode(train[n]) for n in names]))
    assert labels.tolist() == [WNIDS.index(n.split("/")[2]) for n in names]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 2, 2, 2]  # sorted names: n01.., n02.., n03..
    gray = images[names.index(f"tiny-imagenet-200/train/{WNIDS[1]}/images/{WNIDS[1]}_1.JPEG")]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all() and gray.std() > 0


def test_tinyimagenet_val(tiny):
    path, _, _, val, val_wnids = tiny
    images, labels = read_tinyimagenet(path, "val")
    names = sorted(val)
    np.testing.assert_array_equal(images, np.stack([decode(val[n]) for n in names]))
    assert labels.tolist() == [WNIDS.index(val_wnids[n]) for n in names] == [2, 0, 1, 2]


def test_tinyimagenet_errors(tmp_path, tiny):
    path, files, *_ = tiny
    with pytest.raises(ValueError, match="the test split has no labels"):
        read_tinyimagenet(path, "test")

    def rezip(name, drop=(), change=None):
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as zf:
            for member, blob in files.items():
                if member not in drop:
                    zf.writestr(member, (change or {}).get(member, blob))
        return out

    with pytest.raises(ValueError, match="missing member tiny-imagenet-200/wnids.txt"):
        read_tinyimagenet(rezip("a.zip", drop={"tiny-imagenet-200/wnids.txt"}), "train")
    with pytest.raises(ValueError, match="missing member tiny-imagenet-200/val/images/val_2.JPEG"):
        read_tinyimagenet(rezip("b.zip", drop={"tiny-imagenet-200/val/images/val_2.JPEG"}), "val")
    wnids = "tiny-imagenet-200/wnids.txt"
    with pytest.raises(ValueError, match="class n03000000, which wnids.txt does not list"):
        read_tinyimagenet(rezip("c.zip", change={wnids: "\n".join(WNIDS[:2]).encode()}), "train")
    broken = "tiny-imagenet-200/train/n01000000/images/n01000000_0.JPEG"
    with pytest.raises(ValueError, match="n01000000_0.JPEG: cannot decode"):
        read_tinyimagenet(rezip("d.zip", change={broken: files[broken][:100]}), "train")
    with pytest.raises(ValueError, match=r"size \(32, 32\)"):
        read_tinyimagenet(rezip("e.zip", change={broken: jpeg(np.zeros((32, 32, 3), np.uint8))}), "train")
