"""Seeding and deterministic execution.

``seed_everything(seed)`` seeds Python's ``random``, NumPy and PyTorch (all devices).
``determinism(True, device)`` turns on ``torch.use_deterministic_algorithms`` (warn-only, so
an op without a deterministic implementation warns instead of failing), cuDNN's deterministic
mode, and on CUDA the cuBLAS workspace setting it needs; everything is restored on exit.
On CPU a seeded run then repeats bit for bit for a given number of threads.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["seed_everything", "determinism"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, NumPy and PyTorch (CPU and every CUDA device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with deterministic algorithms (when ``enabled``), then restore."""
    if not enabled:
        yield
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        # cuBLAS needs this before its first use to be deterministic; harmless if late.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old_alg = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_alg, warn_only=old_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn
