"""CIFAR-10 / CIFAR-100 from the standard "python version" batch files, read safely.

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images". Layout:

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each batch is a pickled dict: ``data`` uint8 (N, 3072) = 1024 red, 1024 green, 1024 blue
values of a 32x32 image, row-major; ``labels`` (CIFAR-10) or ``fine_labels`` /
``coarse_labels`` (CIFAR-100) lists of ints. The originals were written by Python 2, so keys
are ``bytes`` when read with ``encoding="bytes"``; both bytes and str keys are accepted.
Batches re-pickled by Python 3 (any protocol up to 4; protocol 2 writes bytes as
``_codecs.encode(text, 'latin1')``) are read as well.

Pickles can run arbitrary code, so these files are read in two steps, neither of which calls
into numpy with values from the file:

1. :func:`scan_pickle` walks the opcodes (``pickletools.genops``, pure Python, nothing
   built): every declared length must fit in the file, memo indices must be small, the op
   count is capped. The C unpickler would otherwise allocate what a 20-byte file declares.
2. :class:`SafeUnpickler` resolves exactly these globals, each to an inert stand-in:
   ``numpy[._]core.multiarray._reconstruct`` (only as numpy itself calls it: ``(ndarray,
   (0,), b'b')``), ``numpy.ndarray`` (a marker, not callable), ``numpy.dtype`` (plain
   numeric types only), ``_codecs.encode`` (str to latin-1 bytes) and ``bytes()`` (empty).
   Every other global is refused with :class:`UnsafePickleError`. After loading, each array
   stand-in becomes a real array built with ``np.frombuffer`` once its shape, type and byte
   count agree.

Every failure is a :class:`DatasetFormatError` (``UnsafePickleError`` is one) naming the file.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actlab.data.base import ImageDataset
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError, data_root

__all__ = ["SafeUnpickler", "UnsafePickleError", "safe_load_pickle", "scan_pickle", "load_cifar"]

_MAX_FILE_BYTES = 1 << 30
MAX_OPS = 5_000_000  # opcodes per pickle (CIFAR-100's train file has about 300,000)
_MAX_NDIM = 32
_MAX_NESTING = 64
_DTYPE_CODES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_LENGTH_OPS = frozenset({"FRAME"})


class UnsafePickleError(DatasetFormatError, pickle.UnpicklingError):
    """A pickle asked for a global that the restricted unpickler does not allow."""


def scan_pickle(data: bytes, *, max_ops: int = MAX_OPS) -> None:
    """Check the opcode stream of ``data`` without building anything.

    Raises :class:`DatasetFormatError` for an unknown opcode, an argument that runs past the
    end, a missing STOP, a frame larger than the rest of the file, a memo index larger than
    the number of opcodes before it, or more than ``max_ops`` opcodes.
    """
    n = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            n += 1
            if n > max_ops:
                raise DatasetFormatError(f"more than {max_ops} pickle opcodes")
            if op.name in _PUT_OPS and (not isinstance(arg, int) or not 0 <= arg <= n):
                raise DatasetFormatError(f"memo index {arg} at byte {pos} is out of range")
            if op.name in _LENGTH_OPS and isinstance(arg, int) and arg > len(data) - (pos or 0):
                raise DatasetFormatError(f"frame of {arg} bytes at byte {pos} runs past the end")
    except DatasetFormatError:
        raise
    except Exception as e:  # genops reports every malformation as ValueError (or worse)
        raise DatasetFormatError(f"not a valid pickle ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- inert stand-ins
class _Marker:
    """Stands for ``numpy.ndarray`` in a pickle: an argument of ``_reconstruct``, never called."""

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, *args: object) -> None:
        raise UnsafePickleError(
            "numpy.ndarray(...) may not be called from a pickle (it would hand out "
            "uninitialised memory); arrays come only through numpy's _reconstruct"
        )

    def __repr__(self) -> str:
        return "<numpy.ndarray reference>"


_NDARRAY = _Marker()


class _DtypeStub:
    """``numpy.dtype(code, align, copy)`` as pickled, plus its BUILD state."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, code: object, *_flags: object) -> None:
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        if not isinstance(code, str) or code not in _DTYPE_CODES:
            raise UnsafePickleError(
                f"numpy dtype {code!r} is not allowed (only {', '.join(sorted(_DTYPE_CODES))})"
            )
        self.code = code
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.code)
        if self.state is None:
            return dt
        st = self.state
        if not isinstance(st, tuple) or len(st) < 5 or any(v is not None for v in st[2:5]):
            raise DatasetFormatError(f"numpy dtype state {st!r:.80} is not a plain numeric type")
        endian = st[1].decode("ascii", "replace") if isinstance(st[1], bytes) else st[1]
        if endian not in ("<", ">", "|", "="):
            raise DatasetFormatError(f"numpy dtype byte order {endian!r} is not valid")
        if endian == "<":
            return dt.newbyteorder("<")
        return dt.newbyteorder(">") if endian == ">" else dt


