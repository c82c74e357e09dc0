"""Helpers shared by the benchmark scripts: interleaved timing and saved-tensor accounting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch


def interleaved_samples(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds of each call of each fn, in rounds (round r of every fn is at index r). Each
    round calls the fns in an order shuffled anew (seeded): with a fixed order each fn would
    always follow the same one, and what ran just before changes a timing (caches, code and
    predictors: 5-15% for a 0.1-0.3 ms kernel in ``bench_sparse_gemv.py``)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(items)
        for k, fn in items:
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct storages that autograd saves for backward while running ``fn``."""
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[(st.data_ptr(), str(t.device))] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
