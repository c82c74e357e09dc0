"""In-memory dataset containers and deterministic splits.

An image dataset is held whole as one uint8 tensor ``images`` (N, C, H, W) plus int64
``labels`` (N,): small enough for every dataset this project uses (Fashion-MNIST is 47 MB),
and it makes batching a single index operation (see :mod:`actlab.data.loaders`).

Splits are deterministic functions of a seed: ``split_indices(n, fractions, seed)`` draws one
permutation from a private ``torch.Generator`` and cuts it, so the same seed gives the same
split on every machine and in every process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ImageDataset", "ImageSplits", "split_indices", "channel_stats", "make_splits"]


@dataclass
class ImageDataset:
    """A labelled image set: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor
    classes: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"{self.name or 'dataset'}: images must be a uint8 tensor (N, C, H, W), got "
                f"{self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"{self.name or 'dataset'}: {self.images.shape[0]} images but labels of shape "
                f"{tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()
        if not self.classes:
            n = int(self.labels.max()) + 1 if len(self.labels) else 0
            self.classes = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: Tensor) -> ImageDataset:
        """The images at ``index`` (a 1-D long tensor), sharing class names."""
        return ImageDataset(self.images[index], self.labels[index], list(self.classes), self.name)


@dataclass
class ImageSplits:
    """Train / validation / test sets plus the per-channel normalisation of the train set.

    ``mean`` and ``std`` are in raw uint8 units (0..255), shape (C,).
    """

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    mean: Tensor
    std: Tensor

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Cut a seeded permutation of ``range(n)`` into parts of the given fractions.

    The fractions must sum to 1 (within 1e-6); rounding leftovers go to the first part.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    sizes = [int(round(f * n)) for f in fractions]
    sizes[0] += n - sum(sizes)
    return list(torch.split(perm, sizes))


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (float32, uint8 units) of a uint8 (N, C, H, W) tensor."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        raise ValueError("cannot compute normalisation statistics of an empty image set")
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def make_splits(
    train: ImageDataset,
    test: ImageDataset | None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageSplits:
    """Deterministic splits: hold ``val_fraction`` of ``train`` out for validation.

    When there is no official ``test`` set, ``test_fraction`` of ``train`` becomes the test
    set too. Normalisation statistics come from the remaining training images only.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if test is None:
        tr, va, te = split_indices(
            len(train), [1.0 - val_fraction - test_fraction, val_fraction, test_fraction], seed
        )
        test = train.subset(te)
    else:
        tr, va = split_indices(len(train), [1.0 - val_fraction, val_fraction], seed)
    train_part, val_part = train.subset(tr), train.subset(va)
    mean, std = channel_stats(train_part.images)
    return ImageSplits(train_part, val_part, test, mean, std)
