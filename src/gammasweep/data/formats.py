"""Readers and converters for the image datasets' published file formats.

Each reader takes the file exactly as its publisher distributes it -- MNIST's IDX files, the CIFAR
``*-python.tar.gz`` archives of pickled batches, CIFAR-5M's ``.npz`` parts, ``tiny-imagenet-200.zip``
-- and returns uint8 images (N, H, W, C) with int64 labels (N,), the layout of the HDF5 pools in
:mod:`gammasweep.data.stream`. Downloading and checksum verification happen before these run; a file that
is nonetheless truncated or malformed raises ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from gammasweep.data.pools import image_writer

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

# --------------------------------------------------------------------------------------------- IDX

# IDX type codes (third magic byte) -> big-endian element types.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not (detected by its magic bytes).

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follows, big-endian, row-major, and must be exactly as long as the dimensions
    say. Returns an array in native byte order.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a truncated or corrupt gzip stream
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({err})") from err
    else:
        data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic 0x{data[:4].hex()} (expected 0x0000TTDD with type code TT in "
            f"{{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}})"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        state = "truncated" if len(data) - header < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {state}: {len(data) - header} bytes after the header, dimensions "
            f"{dims} of {dtype.str} need {expected}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_mnist(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's IDX pair (e.g. ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``).

    Returns uint8 images (N, 28, 28, 1) and int64 labels (N,) in 0..9.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: MNIST images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: MNIST labels must be uint8 (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    _check_labels(labels, 10, labels_path)
    return images[..., None], labels.astype(np.int64)


def _check_labels(labels: np.ndarray, num_classes: int, where: object) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")


# ------------------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    splits: Mapping[str, tuple[str, ...]]  # split -> archive members, in order
    label_key: bytes
    num_classes: int


_CIFAR_LAYOUTS = (
    _CifarLayout(
        "CIFAR-10",
        {
            "train": tuple(f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)),
            "test": ("cifar-10-batches-py/test_batch",),
        },
        b"labels",
        10,
    ),
    _CifarLayout(
        "CIFAR-100", {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",)}, b"fine_labels", 100
    ),
)


def read_cifar(tar_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 or CIFAR-100 (detected from the members) from the official ``*-python.tar.gz``.

    Returns uint8 images (N, 32, 32, 3), HWC, and int64 labels (N,): CIFAR-10's ``labels`` (0..9)
    from ``data_batch_1..5`` (``split="train"``) or ``test_batch`` (``"test"``); CIFAR-100's
    ``fine_labels`` (0..99) from ``train`` or ``test``.

    Each member is a pickle, a dict with ``b"data"`` (N x 3072 uint8: the R, G and B planes of each
    32 x 32 image, channel-major) and the labels. The pickles are read by a restricted unpickler
    (:class:`_CifarUnpickler`), pinned or not: a member that names any global a CIFAR batch does not
    need (``os.system``, say) is refused with ``ValueError`` before any of it runs.
    """
    return _read_cifar(tar_path, split, None)


