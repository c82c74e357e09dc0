"""Batch augmentations as plain tensor ops (no torchvision), drawn from a seeded generator.

- random crop with padding (Krizhevsky et al. 2012; the standard CIFAR recipe of He et al.
  2016): zero-pad each side by ``p`` pixels, then crop an H x W window at a uniformly random
  offset in [0, 2p]^2, independently per image;
- horizontal flip with probability 1/2 per image.

Random numbers are drawn on the CPU from the caller's ``torch.Generator`` and moved to the
batch's device, so a seed gives the same augmentations on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augment", "random_crop", "random_hflip"]


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Per-image random crop of the zero-padded batch ``x`` (B, C, H, W) back to (H, W)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    rows = off[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def random_hflip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image of ``x`` (B, C, H, W) left-right with probability ``p``."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation options; the default does nothing."""

    crop_padding: int = 0
    hflip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        return x
