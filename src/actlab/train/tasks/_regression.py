"""The loader of regression tasks: (x, y) float tensors in memory, seeded shuffling.

    x: (N, d_in)  y: (N, d_out); a batch is one index operation on the target device.

Epoch ``e`` of a loader with seed ``s`` shuffles with ``Generator(s * 1_000_003 + e)`` (the
image loader's rule), so a run is reproducible whatever ran before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["RegressionLoader"]


class RegressionLoader:
    """Batches ``(x, y)`` of in-memory float tensors (rows are samples)."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"regression data must be x (N, d_in) and y (N, d_out) with N >= 1, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        self.device = torch.device(device)
        self.x = x.to(self.device, dtype)
        self.y = y.to(self.device, dtype)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last and x.shape[0] > batch_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
