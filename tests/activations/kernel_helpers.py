"""Shared helper of the kernel tests."""

from __future__ import annotations

import torch

from actlab.activations import kernel_mode


def run_fwd_bwd(
    m: torch.nn.Module, x0: torch.Tensor, g: torch.Tensor, mode: str
) -> list[torch.Tensor]:
    """[y, dL/dx, dL/dθ...] of one forward + backward of ``m`` in kernel ``mode``."""
    m.zero_grad()
    x = x0.clone().requires_grad_(True)
    with kernel_mode(mode):
        y = m(x)
        y.backward(g)
    return [y.detach(), x.grad] + [p.grad.clone() for p in m.parameters()]  # type: ignore[list-item,union-attr]
