"""IDX reader: real-format files (gzip and raw), validation and clear errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from actlab.data import DatasetFormatError, DatasetNotFoundError, load_fashion_mnist, read_idx
from actlab.data.idx import load_idx_dataset


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_mnist_dir(
    root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = None
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labels)):
            data = idx_bytes(arr)
            name = f"{split}-{kind}-ubyte"
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        if split == "train":
            out = (imgs, labels)
    assert out is not None
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip_gz_and_raw(tmp_path: Path, gz: bool) -> None:
    imgs, labels = write_mnist_dir(tmp_path, gz=gz)
    ds = load_fashion_mnist(tmp_path, "train")
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[:, 0].numpy(), imgs)
    assert np.array_equal(ds.labels.numpy(), labels)
    assert ds.classes[0] == "T-shirt/top"
    assert len(load_fashion_mnist(tmp_path, "test")) == 5


def test_multibyte_types_are_big_endian(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr, 0x0C))
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.int32 and np.array_equal(out, arr)
    f = np.linspace(0, 1, 4).astype(np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(f, 0x0D))
    assert np.array_equal(read_idx(tmp_path / "f.idx"), f)


def test_truncated_raw_file(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "x").write_bytes(data[:-10])
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_idx(tmp_path / "x")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="gzip stream is truncated or corrupt"):
        read_idx(tmp_path / "x.gz")


def test_bad_magic_and_type(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        read_idx(tmp_path / "m")
    (tmp_path / "t").write_bytes(b"\x00\x00\x42\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetFormatError, match="unknown IDX element type"):
        read_idx(tmp_path / "t")
    (tmp_path / "h").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DatasetFormatError, match="truncated IDX header"):
        read_idx(tmp_path / "h")


def test_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(3, np.uint8)))
    )
    with pytest.raises(DatasetFormatError, match="do not match"):
        load_idx_dataset(tmp_path, "train")


def test_missing_directory_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_env_var_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_dir(tmp_path / "fashion-mnist")
    monkeypatch.setenv("ACTLAB_DATA_DIR", str(tmp_path))
    assert len(load_fashion_mnist()) == 12
