"""Packed decode weights on transparent huge pages: :class:`PackArena`.

The decode kernels (``csrc/sparse_gemv.h``) read the rows ``W^T[i, :]`` of the surviving inputs
``i``: a few KiB each (576-640 float32 outputs: 2.3-2.5 KiB), scattered over the whole matrix,
and a token walks every packed matrix of the model once (hundreds of MiB). With 4 KiB pages a
surviving row often lands on a page the TLB no longer holds; a 2 MiB page covers ~800 rows.
The dense baseline streams long contiguous rows and barely notices. Measured side by side in one
run (``benchmarks/bench_sparse_gemv.py``, at the time columns ``k32`` and ``k32 4K``, now
``k32 2M`` and ``k32``: the same kernel on huge-page and on 4 KiB-page copies, 120 cells of shapes x
sparsities x 1-2 threads, shuffled call order, the 2-core AVX-512 Xeon): the huge pages gained a
median 2 points of the ``1 / (1 - s)`` limit on the SmolLM2 and Gemma-3 shapes (-3 to +6), ~0 on
the 2048 <-> 8192 ones (-6 to +4); 86 of 120 cells faster. But in one of three full runs the
huge-page copies of two wide shapes (640 -> 4096 and 2048 -> 8192) ran 35% *slower* than the 4
KiB ones, at every sparsity and thread count, while every other shape was unchanged (these
machines are virtual: where a large guest-physically contiguous block lands on the host is not
ours to see). End to end (SmolLM2, TEAL 40%, 2 threads) the two were within noise. So huge pages
are **opt-in**: ``ACTLAB_HUGE_PAGES=1`` (or ``PackArena(huge=True)``); the default packing is
plain ``torch.empty``.

:class:`PackArena` carves the packed tensors out of large chunks (``chunk_bytes``, 64 MiB by
default) whose 2 MiB-aligned span is advised ``madvise(MADV_HUGEPAGE)`` before anything is
written, so the first touch of each 2 MiB extent faults in one huge page. Tensors start on
64-byte lines; a chunk's unused tail is never touched (address space, not memory), so the
memory cost is at most one partly used huge page per chunk. A chunk lives while any tensor
carved from it does.

Linux only, and only where the kernel's ``transparent_hugepage/enabled`` is ``always`` or
``madvise``; elsewhere (other systems, ``never``, a failing ``madvise``), when not asked for,
:meth:`PackArena.empty` is plain ``torch.empty`` and :attr:`PackArena.huge` is False: the
layout and the results are the same, only the page size differs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import sys
from pathlib import Path

import torch

from actlab._ext import env_switch

__all__ = ["HUGE_PAGE", "PackArena", "huge_pages_available", "huge_pages_wanted"]

log = logging.getLogger("actlab.sparse")

HUGE_PAGE = 2 << 20  # bytes: x86-64 and arm64 (4 KiB granule) transparent huge pages
_LINE = 64  # tensors start on cache lines
_MADV_HUGEPAGE = 14
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def _madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def huge_pages_wanted() -> bool:
    """Whether the environment opts in: ``ACTLAB_HUGE_PAGES=1`` (an on/off switch, off by
    default; another value is a one-line ``ValueError``)."""
    return env_switch(
        "ACTLAB_HUGE_PAGES",
        False,
        on="pack decode weights on transparent huge pages",
        off="plain memory",
    )


def huge_pages_available() -> tuple[bool, str]:
    """Whether :class:`PackArena` can ask for huge pages on this system, and if not, why."""
    if not sys.platform.startswith("linux"):
        return False, f"transparent huge pages are Linux-only (platform {sys.platform})"
    try:
        mode = _THP.read_text()
    except OSError:
        return False, f"{_THP} is not readable"
    chosen = mode[mode.find("[") + 1 : mode.find("]")] if "[" in mode else mode.strip()
    if chosen not in ("always", "madvise"):
        return False, f"transparent huge pages are {chosen!r} on this system"
    if _madvise() is None:
        return False, "madvise is not available through the C library"
    return True, ""


class PackArena:
    """Allocates tensors for packed weights: from huge-page-advised chunks when asked (``huge``
    True, or None and ``ACTLAB_HUGE_PAGES=1``) and available, else plain ``torch.empty``
    (see the module docstring). ``reason`` says why not, when asked and unavailable."""

    def __init__(self, chunk_bytes: int = 64 << 20, *, huge: bool | None = None) -> None:
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"PackArena chunk_bytes must be a positive int, got {chunk_bytes!r}")
        if huge is not None and not isinstance(huge, bool):
            raise ValueError(f"PackArena huge must be True, False or None, got {huge!r}")
        wanted = huge_pages_wanted() if huge is None else huge
        ok, why = huge_pages_available() if wanted else (False, "")
        self.huge = ok
        self.reason = why
        self.chunk_bytes = -(-chunk_bytes // HUGE_PAGE) * HUGE_PAGE
        self._chunk: torch.Tensor | None = None  # uint8 view of the advised span
        self._used = 0
        self.advised_bytes = 0  # bytes of all chunks advised so far

    def _new_chunk(self, nbytes: int) -> bool:
        size = max(self.chunk_bytes, -(-nbytes // HUGE_PAGE) * HUGE_PAGE)
        raw = torch.empty(size + HUGE_PAGE, dtype=torch.uint8)  # fresh pages: nothing touched
        base = raw.data_ptr()
        start = -(-base // HUGE_PAGE) * HUGE_PAGE
        madvise = _madvise()
        assert madvise is not None
        if madvise(ctypes.c_void_p(start), size, _MADV_HUGEPAGE) != 0:
            err = ctypes.get_errno()
            self.huge = False
            self.reason = f"madvise(MADV_HUGEPAGE) failed: {os.strerror(err)}"
            log.debug("actlab: packed weights on 4 KiB pages: %s", self.reason)
            return False
        self._chunk = raw[start - base : start - base + size]
        self._used = 0
        self.advised_bytes += size
        return True

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of ``shape`` and ``dtype``."""
        nbytes = math.prod(shape) * dtype.itemsize
        if not self.huge or nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        if self._chunk is None or self._used + nbytes > self._chunk.numel():
            if not self._new_chunk(nbytes):
                return torch.empty(shape, dtype=dtype)
        assert self._chunk is not None
        out = self._chunk[self._used : self._used + nbytes].view(dtype).view(shape)
        self._used = -(-(self._used + nbytes) // _LINE) * _LINE
        return out

    def like(self, src: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A copy of ``src`` (converted to ``dtype``) in the arena, contiguous."""
        out = self.empty(tuple(src.shape), src.dtype if dtype is None else dtype)
        out.copy_(src)
        return out
