"""Deterministic splits, normalisation, augmentation and the in-memory loaders."""

from __future__ import annotations

import torch

from actlab.data import Augment, ImageDataset, ImageLoader, TextLoader, make_splits
from actlab.data.augment import random_crop
from actlab.data.base import split_indices


def _ds(n: int = 50, c: int = 1, hw: int = 6) -> ImageDataset:
    g = torch.Generator().manual_seed(1)
    return ImageDataset(
        torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.uint8), torch.arange(n) % 5
    )


def test_split_determinism() -> None:
    a = split_indices(100, [0.7, 0.2, 0.1], seed=3)
    b = split_indices(100, [0.7, 0.2, 0.1], seed=3)
    c = split_indices(100, [0.7, 0.2, 0.1], seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert [len(x) for x in a] == [70, 20, 10]
    assert sorted(torch.cat(a).tolist()) == list(range(100))


def test_make_splits_and_normalisation() -> None:
    ds = _ds(100)
    s = make_splits(ds, None, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 10, 20)
    loader = ImageLoader(s.train, s.mean, s.std, batch_size=70)
    x, _ = next(iter(loader))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1) < 1e-3
    s2 = make_splits(ds, ds, val_fraction=0.2, seed=0)
    assert len(s2.train) == 80 and len(s2.test) == 100


def test_loader_shuffle_is_seeded_per_epoch() -> None:
    ds = _ds(50)

    def mk(seed: int) -> ImageLoader:
        return ImageLoader(
            ds, torch.zeros(1), torch.ones(1), batch_size=16, shuffle=True, seed=seed
        )

    a, b = mk(0), mk(0)
    ya = [y for _, y in a]
    assert [len(y) for y in ya] == [16, 16, 16, 2]
    yb = [y for _, y in b]
    assert all(torch.equal(u, v) for u, v in zip(ya, yb, strict=True))
    second = torch.cat([y for _, y in a])  # epoch 1 differs from epoch 0
    assert not torch.equal(second, torch.cat(ya))
    b.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in b]), second)
    assert len(ImageLoader(ds, torch.zeros(1), torch.ones(1), batch_size=16, drop_last=True)) == 3


def test_random_crop_and_flip() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    y = random_crop(x, 2, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    for b in range(2):  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        assert any(
            torch.equal(padded[:, i : i + 4, j : j + 4], y[b]) for i in range(5) for j in range(5)
        )
    aug = Augment(hflip=True)
    flipped = aug(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0))
    n_flipped = sum(torch.equal(f, x[0].flip(-1)) for f in flipped[::2])
    assert 0 < n_flipped < 32


def test_text_loader() -> None:
    ids = torch.arange(1000) % 7
    tr = TextLoader(ids, 8, 4, steps=3, seed=0)
    batches = list(tr)
    assert len(batches) == 3 and batches[0][0].shape == (4, 8)
    x, y = batches[0]
    assert torch.equal(x[:, 1:], y[:, :-1])
    ev = TextLoader(ids, 8, 5, random=False, max_windows=12)
    starts = [int(x[i, 0]) for x, _ in ev for i in range(x.shape[0])]
    assert len(starts) == 12 and ev.num_samples == 96
    assert [x.tolist() for x, _ in ev] == [x.tolist() for x, _ in ev]  # fixed windows
