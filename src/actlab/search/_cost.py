"""Early-exit cost filter: reject candidates that are too slow per training step.

EEEA-Net (Termritthikun et al. 2021, arXiv 2108.06156) discards a sampled architecture whose
cost exceeds a threshold before training it, and samples again. Here the cost of an
activation is the time of one forward + backward pass on a fixed tensor, relative to
PyTorch's GELU timed in the same process on the same tensor:

    ratio = min_i t_candidate(i) / min_i t_gelu(i)

The two are timed round-robin (``repeats`` rounds, after ``warmup`` calls each), and the
minimum over rounds is used: on a shared machine the minimum is the least disturbed
measurement, and both run on one torch thread (multi-threaded timings of small tensors on a
busy machine vary by an order of magnitude). A candidate with ``ratio > max_ratio`` is
rejected at stage ``cost``. Elementwise compositions cost several GELUs (each op is its own
kernel, forward and backward), so the default limit is 8x.

The candidate is timed in the kernel mode its training runs in (the objective's ``kernel``,
e.g. ``actlab search --kernel native``; by default the mode in force, ``auto`` unless set),
so the filter judges the code path the search will actually train with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CostFilter", "step_time_ratio"]


def _step(fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], None]:
    def run() -> None:
        xi = x.detach().requires_grad_(True)
        y = fn(xi)
        y.backward(torch.ones_like(y))

    return run


def step_time_ratio(
    module: nn.Module,
    *,
    shape: tuple[int, ...] = (64, 1024),
    repeats: int = 5,
    warmup: int = 2,
    seed: int = 0,
) -> float:
    """Forward+backward time of ``module`` over that of GELU on one fixed tensor (min of rounds)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    fns = {"cand": _step(module, x), "gelu": _step(F.gelu, x)}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best["cand"] / max(best["gelu"], 1e-9)


@dataclass(frozen=True)
class CostFilter:
    """Reject a candidate whose step time exceeds ``max_ratio`` times GELU's."""

    max_ratio: float = 8.0
    shape: tuple[int, ...] = (64, 1024)
    repeats: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_ratio) and self.max_ratio > 0):
            raise ValueError(
                f"max_ratio must be a finite number > 0, got {self.max_ratio} "
                "(no cost filter: Pipeline(cost=None))"
            )

    def measure(self, module: nn.Module, kernel: str | None = None) -> float:
        """The step-time ratio of ``module`` to GELU under kernel mode ``kernel`` (None: the
        mode in force), which should be the mode the candidate's training runs in."""
        from actlab.activations import get_kernel_mode, kernel_mode

        mode = get_kernel_mode() if kernel is None else kernel
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: stable timings on a shared machine
        try:
            with kernel_mode(mode), torch.enable_grad():
                return step_time_ratio(module, shape=self.shape, repeats=self.repeats)
        finally:
            torch.set_num_threads(threads)

    def check(self, module: nn.Module, kernel: str | None = None) -> tuple[bool, float, str]:
        """``(ok, ratio, reason)``, timed under kernel mode ``kernel`` (see :meth:`measure`)."""
        ratio = self.measure(module, kernel)
        if ratio > self.max_ratio:
            return (
                False,
                ratio,
                (
                    f"too slow: {ratio:.2f}x GELU per forward+backward step "
                    f"(limit {self.max_ratio:g}x)"
                ),
            )
        return True, ratio, "ok"
