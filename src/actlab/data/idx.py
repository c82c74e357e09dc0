"""IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.

Format (LeCun et al., "The MNIST database"; Xiao et al. 2017, "Fashion-MNIST"):

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64 (multi-byte types are big-endian)
    byte  3     number of dimensions d
    4 .. 4+4d   each dimension as a big-endian uint32
    then        prod(dims) elements, row-major

Compression is detected from the gzip magic bytes (1f 8b), not from the file name. The
header is read first from a streaming reader and checked (type, at least one dimension, no
empty array, payload size overflow-free and at most ``max_bytes``, and for gzip within what
deflate can expand the file to); then exactly the declared payload is read and trailing
bytes are refused, so a small file never makes the reader allocate much. Float files must
hold finite numbers; a dataset needs uint8 (N, H, W) images and integer labels in range.
Every problem raises :class:`DatasetFormatError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from actlab.data.base import ImageDataset
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError, data_root

__all__ = ["read_idx", "load_idx_dataset", "load_fashion_mnist", "load_mnist", "FASHION_CLASSES"]

MAX_BYTES = 1 << 30  # payload size cap of read_idx (Fashion-MNIST's largest file is 47 MB)
_CHUNK = 1 << 20
_MAX_DEFLATE_RATIO = 1100  # deflate cannot expand more than ~1032:1 (plus headers)

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_DIR = "/usr/share/datasets/mnist"

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _fail(path: Path, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: {what}. Re-download or reinstall the file.")


def _read_exact(f: BinaryIO, n: int, path: Path) -> bytearray:
    """Up to ``n`` bytes from ``f``, read in chunks: memory never exceeds what is there."""
    buf = bytearray()
    try:
        while len(buf) < n:
            chunk = f.read(min(n - len(buf), _CHUNK))
            if not chunk:
                break
            buf += chunk
    except (EOFError, OSError, zlib.error) as e:
        raise _fail(
            path, f"the gzip stream is truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    return buf


def _stream(raw: BinaryIO) -> tuple[BinaryIO, bool]:
    """(stream, gzip?) over an open file; compression is detected from the magic bytes."""
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), True  # type: ignore[return-value]
    return raw, False


def read_idx(path: str | Path, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array of its declared type and shape.

    The header is read and checked first, from a streaming reader: the payload size it
    declares must be positive, at most ``max_bytes`` and (for gzip) within what the
    compressed file can hold; then exactly that many bytes are read and anything after them
    is refused. Every problem raises :class:`DatasetFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"IDX file {path} does not exist")
    with open(path, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        f, gz = _stream(raw)
        head = _read_exact(f, 4, path)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise DatasetFormatError(
                f"{path}: not an IDX file (magic number must start with two zero bytes, got "
                f"{head.hex() or 'an empty file'})"
            )
        code, ndim = head[2], head[3]
        if code not in _DTYPES:
            raise DatasetFormatError(f"{path}: unknown IDX element type 0x{code:02x}")
        if ndim == 0:
            raise DatasetFormatError(f"{path}: IDX header declares 0 dimensions")
        dim_bytes = _read_exact(f, 4 * ndim, path)
        if len(dim_bytes) < 4 * ndim:
            raise DatasetFormatError(f"{path}: truncated IDX header ({4 + len(dim_bytes)} bytes)")
        dims = struct.unpack(f">{ndim}I", dim_bytes)
        dtype = np.dtype(_DTYPES[code])
        if 0 in dims:
            raise DatasetFormatError(
                f"{path}: IDX header declares an empty array of shape {dims}; a dataset file "
                "needs at least one element"
            )
        expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
        if expected > max_bytes:
            raise DatasetFormatError(
                f"{path}: IDX header declares shape {dims} ({expected} bytes of data), more than "
                f"the reader's limit of {max_bytes} bytes (read_idx(..., max_bytes=...) raises it)"
            )
        header = 4 + 4 * ndim
        if gz and expected > _MAX_DEFLATE_RATIO * file_size:
            raise _fail(
                path,
                f"file truncated: header declares shape {dims} ({expected} bytes of data) but a "
                f"gzip file of {file_size} bytes cannot hold that much",
            )
        if not gz and file_size - header != expected:
            got = file_size - header
            what = "truncated" if got < expected else "has trailing bytes"
            raise _fail(
                path,
                f"file {what}: header declares shape {dims} ({expected} bytes of data) but "
                f"{got} bytes follow",
            )
        data = _read_exact(f, expected, path)
        if len(data) < expected:
            raise _fail(
                path,
                f"file truncated: header declares shape {dims} ({expected} bytes of data) but "
                f"only {len(data)} bytes follow",
            )
        if _read_exact(f, 1, path):
            raise _fail(
                path, f"file has trailing bytes after the {expected} bytes of data of shape {dims}"
            )
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)  # writable: data is a bytearray
    arr = arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))
    if dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DatasetFormatError(
                f"{path}: holds {bad.size} NaN or infinite values (the first at flat index "
                f"{int(bad[0])}); a dataset file must hold finite numbers"
            )
    return arr


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = root / name
        if p.is_file():
            return p
    return None


def load_idx_dataset(
    root: str | Path, split: str = "train", *, classes: list[str] | None = None, name: str = "idx"
) -> ImageDataset:
    """Load the ``train`` or ``test`` split of an MNIST-layout directory of IDX files."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    img_stem, lbl_stem = _FILES[split]
    img_path, lbl_path = _find(root, img_stem), _find(root, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise DatasetNotFoundError(
            f"{name}: {missing}[.gz] not found in {root}. For Fashion-MNIST install the Debian "
            "package `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist), or put "
            "the four standard IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a directory and pass it as "
            "root= (or set ACTLAB_DATA_DIR)."
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetFormatError(
            f"{img_path}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"{lbl_path}: labels must be integers (IDX type uint8, int8, int16 or int32), got "
            f"{labels.dtype}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(
            f"{lbl_path}: {labels.shape} labels do not match {images.shape[0]} images in {img_path}"
        )
    n_cls = len(classes) if classes else 10
    bad = (labels < 0) | (labels >= n_cls)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetFormatError(
            f"{lbl_path}: label {int(labels[i])} at index {i} is outside 0..{n_cls - 1}"
        )
    return ImageDataset(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        list(classes) if classes else [],
        name,
    )


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28x28 grey images, 10 classes.

    Default directory: ``$ACTLAB_DATA_DIR/fashion-mnist`` or /usr/share/datasets/fashion-mnist
    (Debian package ``dataset-fashion-mnist``).
    """
    path = Path(root) if root is not None else data_root("fashion-mnist", FASHION_MNIST_DIR)
    assert path is not None
    return load_idx_dataset(path, split, classes=FASHION_CLASSES, name="fashion-mnist")


def load_mnist(root: str | Path | None = None, split: str = "train") -> ImageDataset:
    """MNIST digits from the same IDX layout (default ``$ACTLAB_DATA_DIR/mnist``)."""
    path = Path(root) if root is not None else data_root("mnist", MNIST_DIR)
    assert path is not None
    return load_idx_dataset(path, split, classes=[str(i) for i in range(10)], name="mnist")
