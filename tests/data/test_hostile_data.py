"""Hostile inputs for every dataset reader: a one-line error naming the problem and the file.

Each case writes its files into a fresh folder, calls one reader and is classified as

    clear       ValueError/OSError (or a subclass) with a one-line message naming the file
    unclear     such an error, but on several lines or without the file's name
    traceback   any other exception type (the CLI would print a traceback)
    silent      no error: the input was accepted
    memory      the call allocated more than the case's bound (traced by tracemalloc)
    wrote       files appeared in the folder (nothing may be written, nothing executed)

and the test asserts ``clear``. ``python tests/data/test_hostile_data.py`` prints the table
and the counts (the census quoted in issue 10's closing note).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actlab.data import load_cifar, load_fashion_mnist, load_image_folder, read_idx
from actlab.data.cifar import safe_load_pickle

Call = Callable[[], object]
Case = Callable[[Path], tuple[Call, str]]


# ---------------------------------------------------------------- classification
def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def classify(case: Case, root: Path, max_mib: float | None = None) -> str:
    """Run one case in ``root`` and say how the reader answered (see the module docstring)."""
    call, name = case(root)
    before = _snapshot(root)
    tracing = max_mib is not None
    if tracing:
        tracemalloc.start()
    try:
        call()
    except (ValueError, OSError) as e:
        msg = str(e)
        result = "clear" if msg and "\n" not in msg.strip() and name in msg else f"unclear: {msg!r}"
    except Exception as e:  # noqa: BLE001 - the census counts exactly these
        result = f"traceback: {type(e).__name__}: {str(e)[:200]}"
    else:
        result = "silent"
    finally:
        if tracing:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    if tracing and max_mib is not None and peak > max_mib:
        result = f"memory: peak {peak:.0f} MiB > {max_mib:g} MiB ({result})"
    after = _snapshot(root)
    if after != before:
        result = f"wrote {sorted(after - before)} ({result})"
    return result


# ---------------------------------------------------------------- IDX
def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _mnist(root: Path, images: bytes, labels: bytes, gz: bool = True) -> Path:
    d = root / "fmnist"
    d.mkdir()
    for stem, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (d / stem).write_bytes(data)
    return d


def _good_images(n: int = 4) -> bytes:
    return idx_bytes(np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8))


def _good_labels(n: int = 4) -> bytes:
    return idx_bytes(np.arange(n, dtype=np.uint8) % 10)


def _idx_file(name: str, data: bytes, gz: bool = False) -> Case:
    def build(root: Path) -> tuple[Call, str]:
        p = root / name
        p.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
        return (lambda: read_idx(p)), name

    return build


def _idx_dataset(images: bytes, labels: bytes, name: str, gz: bool = True) -> Case:
    def build(root: Path) -> tuple[Call, str]:
        d = _mnist(root, images, labels, gz)
        return (lambda: load_fashion_mnist(d, "train")), name

    return build


def _idx_bomb(root: Path) -> tuple[Call, str]:
    # a 1-byte array followed by 64 MiB of zeros (64 KiB compressed): read only the header
    p = root / "bomb.gz"
    with gzip.open(p, "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]))
        chunk = bytes(1 << 20)
        for _ in range(64):
            f.write(chunk)
    return (lambda: read_idx(p)), "bomb.gz"


def _idx_claims_huge(root: Path) -> tuple[Call, str]:
    # the header declares 60000 x 28 x 28 but a 40-byte gzip file cannot hold 47 MB
    p = root / "claims.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28)))
    return (lambda: read_idx(p)), "claims.gz"


def _idx_sparse_huge(root: Path) -> tuple[Call, str]:
    # a sparse 3 GiB raw file whose header matches its size: over the reader's size cap
    p = root / "huge.idx"
    n = 3 << 30
    with open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", n))
        f.truncate(8 + n)
    return (lambda: read_idx(p)), "huge.idx"


_OVERFLOW = bytes([0, 0, 8, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536)
_OVERFLOW_I4 = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2**32 - 1, 2**31)
_TRAILING_GZ = gzip.compress(_good_labels()) + b"garbage after the stream"

IDX_CASES: dict[str, Case] = {
    "idx-gzip-bomb": _idx_bomb,
    "idx-header-claims-more-than-gzip-can-hold": _idx_claims_huge,
    "idx-size-over-cap": _idx_sparse_huge,
    "idx-dims-product-wraps-int64": _idx_file("wrap.idx", _OVERFLOW),
    "idx-dims-product-wraps-int64-gz": _idx_file("wrap.gz", _OVERFLOW, gz=True),
    "idx-dims-product-overflow-int32": _idx_file("ov4.idx", _OVERFLOW_I4),
    "idx-zero-dims": _idx_file("d0.idx", bytes([0, 0, 8, 0])),
    "idx-empty-file": _idx_file("empty.idx", b""),
    "idx-bad-magic": _idx_file("magic.idx", b"\x01\x02\x08\x01\x00\x00\x00\x01\x00"),
    "idx-unknown-type": _idx_file("type.idx", b"\x00\x00\x42\x01\x00\x00\x00\x01\x00"),
    "idx-truncated-header": _idx_file("hdr.idx", b"\x00\x00\x08\x03\x00\x00"),
    "idx-truncated-payload": _idx_file("short.idx", _good_images()[:-10]),
    "idx-trailing-bytes": _idx_file("long.idx", _good_images() + b"xx"),
    "idx-trailing-bytes-gz": _idx_file("long.gz", _good_images() + b"xx", gz=True),
    "idx-garbage-after-gzip": _idx_file("after.gz", b"", gz=False),
    "idx-truncated-gzip": _idx_file("trunc.gz", gzip.compress(_good_images())[:200]),
    "idx-zero-length-array": _idx_file("zero.idx", idx_bytes(np.zeros((0, 28, 28), np.uint8))),
    "idx-nan-floats": _idx_file("nan.idx", idx_bytes(np.array([0.5, np.nan, 1.0], ">f4"), 0x0D)),
    "idx-float-labels": _idx_dataset(
        _good_images(), idx_bytes(np.arange(4, dtype=np.float32), 0x0D), "train-labels"
    ),
    "idx-nan-labels": _idx_dataset(
        _good_images(), idx_bytes(np.full(4, np.nan, np.float64), 0x0E), "train-labels"
    ),
    "idx-label-out-of-range": _idx_dataset(
        _good_images(), idx_bytes(np.array([0, 1, 2, 10], np.uint8)), "train-labels"
    ),
    "idx-negative-label": _idx_dataset(
        _good_images(), idx_bytes(np.array([0, 1, -1, 2], np.int32), 0x0C), "train-labels"
    ),
    "idx-empty-dataset": _idx_dataset(_good_images(0), _good_labels(0), "train-images"),
    "idx-zero-by-zero-images": _idx_dataset(
        idx_bytes(np.zeros((4, 0, 0), np.uint8)), _good_labels(), "train-images"
    ),
    "idx-float-images": _idx_dataset(
        idx_bytes(np.zeros((4, 28, 28), np.float32), 0x0D), _good_labels(), "train-images"
    ),
    "idx-label-count-mismatch": _idx_dataset(_good_images(), _good_labels(3), "train-labels"),
    "idx-labels-2d": _idx_dataset(
        _good_images(), idx_bytes(np.zeros((4, 1), np.uint8)), "train-labels"
    ),
    "idx-raw-images-truncated": _idx_dataset(
        _good_images()[:-1], _good_labels(), "train-images", gz=False
    ),
}


def _patch_garbage_after(root: Path) -> tuple[Call, str]:
    p = root / "after.gz"
    p.write_bytes(_TRAILING_GZ)
    return (lambda: read_idx(p)), "after.gz"


IDX_CASES["idx-garbage-after-gzip"] = _patch_garbage_after


# ---------------------------------------------------------------- CIFAR
P = pickle
_PROTO2 = b"\x80\x02"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _binunicode(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _batch_with(data_ops: bytes, labels: bytes = b"]q\x00(K\x00K\x01e") -> bytes:
    """A protocol-2 dict {'data': <data_ops>, 'labels': <labels>} from raw opcodes."""
    return _PROTO2 + b"}(" + _binunicode("data") + data_ops + _binunicode("labels") + labels + b"u."


# numpy.ndarray((2, 3072), 'u1') called directly: uninitialised memory as images
_NDARRAY_CALL = _batch_with(
    _global("numpy", "ndarray") + b"K\x02M\x00\x0c\x86" + _binunicode("u1") + b"\x86R"
)
# _reconstruct(ndarray, (2**40,), 'b'): a terabyte allocation from a 60-byte file
_RECONSTRUCT_HUGE = _batch_with(
    _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray")
    + b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85"
    + b"U\x01b\x87R"
)
# BINBYTES8 declaring 2**50 bytes: the C unpickler allocates before reading
_BINBYTES8_HUGE = _batch_with(b"\x8e" + struct.pack("<Q", 2**50) + b"abc")
# LONG_BINPUT at index 2**31 - 1: the unpickler's memo grows to 16 GiB
_MEMO_HUGE = _batch_with(b"K\x01r" + struct.pack("<I", 2**31 - 1))
# BUILD on a dict (no __setstate__, no __dict__)
_BUILD_ON_DICT = _PROTO2 + b"}}b."
# deeply nested lists as 'data'
_NESTED = _batch_with(b"]" * 100_000 + b"a" * 99_999)
# a dtype with a huge void item size
_VOID_DTYPE = _batch_with(
    _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray")
    + b"K\x00\x85U\x01b\x87R"
    + b"(K\x01K\x02\x85"
    + _global("numpy", "dtype")
    + _binunicode("V2000000000")
    + b"\x89\x88\x87R"
    + b"C\x00\x89C\x00tb"
)
_EVIL_MARKER = "pwned_by_pickle"


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {_EVIL_MARKER}",))


def _cifar_dir(root: Path, batch: bytes, *, meta: bytes | None = None) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir()
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=4)
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(batch if i == 3 else good)
    if meta is not None:
        (d / "batches.meta").write_bytes(meta)
    return d


def _cifar(batch: bytes | Callable[[], bytes]) -> Case:
    def build(root: Path) -> tuple[Call, str]:
        data = batch() if callable(batch) else batch
        d = _cifar_dir(root, data)
        return (lambda: load_cifar(d, "train")), "data_batch_3"

    return build


def _cifar_obj(obj: object, protocol: int = 4) -> Case:
    return _cifar(lambda: pickle.dumps(obj, protocol=protocol))


def _cifar_evil_in_cwd(root: Path) -> tuple[Call, str]:
    d = _cifar_dir(root, pickle.dumps({"data": _Evil()}, protocol=2))

    def call() -> object:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            return load_cifar(d, "train")
        finally:
            os.chdir(cwd)

    return call, "data_batch_3"


def _cifar_evil_meta(root: Path) -> tuple[Call, str]:
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=4)
    d = _cifar_dir(root, good, meta=pickle.dumps({"label_names": _Evil()}, protocol=2))

    def call() -> object:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            return load_cifar(d, "train")
        finally:
            os.chdir(cwd)

    return call, "batches.meta"


def _cifar_sparse_huge(root: Path) -> tuple[Call, str]:
    d = _cifar_dir(root, b"")
    with open(d / "data_batch_3", "wb") as f:
        f.truncate((1 << 30) + 1)
    return (lambda: load_cifar(d, "train")), "data_batch_3"


def _safe_load(data: bytes) -> Case:
    def build(root: Path) -> tuple[Call, str]:
        return (lambda: safe_load_pickle(data)), ""

    return build


_U8 = np.zeros((2, 3072), np.uint8)

CIFAR_CASES: dict[str, Case] = {
    "cifar-ndarray-as-callable": _cifar(_NDARRAY_CALL),
    "cifar-reconstruct-huge-shape": _cifar(_RECONSTRUCT_HUGE),
    "cifar-binbytes8-huge": _cifar(_BINBYTES8_HUGE),
    "cifar-memo-index-huge": _cifar(_MEMO_HUGE),
    "cifar-build-on-dict": _cifar(_BUILD_ON_DICT),
    "cifar-deeply-nested-lists": _cifar(_NESTED),
    "cifar-void-dtype-huge": _cifar(_VOID_DTYPE),
    "cifar-os-system": _cifar_evil_in_cwd,
    "cifar-os-system-in-meta": _cifar_evil_meta,
    "cifar-eval-global": _cifar_obj({"data": eval}),
    "cifar-empty-file": _cifar(b""),
    "cifar-garbage": _cifar(bytes(range(256)) * 4),
    "cifar-truncated": _cifar(lambda: pickle.dumps({"data": _U8, "labels": [0, 1]}, 4)[:300]),
    "cifar-no-stop": _cifar(lambda: pickle.dumps({"data": _U8, "labels": [0, 1]}, 4)[:-1]),
    "cifar-text-file": _cifar(b"data,labels\n1,2\n"),
    "cifar-persistent-id": _cifar(_PROTO2 + b"Pfoo\n."),
    "cifar-not-a-dict": _cifar_obj([1, 2, 3]),
    "cifar-no-labels": _cifar_obj({"data": _U8}),
    "cifar-data-is-a-list": _cifar_obj({"data": [[0] * 3072] * 2, "labels": [0, 1]}),
    "cifar-data-float": _cifar_obj({"data": _U8.astype(np.float32), "labels": [0, 1]}),
    "cifar-data-wrong-width": _cifar_obj({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}),
    "cifar-data-3d": _cifar_obj({"data": np.zeros((2, 3072, 1), np.uint8), "labels": [0, 1]}),
    "cifar-empty-batch": _cifar_obj({"data": np.zeros((0, 3072), np.uint8), "labels": []}),
    "cifar-float-labels": _cifar_obj({"data": _U8, "labels": [0.5, 1.0]}),
    "cifar-nan-labels": _cifar_obj({"data": _U8, "labels": np.array([np.nan, 1.0])}),
    "cifar-bool-labels": _cifar_obj({"data": _U8, "labels": [True, False]}),
    "cifar-str-labels": _cifar_obj({"data": _U8, "labels": ["a", "b"]}),
    "cifar-huge-int-label": _cifar_obj({"data": _U8, "labels": [2**70, 1]}),
    "cifar-label-out-of-range": _cifar_obj({"data": _U8, "labels": [0, 10]}),
    "cifar-negative-label": _cifar_obj({"data": _U8, "labels": [0, -1]}),
    "cifar-label-count-mismatch": _cifar_obj({"data": _U8, "labels": [0]}),
    "cifar-labels-of-arrays": _cifar_obj({"data": _U8, "labels": [np.zeros(3), np.zeros(2)]}),
    "cifar-file-over-cap": _cifar_sparse_huge,
    "safe-load-ndarray-callable": _safe_load(_NDARRAY_CALL),
    "safe-load-binbytes8-huge": _safe_load(_BINBYTES8_HUGE),
    "safe-load-memo-huge": _safe_load(_MEMO_HUGE),
    "safe-load-build-on-dict": _safe_load(_BUILD_ON_DICT),
}


# ---------------------------------------------------------------- image folders
def _png_header(w: int, h: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1 << 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _folder(files: dict[str, bytes], name: str, **kwargs: object) -> Case:
    def build(root: Path) -> tuple[Call, str]:
        d = root / "imgs"
        (d / "a").mkdir(parents=True)
        Image.new("RGB", (4, 4), (1, 2, 3)).save(d / "a" / "good.png")
        for fname, data in files.items():
            (d / "a" / fname).write_bytes(data)
        return (lambda: load_image_folder(d, **kwargs)), name  # type: ignore[arg-type]

    return build


def _good_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


FOLDER_CASES: dict[str, Case] = {
    "folder-decompression-bomb-error": _folder(
        {"bomb.png": _png_header(50_000, 50_000)}, "bomb.png"
    ),
    "folder-decompression-bomb-warning": _folder(
        {"big.png": _png_header(10_000, 10_000)}, "big.png"
    ),
    "folder-garbage-png": _folder({"junk.png": b"\x89PNG\r\n\x1a\n garbage"}, "junk.png"),
    "folder-empty-jpeg": _folder({"empty.jpg": b""}, "empty.jpg"),
    "folder-truncated-jpeg": _folder({"cut.jpg": _jpeg()[:300]}, "cut.jpg"),
    "folder-text-as-gif": _folder({"t.gif": b"GIF89a not really"}, "t.gif"),
    "folder-size-zero": _folder({}, "size", size=0),
    "folder-size-negative": _folder({}, "size", size=-4),
    "folder-size-huge": _folder({}, "size", size=10**6),
    "folder-size-bad-tuple": _folder({}, "size", size=(4,)),
    "folder-size-str": _folder({}, "size", size="32"),
    "folder-size-bool": _folder({}, "size", size=True),
    "folder-mode-rgba": _folder({}, "mode", mode="RGBA"),
    "folder-max-per-class-negative": _folder({}, "max_per_class", max_per_class=-1),
    "folder-max-per-class-zero": _folder({}, "max_per_class", max_per_class=0),
}

ALL_CASES: dict[str, Case] = {**IDX_CASES, **CIFAR_CASES, **FOLDER_CASES}
_MEMORY_BOUND_MIB = {
    "idx-gzip-bomb": 16.0,
    "idx-header-claims-more-than-gzip-can-hold": 16.0,
    "cifar-reconstruct-huge-shape": 64.0,
    "cifar-binbytes8-huge": 64.0,
    "cifar-memo-index-huge": 64.0,
    "safe-load-binbytes8-huge": 64.0,
    "safe-load-memo-huge": 64.0,
}


@pytest.mark.parametrize("case_id", sorted(ALL_CASES))
def test_hostile_input_gets_one_line_error(case_id: str, tmp_path: Path) -> None:
    result = classify(ALL_CASES[case_id], tmp_path, _MEMORY_BOUND_MIB.get(case_id))
    assert result == "clear", f"{case_id}: {result}"
    assert not (tmp_path / _EVIL_MARKER).exists()


def census() -> None:
    """Print every case's classification and the counts."""
    import tempfile
    from collections import Counter

    counts: Counter[str] = Counter()
    for case_id in sorted(ALL_CASES):
        with tempfile.TemporaryDirectory() as tmp:
            result = classify(ALL_CASES[case_id], Path(tmp), _MEMORY_BOUND_MIB.get(case_id))
        counts[result.split(":")[0].split(" ")[0]] += 1
        print(f"{case_id:48s} {result[:160]}", flush=True)
    print(dict(counts), "of", len(ALL_CASES))


if __name__ == "__main__":
    census()
    sys.exit(0)
