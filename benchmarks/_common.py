"""Helpers shared by the benchmark scripts: interleaved timing and saved-tensor accounting."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def interleaved_samples(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds of each call of each fn, measured round-robin (round r of every fn is at index r)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
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
