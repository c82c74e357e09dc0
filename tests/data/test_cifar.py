"""CIFAR python batches: real-format files, the restricted unpickler, corrupt files."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from actlab.data import DatasetFormatError, DatasetNotFoundError, UnsafePickleError, load_cifar
from actlab.data.cifar import safe_load_pickle


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2's cPickle wrote for the original CIFAR files: protocol 2, bytes
    and str as BINSTRING (py2 ``str``), arrays via numpy.core.multiarray._reconstruct."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_py2_style_writer_matches_the_original_format() -> None:
    raw = py2_pickle({b"data": np.zeros((1, 3072), np.uint8)})
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw


def write_batch(
    path: Path, n: int, label_key: bytes, n_classes: int, seed: int
) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, n_classes, n)]
    batch = {
        b"batch_label": b"training batch",
        label_key: labels,
        b"data": data,
        b"filenames": [b"x.png"] * n,
    }
    path.write_bytes(py2_pickle(batch))
    return data, labels


def write_cifar10(root: Path, n: int = 4) -> list[np.ndarray]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    datas = [write_batch(d / f"data_batch_{i}", n, b"labels", 10, i)[0] for i in range(1, 6)]
    write_batch(d / "test_batch", n, b"labels", 10, 9)
    names = [f"class{i}".encode() for i in range(10)]
    (d / "batches.meta").write_bytes(py2_pickle({b"label_names": names, b"num_vis": 3072}))
    return datas


def test_cifar10_real_layout(tmp_path: Path) -> None:
    datas = write_cifar10(tmp_path)
    ds = load_cifar(tmp_path, "train", num_classes=10)
    assert ds.images.shape == (20, 3, 32, 32)
    # row-major 3072 = 1024 R, 1024 G, 1024 B
    assert np.array_equal(ds.images[0, 1].numpy().ravel(), datas[0][0, 1024:2048])
    assert ds.classes[3] == "class3"
    assert len(load_cifar(tmp_path / "cifar-10-batches-py", "test")) == 4


def test_cifar100_fine_labels_and_str_keys(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split in ("train", "test"):
        data = np.zeros((3, 3072), np.uint8)
        batch = {"data": data, "fine_labels": [0, 99, 5], "coarse_labels": [0, 19, 1]}
        (d / split).write_bytes(pickle.dumps(batch, protocol=4))
    ds = load_cifar(tmp_path, "train", num_classes=100)
    assert ds.labels.tolist() == [0, 99, 5] and ds.num_classes == 100


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps({b"data": _Evil()}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        safe_load_pickle(payload)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)]:
        (d / f).write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="data_batch_1"):
        load_cifar(tmp_path)


@pytest.mark.parametrize("obj", [pickle.loads, eval, getattr, np.load])
def test_other_globals_are_refused(obj: object) -> None:
    with pytest.raises(UnsafePickleError):
        safe_load_pickle(pickle.dumps(obj, protocol=2))


def test_object_arrays_are_refused() -> None:
    arr = np.array([1, "a"], dtype=object)
    with pytest.raises(UnsafePickleError):
        safe_load_pickle(pickle.dumps(arr, protocol=2))


def test_plain_arrays_round_trip() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    for proto in (3, 4):
        out = safe_load_pickle(pickle.dumps({"a": arr, "b": [1, b"x", "y"]}, protocol=proto))
        assert np.array_equal(out["a"], arr) and out["b"] == [1, b"x", "y"]
    out = safe_load_pickle(py2_pickle({"a": arr}))
    assert np.array_equal(out[b"a"], arr)


def test_truncated_batch(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DatasetFormatError, match="data_batch_3.*truncated or corrupt"):
        load_cifar(tmp_path)


def test_wrong_shape(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetFormatError, match=r"\(N, 3072\)"):
        load_cifar(tmp_path, "test")


def test_missing_files_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError, match="python version"):
        load_cifar(tmp_path)
    monkeypatch.delenv("ACTLAB_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="root="):
        load_cifar()


# ---------------------------------------------------------------- re-pickled batches (Python 3)
def _batch(n: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": b"training batch 1 of 5",
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [b"a.png", b"", b"c.png"][:n],
    }


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_python3_repickled_batch_is_read(tmp_path: Path, protocol: int) -> None:
    """Protocol 2 under Python 3 writes bytes as _codecs.encode(str, 'latin1') and b'' as
    bytes(): both are legitimate and are read without admitting anything callable."""
    batch = _batch()
    raw = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:
        assert b"_codecs\nencode" in raw and b"bytes" in raw
    out = safe_load_pickle(raw)
    assert np.array_equal(out["data"], batch["data"]) and out["data"].flags.writeable
    assert out["labels"] == batch["labels"] and out["filenames"] == batch["filenames"]
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (d / f).write_bytes(raw)
    ds = load_cifar(tmp_path, "test")
    assert ds.labels.tolist() == batch["labels"]
    assert np.array_equal(ds.images.reshape(3, -1).numpy(), batch["data"])


@pytest.mark.parametrize("protocol", [2, 4])
def test_arrays_keep_dtype_byte_order_and_layout(protocol: int) -> None:
    arrays = {
        "be": np.arange(6, dtype=">i4").reshape(2, 3),
        "f": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        "lab": np.array([3, 1, 2], dtype=np.int64),
        "b": np.array([True, False]),
        "empty": np.zeros((0, 5), np.uint8),
    }
    out = safe_load_pickle(pickle.dumps(arrays, protocol=protocol))
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and np.array_equal(out[k], v), k


def test_labels_as_integer_array_are_accepted(tmp_path: Path) -> None:
    batch = _batch()
    batch["labels"] = np.array(batch["labels"], dtype=np.int64)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    assert load_cifar(tmp_path, "test").labels.tolist() == batch["labels"].tolist()


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x80\x02cnumpy\nndarray\nK\x02\x85R.", "ndarray"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-8\x86R.", "latin1"),
        (b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.", "without arguments"),
        (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00O8\x85R.", "numpy dtype 'O8'"),
    ],
)
def test_admitted_globals_accept_only_their_numpy_form(payload: bytes, match: str) -> None:
    with pytest.raises(UnsafePickleError, match=match):
        safe_load_pickle(payload)


def test_unsafe_pickle_error_is_a_value_error() -> None:
    assert issubclass(UnsafePickleError, ValueError)
    assert issubclass(UnsafePickleError, DatasetFormatError)
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_corrupt_meta_falls_back_to_numbers_with_a_warning(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(b"\x80\x02}q\x00")
    with pytest.warns(UserWarning, match="batches.meta"):
        ds = load_cifar(tmp_path, "test")
    assert ds.classes == [str(i) for i in range(10)]
