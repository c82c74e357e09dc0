"""Shared fixtures: deterministic seeds for every test, offline Hugging Face."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _thread_pool_started() -> None:
    """Start torch's thread pool with a harmless parallel sum before any test runs: on the
    development machine the first parallel math call of a process (tanh, erf) sometimes
    computes about half its values at lower accuracy (tanh up to 5e-5 off, erf 2e-4) while the
    pool starts; later calls are exact (``benchmarks/vml_first_call.py`` counts it). Torch's,
    not actlab's; without this, whichever test made that call first could fail at random."""
    torch.ones(2_000_000).sum()
