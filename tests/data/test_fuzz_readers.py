"""Property-based fuzzing of the dataset readers on mutated real-format files.

Each reader gets files in its real format (IDX raw and gzip, CIFAR batches as Python 2 and
Python 3 pickles, PNG/JPEG/BMP/GIF/TIFF images) with random bit flips, truncations, header
edits and appended bytes. The only allowed outcomes are success or the reader's own
:class:`DatasetFormatError` (a one-line message naming the file), and the memory a call
allocates stays small (tracemalloc; Pillow's allocations are bounded by ``max_pixels``).

Fixed seed (``derandomize=True``), small example counts, and a wall-clock cap per test: once
the cap is spent the remaining examples return at once (nothing is asserted about time).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from actlab.data import DatasetFormatError, load_image_folder, read_idx
from actlab.data.cifar import _read_batch, safe_load_pickle
from actlab.data.idx import load_idx_dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_cifar import py2_pickle  # noqa: E402

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIME_CAP_S = 20.0
MAX_TRACED_MIB = 48.0


class _Budget:
    """Wall-clock cap for one hypothesis test: ``spent()`` turns true after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start: float | None = None

    def spent(self) -> bool:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        return now - self.start > self.seconds


# ---------------------------------------------------------------- mutations
@st.composite
def mutations(draw: st.DrawFn, header_len: int = 16) -> list[tuple[str, int, int]]:
    """A short list of (kind, position, value) edits; positions are taken modulo the length."""
    kinds = st.sampled_from(["flip", "header", "truncate", "append", "set"])
    op = st.tuples(kinds, st.integers(0, 2**31), st.integers(0, 255))
    ops = draw(st.lists(op, min_size=1, max_size=4))
    return [(k, p if k != "header" else p % header_len, v) for k, p, v in ops]


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            buf = bytearray([value])
            continue
        i = pos % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind in ("header", "set"):
            buf[i] = value
        elif kind == "truncate":
            del buf[i:]
        else:
            buf += bytes([value]) * (1 + pos % 64)
    return bytes(buf)


def outcome(call: Callable[[], object], name: str) -> None:
    """Success or a one-line DatasetFormatError naming ``name``; bounded traced memory."""
    tracemalloc.start()
    try:
        call()
    except DatasetFormatError as e:
        msg = str(e)
        assert "\n" not in msg.strip() and name in msg, msg
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert peak < MAX_TRACED_MIB, f"peak traced memory {peak:.1f} MiB"


# ---------------------------------------------------------------- IDX
def _idx(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


_RNG = np.random.default_rng(0)
_IMAGES = _idx(_RNG.integers(0, 256, (5, 6, 6), dtype=np.uint8), 0x08)
_LABELS = _idx(_RNG.integers(0, 10, 5, dtype=np.uint8), 0x08)
_I32 = _idx(_RNG.integers(-9, 9, (3, 4), dtype=np.int32), 0x0C)
_IDX_SOURCES = {
    "images": _IMAGES,
    "labels": _LABELS,
    "int32": _I32,
    "images.gz": gzip.compress(_IMAGES, mtime=0),
    "labels.gz": gzip.compress(_LABELS, mtime=0),
}
_idx_budget = _Budget(TIME_CAP_S)


@FUZZ
@given(source=st.sampled_from(sorted(_IDX_SOURCES)), ops=mutations(header_len=24))
def test_fuzz_read_idx(tmp_path_factory: pytest.TempPathFactory, source: str, ops: list) -> None:
    if _idx_budget.spent():
        return
    d = tmp_path_factory.mktemp("idx")
    p = d / ("fuzzed" + (".gz" if source.endswith(".gz") else ""))
    p.write_bytes(mutate(_IDX_SOURCES[source], ops))
    outcome(lambda: read_idx(p), p.name)


_ds_budget = _Budget(TIME_CAP_S / 2)


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), gz=st.booleans(), ops=mutations())
def test_fuzz_idx_dataset(
    tmp_path_factory: pytest.TempPathFactory, which: str, gz: bool, ops: list
) -> None:
    if _ds_budget.spent():
        return
    d = tmp_path_factory.mktemp("mnist")
    for kind, data in (("images-idx3", _IMAGES), ("labels-idx1", _LABELS)):
        if kind.startswith(which):
            data = mutate(data, ops)
        name = f"train-{kind}-ubyte"
        (d / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    outcome(lambda: load_idx_dataset(d, "train"), "ubyte")


# ---------------------------------------------------------------- CIFAR
def _batch() -> dict:
    rng = np.random.default_rng(1)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, 3)],
        b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }


def _str_keys(batch: dict) -> dict:
    return {k.decode(): v for k, v in batch.items()}


_CIFAR_SOURCES = {
    "py2": py2_pickle(_batch()),
    "py3-protocol2": pickle.dumps(_str_keys(_batch()), protocol=2),
    "py3-protocol4": pickle.dumps(_str_keys(_batch()), protocol=4),
}
_cifar_budget = _Budget(TIME_CAP_S)


@FUZZ
@given(source=st.sampled_from(sorted(_CIFAR_SOURCES)), ops=mutations(header_len=64))
def test_fuzz_cifar_batch(tmp_path_factory: pytest.TempPathFactory, source: str, ops: list) -> None:
    if _cifar_budget.spent():
        return
    p = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    p.write_bytes(mutate(_CIFAR_SOURCES[source], ops))
    outcome(lambda: _read_batch(p, "labels", 10), "data_batch_1")


_pickle_budget = _Budget(TIME_CAP_S / 2)


@FUZZ
@given(data=st.binary(max_size=256))
def test_fuzz_safe_load_pickle_random_bytes(data: bytes) -> None:
    if _pickle_budget.spent():
        return
    outcome(lambda: safe_load_pickle(b"\x80\x02" + data), "")


# ---------------------------------------------------------------- image folders
def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


_IMAGE_SOURCES = {
    ".png": _encoded("PNG"),
    ".jpg": _encoded("JPEG"),
    ".bmp": _encoded("BMP"),
    ".gif": _encoded("GIF", "P"),
    ".tif": _encoded("TIFF"),
    ".webp": _encoded("WEBP"),
}
_folder_budget = _Budget(TIME_CAP_S)


@FUZZ
@given(ext=st.sampled_from(sorted(_IMAGE_SOURCES)), ops=mutations(header_len=48))
def test_fuzz_image_folder(tmp_path_factory: pytest.TempPathFactory, ext: str, ops: list) -> None:
    if _folder_budget.spent():
        return
    d = tmp_path_factory.mktemp("imgs")
    (d / "cls").mkdir()
    (d / "cls" / f"fuzzed{ext}").write_bytes(mutate(_IMAGE_SOURCES[ext], ops))
    outcome(lambda: load_image_folder(d, size=8, max_pixels=1 << 20), f"fuzzed{ext}")


def test_unmutated_sources_are_read() -> None:
    """The fuzzers start from files every reader accepts."""
    for name, data in _IDX_SOURCES.items():
        assert read_idx_bytes(data, name).size > 0
    for data in _CIFAR_SOURCES.values():
        out = safe_load_pickle(data)
        assert np.array_equal(out.get(b"data", out.get("data")), _batch()[b"data"])


def read_idx_bytes(data: bytes, name: str) -> np.ndarray:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / ("f.gz" if name.endswith(".gz") else "f")
        p.write_bytes(data)
        return read_idx(p)