def read_cifar10(tar_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from ``cifar-10-python.tar.gz``; see :func:`read_cifar`."""
    return _read_cifar(tar_path, split, "CIFAR-10")


def read_cifar100(tar_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 (fine labels) from ``cifar-100-python.tar.gz``; see :func:`read_cifar`."""
    return _read_cifar(tar_path, split, "CIFAR-100")


def _read_cifar(tar_path: str | Path, split: str, expect: str | None) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    wanted = {m for layout in _CIFAR_LAYOUTS for m in layout.splits[split]}
    found: dict[str, bytes] = {}
    try:
        # One streaming pass: the gzip stream is decompressed once, and only the wanted members are kept.
        with tarfile.open(tar_path, "r|*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{tar_path}: not a readable tar archive ({err})") from err
    layouts = [layout for layout in _CIFAR_LAYOUTS if any(m in found for m in layout.splits[split])]
    if not layouts:
        expected = " or ".join(f"{lay.name}: {', '.join(lay.splits[split])}" for lay in _CIFAR_LAYOUTS)
        raise ValueError(f"{tar_path}: no CIFAR {split} members found (expected {expected})")
    layout = layouts[0]
    if expect is not None and layout.name != expect:
        raise ValueError(f"{tar_path} is a {layout.name} archive, not {expect}")
    missing = [m for m in layout.splits[split] if m not in found]
    if missing:
        raise ValueError(f"{tar_path}: {layout.name} archive lacks member(s) {', '.join(missing)}")
    parts = [_cifar_batch(found[m], layout, f"{tar_path}:{m}") for m in layout.splits[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _ForeignGlobal(pickle.UnpicklingError):
    """A pickle names a global that a CIFAR batch never holds."""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds and nothing else: dicts, lists, ints and byte strings
    (opcodes, no globals; Python 3 writes bytes at protocol 2 as ``_codecs.encode(text, "latin1")``)
    and numpy arrays, which name ``_reconstruct``, ``ndarray`` and ``dtype``. Any other global
    (``os.system``, ``builtins.exec``, ...) is refused before it is looked up, so nothing runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # how CIFAR's own files (numpy 1) name it
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # str -> bytes by a named codec: no code of the file's choosing
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise _ForeignGlobal(
                f"refused to load {module}.{name}: a CIFAR batch holds only numpy arrays, dicts, lists, "
                "bytes and ints, so this file is not one (a crafted pickle would run code here)"
            ) from None


def _cifar_batch(blob: bytes, layout: _CifarLayout, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _ForeignGlobal as err:
        raise ValueError(f"{where}: {err}") from None
    except Exception as err:
        raise ValueError(f"{where}: not a readable pickle ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or layout.label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{where}: expected a dict with b'data' and {layout.label_key!r}, got {keys}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{where}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or (len(labels) and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"{where}: {layout.label_key!r} must hold {len(data)} integers, got {labels.dtype} {labels.shape}"
        )
    _check_labels(labels, layout.num_classes, where)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW planes -> HWC
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------ what a file is

# How a published file begins, by the ending of its name: (format, offset, magic bytes).
_ZIP_MAGIC = b"PK\x03\x04"
_MAGIC = {
    ".gz": ("gzip", 0, _GZIP_MAGIC),  # MNIST's IDX files, the CIFAR archives
    ".zip": ("zip", 0, _ZIP_MAGIC),  # tiny-imagenet-200.zip
    ".npz": ("npz (zip)", 0, _ZIP_MAGIC),  # CIFAR-5M's parts
    ".tar": ("tar", 257, b"ustar"),
}


def format_problem(path: str | Path, name: str) -> str | None:
    """Why the file at ``path`` cannot be a published file called ``name`` (a file name or a URL's path),
    judged by its first bytes; None if it can be, or if the ending of ``name`` is not one known here."""
    kind, offset, magic = _MAGIC.get(PurePosixPath(name).suffix.lower(), (None, 0, b""))
    if kind is None:
        return None
    with open(path, "rb") as f:
        head = f.read(max(offset + len(magic), 64))
    if head[offset : offset + len(magic)] == magic:
        return None
    html = head.lstrip().lower().startswith((b"<!doctype html", b"<html"))
    return f"is not a {kind} file: it begins {head[:64]!r}" + (" (an HTML page, not data)" if html else "")


# --------------------------------------------------------------------------------------- npz (CIFAR-5M)

_READ_BYTES = 1 << 22  # bytes per read from a zip member


def _open_zip(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a readable zip archive ({err})") from err


def _open_npy(zf: zipfile.ZipFile, npz_path: str | Path, key: str):
    """Open ``key``'s .npy member and parse its header: (stream positioned at the data, shape, dtype)."""
    name = key if key.endswith(".npy") else f"{key}.npy"
    try:
        fp = zf.open(name)
    except KeyError:
        keys = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise ValueError(f"{npz_path}: no array {key!r} (the archive holds {keys})") from None
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f".npy format version {version} is not supported (only 1.0 and 2.0)")
    except ValueError as err:
        fp.close()
        raise ValueError(f"{npz_path}:{name}: bad .npy header: {err}") from err
    if fortran_order and len(shape) > 1:
        fp.close()
        raise ValueError(f"{npz_path}:{name}: Fortran-order arrays cannot be streamed by rows; save it C-ordered")
    if dtype.hasobject:
        fp.close()
        raise ValueError(f"{npz_path}:{name}: object arrays are not supported (they would need pickle)")
    return fp, tuple(shape), dtype


def npz_array_info(npz_path: str | Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``key`` in an .npz, from its .npy header alone."""
    with _open_zip(npz_path) as zf:
        fp, shape, dtype = _open_npy(zf, npz_path, key)
        fp.close()
    return shape, dtype


def iter_npz_rows(npz_path: str | Path, key: str, rows_per_chunk: int) -> Iterator[np.ndarray]:
    """Yield array ``key`` of an .npz (stored or deflated) in blocks of ``rows_per_chunk`` rows.

    The member is read as a stream, never loaded whole: memory holds the block being read (and the
    previous one, while the caller still holds it).
    The blocks are writable arrays of the stored dtype with shape (rows, *shape[1:]); the last may
    be shorter. The member's CRC is checked when its end is reached.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be positive, got {rows_per_chunk}")
    with _open_zip(npz_path) as zf:
        fp, shape, dtype = _open_npy(zf, npz_path, key)
        with fp:
            if not shape:
                raise ValueError(f"{npz_path}:{key}: a 0-d array has no rows")
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], rows_per_chunk):
                rows = min(rows_per_chunk, shape[0] - start)
                buf = bytearray(rows * row_bytes)
                view, got = memoryview(buf), 0
                try:
                    while got < len(buf):
                        n = fp.readinto(view[got : got + _READ_BYTES])  # small reads: no block-sized copies
                        if not n:
                            break
                        got += n
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
                    raise ValueError(f"{npz_path}:{key}: corrupt member at row {start} ({err})") from err
                if got < len(buf):
                    row = start + got // max(row_bytes, 1)
                    raise ValueError(f"{npz_path}:{key}: truncated: the data ends inside row {row} of {shape[0]}")
                yield np.frombuffer(buf, dtype).reshape(rows, *shape[1:])
            try:
                extra = fp.read(1)  # reach the end of the member, where zipfile checks its CRC
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
                raise ValueError(f"{npz_path}:{key}: corrupt member ({err})") from err
            if extra:
                raise ValueError(f"{npz_path}:{key}: trailing bytes after the {shape[0]} rows its header declares")


def convert_cifar5m_part(
    npz_path: str | Path, out_path: str | Path, rows_per_chunk: int = 65536, log: Callable[[str], object] = print
) -> int:
    """Convert one CIFAR-5M part (``cifar5m_part<k>.npz``: ``X`` uint8 (N, 32, 32, 3), ``Y`` labels)
    to an HDF5 pool (see :mod:`gammasweep.data.stream`), streaming ``rows_per_chunk`` images at a time.

    The labels are read and checked (N of them, all in 0..9) before any image is written; the output
    appears atomically, only once complete. Logs one progress line per block; returns N.
    """
    npz_path = Path(npz_path)
    x_shape, x_dtype = npz_array_info(npz_path, "X")
    y_shape, y_dtype = npz_array_info(npz_path, "Y")
    if x_dtype != np.uint8 or len(x_shape) != 4 or x_shape[1:] != (32, 32, 3):
        raise ValueError(f"{npz_path}: X must be uint8 (N, 32, 32, 3), got {x_dtype} {x_shape}")
    total = x_shape[0]
    if y_shape != (total,) or not (np.issubdtype(y_dtype, np.integer) or np.issubdtype(y_dtype, np.floating)):
        raise ValueError(f"{npz_path}: Y must hold {total} labels (one per image of X), got {y_dtype} {y_shape}")
    labels = np.concatenate([np.zeros(0, y_dtype), *iter_npz_rows(npz_path, "Y", max(total, 1))])
    if np.issubdtype(y_dtype, np.floating) and not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{npz_path}: Y holds non-integer labels")
    _check_labels(labels, 10, f"{npz_path}: Y")
    labels = labels.astype(np.int64)

    start = time.monotonic()
    with image_writer(out_path, total, (32, 32, 3), {"source_file": npz_path.name}) as writer:
        for block in iter_npz_rows(npz_path, "X", rows_per_chunk):
            writer.write(block, labels[writer.written : writer.written + len(block)])
            elapsed = time.monotonic() - start
            log(
                f"{npz_path.name}: {writer.written}/{total} images ({100 * writer.written / max(total, 1):.1f}%) "
                f"in {elapsed:.1f} s"
            )
    return total


# ----------------------------------------------------------------------------------------- TinyImageNet

_TINY = "tiny-imagenet-200"


def read_tinyimagenet(zip_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """TinyImageNet from the official ``tiny-imagenet-200.zip``: uint8 (N, 64, 64, 3), int64 (N,).

    Class k is the k-th line of ``wnids.txt``. ``split="train"`` reads
    ``train/<wnid>/images/*.JPEG``; ``"val"`` reads ``val/images/*.JPEG``, labelled by
    ``val/val_annotations.txt`` (filename, wnid, bounding box; tab-separated). The published test
    split has no labels and is refused. Images come in sorted member-name order; grayscale JPEGs
    are converted to RGB.
    """
    from PIL import Image

    if split not in ("train", "val"):
        raise ValueError(f"TinyImageNet split must be 'train' or 'val' (the test split has no labels), got {split!r}")
    with _open_zip(zip_path) as zf:
        names = set(zf.namelist())

        def text(member: str) -> list[str]:
            if member not in names:
                raise ValueError(f"{zip_path}: missing member {member}")
            return [line.strip() for line in zf.read(member).decode().splitlines() if line.strip()]

        wnids = text(f"{_TINY}/wnids.txt")
        if len(set(wnids)) != len(wnids):
            raise ValueError(f"{zip_path}: {_TINY}/wnids.txt lists a class twice")
        index = {w: k for k, w in enumerate(wnids)}

        members: list[tuple[str, str]] = []  # (member, wnid)
        if split == "train":
            for name in names:
                parts = PurePosixPath(name).parts
                if (
                    len(parts) == 5
                    and parts[:2] == (_TINY, "train")
                    and parts[3] == "images"
                    and parts[4].endswith(".JPEG")
                ):
                    if parts[2] not in index:
                        raise ValueError(f"{zip_path}: {name} is of class {parts[2]}, which wnids.txt does not list")
                    members.append((name, parts[2]))
        else:
            images = {
                name
                for name in names
                if PurePosixPath(name).parent == PurePosixPath(_TINY, "val", "images") and name.endswith(".JPEG")
            }
            annotated = {}
            for line in text(f"{_TINY}/val/val_annotations.txt"):
                fields = line.split("\t")
                if len(fields) < 2:
                    raise ValueError(f"{zip_path}: malformed line in val_annotations.txt: {line!r}")
                if fields[1] not in index:
                    raise ValueError(
                        f"{zip_path}: val image {fields[0]} is of class {fields[1]}, which wnids.txt does not list"
                    )
                annotated[f"{_TINY}/val/images/{fields[0]}"] = fields[1]
            unlabelled, absent = sorted(images - annotated.keys()), sorted(annotated.keys() - images)
            if unlabelled:
                raise ValueError(f"{zip_path}: {len(unlabelled)} val images have no annotation, e.g. {unlabelled[0]}")
            if absent:
                raise ValueError(
                    f"{zip_path}: {len(absent)} annotated val images are missing, e.g. missing member {absent[0]}"
                )
            members = list(annotated.items())
        if not members:
            raise ValueError(f"{zip_path}: no {split} images found under {_TINY}/")
        members.sort()

        out = np.empty((len(members), 64, 64, 3), np.uint8)
        for k, (name, _) in enumerate(members):
            try:
                with Image.open(io.BytesIO(zf.read(name))) as img:
                    img = img.convert("RGB")
                    if img.size != (64, 64):
                        raise ValueError(f"size {img.size}, expected (64, 64)")
                    out[k] = np.asarray(img)
            except Exception as err:
                raise ValueError(f"{zip_path}:{name}: cannot decode a 64 x 64 image ({err})") from err
        labels = np.array([index[w] for _, w in members], np.int64)
    return out, labels
