"""Attention-score functions: scores (B, h, Nq, Nk) -> attention weights, row by row.

    softmax       p_ij = exp(s_ij) / sum_j' exp(s_ij')                     (the default)
                  Vaswani et al. 2017, "Attention Is All You Need"
    relu_attn     p_ij = relu(s_ij) / n_i
                  Wortsman et al. 2023, "Replacing softmax with ReLU in Vision Transformers"
                  (arXiv 2309.08586): divide by the sequence length L
    sigmoid_attn  p_ij = sigmoid(s_ij + b),  b = -log(n_i) unless given
                  Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid
                  Self-Attention" (arXiv 2409.04431)

``s = q k^T / sqrt(d)``; ``mask`` (broadcastable to the scores, bool, True = may attend) hides
keys (the causal mask of a decoder): masked weights are exactly 0. ``n_i`` is the number of
keys row ``i`` may attend to (L without a mask; i + 1 in a causal decoder), which generalises
both papers' sequence-length normalisation to masked rows. Only softmax rows sum to 1.

Models use PyTorch's fused ``scaled_dot_product_attention`` when the score function is
``softmax`` and compute ``p @ v`` with the module otherwise. Score functions take no slot
arguments; one with learnable parameters sizes itself from the scores (heads are dim 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from actlab.layers._registry import register_layer

__all__ = ["ReLUAttn", "SigmoidAttn", "Softmax"]


def _visible(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Keys each row may attend to, shaped to broadcast over the scores (..., Nq, 1)."""
    if mask is None:
        return scores.new_full((1,), float(scores.shape[-1]))
    return mask.sum(-1, keepdim=True).clamp_min(1).to(scores.dtype)


@register_layer(
    "softmax", kind="attn_score", formula="exp(s) / sum exp(s)", paper="arXiv 1706.03762"
)
class Softmax(nn.Module):
    """Softmax over the keys; masked keys get weight 0."""

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)


@register_layer("relu_attn", kind="attn_score", formula="relu(s) / n", paper="arXiv 2309.08586")
class ReLUAttn(nn.Module):
    """ReLU of the scores divided by the number of visible keys."""

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        p = torch.relu(scores)
        if mask is not None:
            p = p.masked_fill(~mask, 0.0)
        return p / _visible(scores, mask)


@register_layer(
    "sigmoid_attn",
    kind="attn_score",
    formula="sigmoid(s + b), b = -log n",
    paper="arXiv 2409.04431",
)
class SigmoidAttn(nn.Module):
    """Sigmoid of the shifted scores; ``bias=None`` uses ``-log`` of the visible keys."""

    def __init__(self, bias: float | None = None) -> None:
        super().__init__()
        if bias is not None and not math.isfinite(bias):
            raise ValueError(f"bias must be finite, got {bias}")
        self.bias = bias

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        b = -torch.log(_visible(scores, mask)) if self.bias is None else self.bias
        p = torch.sigmoid(scores + b)
        if mask is not None:
            p = p.masked_fill(~mask, 0.0)
        return p

    def extra_repr(self) -> str:
        return f"bias={self.bias}"
