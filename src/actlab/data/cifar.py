"""CIFAR-10 / CIFAR-100 from the standard "python version" batch files, read safely.

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images". Layout:

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each batch is a pickled dict: ``data`` uint8 (N, 3072) = 1024 red, 1024 green, 1024 blue
values of a 32x32 image, row-major; ``labels`` (CIFAR-10) or ``fine_labels`` /
``coarse_labels`` (CIFAR-100) lists of ints. The originals were written by Python 2, so keys
are ``bytes`` when read with ``encoding="bytes"``; both bytes and str keys are accepted.

Pickles can run arbitrary code, so these files are read with :class:`SafeUnpickler`, whose
``find_class`` refuses every global except the four numpy names that a pickled ndarray needs
(``numpy[._]core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``); object
dtypes are refused as well. Everything else in the format is dicts, lists, bytes, str, ints.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actlab.data.base import ImageDataset
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError, data_root

__all__ = ["SafeUnpickler", "UnsafePickleError", "safe_load_pickle", "load_cifar"]

_MAX_FILE_BYTES = 1 << 30


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that the restricted unpickler does not allow."""


def _reconstruct() -> Any:
    """numpy's own ``_reconstruct`` (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    import importlib

    try:
        mod = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1.x
        mod = importlib.import_module("numpy.core.multiarray")
    return mod._reconstruct


def _safe_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError("object dtypes are not allowed in CIFAR batch files")
    return dt


def _safe_ndarray_reconstruct(subtype: Any, *args: Any) -> Any:
    if subtype is not np.ndarray:
        raise UnsafePickleError("only plain numpy.ndarray may be reconstructed")
    return _reconstruct()(subtype, *args)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, scalars and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: this file is not a plain CIFAR batch "
                "(only dicts, lists, bytes, str, ints and numpy arrays are allowed)"
            )
        if name == "_reconstruct":
            return _safe_ndarray_reconstruct
        return np.ndarray if name == "ndarray" else _safe_dtype


def safe_load_pickle(data: bytes, *, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (arrays and plain Python types only)."""
    return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetNotFoundError(f"CIFAR batch file {path} does not exist")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise DatasetFormatError(f"{path}: larger than 1 GiB, not a CIFAR batch file")
    try:
        obj = safe_load_pickle(path.read_bytes())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise DatasetFormatError(
            f"{path}: truncated or corrupt CIFAR batch ({type(e).__name__}: {e}). "
            "Re-download the python version of the dataset."
        ) from None
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, label_key)
    except KeyError as e:
        raise DatasetFormatError(f"{path}: batch has no {e.args[0]!r} entry") from None
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != data.shape[0] or not np.issubdtype(lab.dtype, np.integer):
        raise DatasetFormatError(
            f"{path}: {label_key!r} must be {data.shape[0]} integers, got {lab.dtype} {lab.shape}"
        )
    return data, lab.astype(np.int64)


def _names(meta_path: Path, key: str, n: int) -> list[str]:
    if meta_path.is_file():
        try:
            meta = safe_load_pickle(meta_path.read_bytes())
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in _get(meta, key)]
            if len(names) == n:
                return names
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError):
            pass  # class names are cosmetic; fall back to numbers
    return [str(i) for i in range(n)]


_LAYOUT = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", "batches.meta", "label_names"),
    100: ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def load_cifar(root: str | Path | None = None, split: str = "train", *, num_classes: int = 10) -> ImageDataset:
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
    parts = [_read_batch(d / f, label_key) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(f"{d}: labels outside 0..{num_classes - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageDataset(images, torch.from_numpy(labels), _names(d / meta_file, names_key, num_classes), name)
