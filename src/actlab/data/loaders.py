"""Fast in-memory loaders: the whole dataset is one tensor, a batch is one index operation.

With 2 CPU cores a worker-process DataLoader costs more than it saves, so the uint8 images
(or text ids) live on the target device and each batch is sliced with a seeded permutation,
then converted to float and normalised there:

    x = (images[perm[i : i + B]].float() - mean) / std          # (B, C, H, W)

Epoch ``e`` of a loader with seed ``s`` uses the permutation of ``Generator(s * 1_000_003 + e)``,
so shuffling is reproducible and independent of how many epochs ran before (``set_epoch``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from actlab.data.augment import Augment
from actlab.data.base import ImageDataset

__all__ = ["ImageLoader", "RegressionLoader", "TextLoader"]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class _IndexBatches:
    """Seeded index batches over ``num_samples`` rows (shared by the in-memory loaders)."""

    batch_size: int
    shuffle: bool
    seed: int
    drop_last: bool
    epoch: int
    device: torch.device
    num_samples: int

    def _init_batches(
        self, num_samples: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool
    ) -> None:
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling (and augmentation) of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def _index_batches(self) -> Iterator[tuple[Tensor, torch.Generator]]:
        """The row indices of each batch of this epoch, with the epoch's generator."""
        g = _epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size], g


class ImageLoader(_IndexBatches):
    """Batches ``(x, y)`` of a whole in-memory :class:`ImageDataset`.

    ``mean``/``std`` (C,) are in uint8 units; ``x`` comes out as ``dtype`` on ``device``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        mean: Tensor,
        std: Tensor,
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError(f"{dataset.name or 'dataset'} is empty")
        self.device = torch.device(device)
        self.dtype = dtype
        self.images = dataset.images.to(self.device)  # uint8 (N, C, H, W)
        self.labels = dataset.labels.to(self.device)  # int64 (N,)
        c = dataset.images.shape[1]
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"mean/std need {c} channel values, got {mean.numel()}/{std.numel()}")
        self.mean = mean.reshape(1, c, 1, 1).to(self.device, dtype)
        self.std = std.reshape(1, c, 1, 1).to(self.device, dtype)
        self.augment = augment if augment is not None and augment.active else None
        self._init_batches(self.images.shape[0], batch_size, shuffle, seed, drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx, g in self._index_batches():
            x = self.images[idx]
            if self.augment is not None:
                x = self.augment(x, g)
            x = (x.to(self.dtype) - self.mean) / self.std
            yield x, self.labels[idx]


class TextLoader:
    """Batches ``(x, y)`` of character windows, ``y`` shifted by one: both (B, T) int64.

    Training mode (``random=True``): ``steps`` batches of windows at seeded random offsets.
    Evaluation mode: up to ``max_windows`` non-overlapping windows at evenly spaced offsets,
    the same every time, so the metric is comparable across runs and epochs.
    """

    def __init__(
        self,
        ids: Tensor,
        block_size: int,
        batch_size: int,
        *,
        random: bool = True,
        steps: int = 100,
        max_windows: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if ids.ndim != 1 or ids.numel() < block_size + 1:
            raise ValueError(
                f"text of {ids.numel()} ids is too short for block_size={block_size}; "
                "use a smaller block_size or a longer text"
            )
        self.device = torch.device(device)
        self.ids = ids.to(self.device)
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.random = random
        self.steps = int(steps)
        self.seed = int(seed)
        self.epoch = 0
        n_windows = (ids.numel() - 1) // self.block_size
        if max_windows is not None:
            n_windows = min(n_windows, int(max_windows))
        span = ids.numel() - 1 - self.block_size
        self._eval_starts = (
            (torch.linspace(0, span, n_windows).round().long()) if n_windows else None
        )

    @property
    def num_samples(self) -> int:
        """Tokens per pass (steps x batch x block in training, all window tokens in eval)."""
        if self.random:
            return self.steps * self.batch_size * self.block_size
        assert self._eval_starts is not None
        return int(self._eval_starts.numel()) * self.block_size

    def __len__(self) -> int:
        if self.random:
            return self.steps
        assert self._eval_starts is not None
        return -(-int(self._eval_starts.numel()) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _windows(self, starts: Tensor) -> tuple[Tensor, Tensor]:
        offs = starts.to(self.device)[:, None] + torch.arange(
            self.block_size + 1, device=self.device
        )
        chunk = self.ids[offs].long()  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if not self.random:
            assert self._eval_starts is not None
            for s in torch.split(self._eval_starts, self.batch_size):
                yield self._windows(s)
            return
        g = _epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        high = self.ids.numel() - self.block_size
        for _ in range(self.steps):
            yield self._windows(torch.randint(0, high, (self.batch_size,), generator=g))


class RegressionLoader(_IndexBatches):
    """Batches ``(x, y)`` of in-memory float tensors (rows are samples), for regression tasks.

    x: (N, d_in)  y: (N, d_out); shuffling follows the image loader's seeded rule.
    """

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
        drop = drop_last and x.shape[0] > batch_size  # never drop the only batch
        self._init_batches(self.x.shape[0], batch_size, shuffle, seed, drop)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx, _ in self._index_batches():
            yield self.x[idx], self.y[idx]
