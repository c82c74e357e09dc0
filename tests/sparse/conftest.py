"""Fixtures of the sparse tests: a tiny random Llama (GQA) built from a config, token batches."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("transformers")

from sparse_helpers import VOCAB, tiny_llama  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matmuls on a shared 2-core machine: one thread is ~100x faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_CACHE: dict[int, torch.nn.Module] = {}


@pytest.fixture
def llama() -> torch.nn.Module:
    """A fresh copy of the 2-layer tiny Llama (built once per session)."""
    if 2 not in _CACHE:
        _CACHE[2] = tiny_llama(2)
    return copy.deepcopy(_CACHE[2])


@pytest.fixture
def batches() -> list[torch.Tensor]:
    """Calibration token ids: 2 batches of [2, 24] (96 tokens)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (2, 24), generator=g) for _ in range(2)]


@pytest.fixture(autouse=True)
def _private_dense_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--eval's dense cache in a folder of this session, never the user's ~/.cache."""
    from actlab.sparse import _dense_cache

    root = tmp_path_factory.getbasetemp() / "eval-cache"
    monkeypatch.setattr(_dense_cache, "default_dense_cache", lambda: root)