class _ArrayStub:
    """An ndarray as pickled by numpy: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self) -> np.ndarray:
        st = self.state
        if isinstance(st, tuple) and len(st) == 5:
            st = st[1:]
        if not isinstance(st, tuple) or len(st) != 4:
            raise DatasetFormatError("numpy array without a valid state")
        shape, dtype, fortran, raw = st
        if (
            not isinstance(shape, tuple)
            or len(shape) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise DatasetFormatError(f"numpy array shape {shape!r:.80} is not valid")
        if not isinstance(dtype, _DtypeStub):
            raise DatasetFormatError("numpy array without a plain numeric dtype")
        dt = dtype.resolve()
        if isinstance(raw, str):
            raw = raw.encode("latin-1")  # how Python 2 strings arrive with encoding='latin1'
        if not isinstance(raw, (bytes, bytearray)):
            raise DatasetFormatError(f"numpy array data is {type(raw).__name__}, not bytes")
        need = math.prod(shape) * dt.itemsize
        if need != len(raw):
            raise DatasetFormatError(
                f"numpy array of shape {shape} and type {dt} needs {need} bytes, got {len(raw)}"
            )
        arr = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")
        return arr.copy(order="K")


def _reconstruct(subtype: object, shape: object, code: object) -> _ArrayStub:
    if subtype is not _NDARRAY or shape != (0,) or code not in (b"b", "b"):
        raise UnsafePickleError(
            "numpy _reconstruct may only be called as numpy pickles arrays: (ndarray, (0,), b'b')"
        )
    return _ArrayStub()


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only as encode(str, 'latin1')")
    return codecs.encode(text, "latin-1")


def _empty_bytes(*args: object) -> bytes:
    if args:
        raise UnsafePickleError("bytes(...) is allowed only without arguments")
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, scalars and inert numpy stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: this file is not a plain CIFAR batch "
                "(only dicts, lists, bytes, str, ints and numpy arrays are allowed)"
            )
        return found


def _resolve(obj: Any, level: int = 0) -> Any:
    """``obj`` with every stand-in replaced by the real numpy object."""
    if level > _MAX_NESTING:
        raise DatasetFormatError(f"containers nested more than {_MAX_NESTING} levels deep")
    if isinstance(obj, (_ArrayStub, _DtypeStub)):
        return obj.resolve()
    if obj is _NDARRAY:
        raise DatasetFormatError("a bare numpy.ndarray reference is not data")
    if isinstance(obj, dict):
        return {k: _resolve(v, level + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, level + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, level + 1) for v in obj)
    return obj


def safe_load_pickle(data: bytes, *, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` safely: plain Python types and numeric numpy arrays only.

    Raises :class:`UnsafePickleError` for a refused global and :class:`DatasetFormatError`
    for anything else that is wrong with the stream; no other exception escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"safe_load_pickle needs bytes, got {type(data).__name__}")
    data = bytes(data)
    scan_pickle(data)
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
        return _resolve(obj)
    except DatasetFormatError:
        raise
    except Exception as e:  # the stream is hostile or corrupt: every failure is a format error
        msg = " ".join(str(e).split())
        raise DatasetFormatError(f"corrupt pickle ({type(e).__name__}: {msg})") from None


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def _load_file(path: Path) -> Any:
    size = path.stat().st_size
    if size > _MAX_FILE_BYTES:
        raise DatasetFormatError(f"{path}: larger than 1 GiB, not a CIFAR batch file")
    if size == 0:
        raise DatasetFormatError(f"{path}: empty file, not a CIFAR batch file")
    try:
        return safe_load_pickle(path.read_bytes())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except DatasetFormatError as e:
        raise DatasetFormatError(
            f"{path}: truncated or corrupt CIFAR batch: {e}. "
            "Re-download the python version of the dataset."
        ) from None


def _labels(path: Path, labels: Any, key: str, n: int, num_classes: int) -> np.ndarray:
    if isinstance(labels, list) and all(type(v) is int for v in labels):
        if any(not -(2**62) < v < 2**62 for v in labels):
            raise DatasetFormatError(f"{path}: {key!r} holds integers out of range")
        lab = np.array(labels, dtype=np.int64).reshape(-1)
    elif (
        isinstance(labels, np.ndarray)
        and labels.ndim == 1
        and np.issubdtype(labels.dtype, np.integer)
    ):
        lab = labels.astype(np.int64)
    else:
        what = f"a {type(labels).__name__}"
        if isinstance(labels, np.ndarray):
            what = f"an array of {labels.dtype} {labels.shape}"
        elif isinstance(labels, list):
            bad = next(v for v in labels if type(v) is not int)
            what = f"a list holding a {type(bad).__name__}"
        raise DatasetFormatError(f"{path}: {key!r} must be a list of ints, got {what}")
    if lab.shape[0] != n:
        raise DatasetFormatError(f"{path}: {lab.shape[0]} {key!r} for {n} images")
    bad_at = np.flatnonzero((lab < 0) | (lab >= num_classes))
    if bad_at.size:
        i = int(bad_at[0])
        raise DatasetFormatError(
            f"{path}: {key!r}[{i}] = {int(lab[i])} is outside 0..{num_classes - 1}"
        )
    return lab


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetNotFoundError(f"CIFAR batch file {path} does not exist")
    obj = _load_file(path)
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, label_key)
    except KeyError as e:
        raise DatasetFormatError(f"{path}: batch has no {e.args[0]!r} entry") from None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {what}")
    if data.shape[0] == 0:
        raise DatasetFormatError(f"{path}: the batch holds no images")
    return data, _labels(path, labels, label_key, data.shape[0], num_classes)


def _names(meta_path: Path, key: str, n: int) -> list[str]:
    """Class names from the meta file; numbers (with a warning) when it is unusable."""
    fallback = [str(i) for i in range(n)]
    if not meta_path.is_file():
        return fallback
    try:
        meta = _load_file(meta_path)
    except UnsafePickleError:
        raise  # a hostile file in the dataset folder is reported, not skipped
    except DatasetFormatError as e:
        warnings.warn(f"{e}; using numbers as class names", UserWarning, stacklevel=3)
        return fallback
    raw = meta.get(key, meta.get(key.encode())) if isinstance(meta, dict) else None
    if (
        not isinstance(raw, list)
        or len(raw) != n
        or not all(isinstance(v, (str, bytes)) for v in raw)
    ):
        warnings.warn(
            f"{meta_path}: no list of {n} class names under {key!r}; using numbers",
            UserWarning,
            stacklevel=3,
        )
        return fallback
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in raw]


_LAYOUT = {
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        "batches.meta",
        "label_names",
    ),
    100: ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def load_cifar(
    root: str | Path | None = None, split: str = "train", *, num_classes: int = 10
) -> ImageDataset:
    """CIFAR-10 (``num_classes=10``) or CIFAR-100 (fine labels) as uint8 (N, 3, 32, 32).

    ``root`` is the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` directory or its
    parent; default ``$ACTLAB_DATA_DIR/cifar10`` (``cifar100``).
    """
    if num_classes not in _LAYOUT:
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder, train_files, test_files, label_key, meta_file, names_key = _LAYOUT[num_classes]
    name = f"cifar{num_classes}"
    base = Path(root) if root is not None else data_root(name)
    if base is None:
        raise DatasetNotFoundError(
            f"{name}: no data directory given. Download the CIFAR-{num_classes} 'python version' "
            f"archive, extract it, and pass the {folder} directory as root= (or set "
            f"ACTLAB_DATA_DIR so that $ACTLAB_DATA_DIR/{name}/{folder} exists)."
        )
    d = base / folder if (base / folder).is_dir() else base
    files = train_files if split == "train" else test_files
    missing = [f for f in files if not (d / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name}: {', '.join(missing)} not found in {d}. Download the CIFAR-{num_classes} "
            f"'python version' archive, extract it, and pass the {folder} directory as root=."
        )
    parts = [_read_batch(d / f, label_key, num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageDataset(
        images, torch.from_numpy(labels), _names(d / meta_file, names_key, num_classes), name
    )
