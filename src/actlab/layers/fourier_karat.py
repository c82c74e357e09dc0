"""Fourier-KArAt: a learnable Kolmogorov-Arnold operator on attention rows instead of softmax.

For the scores of one row, s_i = (s_i1 .. s_iN) (heads are independent), with a mask M
(True = may attend) and n_i = sum_k M_ik visible keys:

    z_ic  = (1 / n_i) sum_k M_ik sum_{m=1..G} [A_mkc cos(m w s_ik) + B_mkc sin(m w s_ik)]
    p_ij  = M_ij sum_{c=1..r} z_ic U_cj                                 (B, h, Nq, Nk)

i.e. a KAN layer R^N -> R^r with a learnable Fourier series on every edge (key k -> channel
c), followed by a linear map R^r -> R^N back to one weight per key: the low-rank form of the
N x N Fourier-KAN operator of Kolmogorov-Arnold Attention, whose full form needs 2 G N^2
coefficients per head. Masked keys contribute nothing and get weight exactly 0.

Maity et al. 2025, "Kolmogorov-Arnold Attention: Is Learnable Attention Better for Vision
Transformers?" (KArAt / Fourier-KArAt, arXiv 2503.10632). The paper was read, the authors'
code was not available here [paper + unverified details]: the 1/n_i normalisation, the
initialisation and the key-position-indexed coefficients are this package's choices.

Sizes. Coefficients are indexed by key position up to ``max_keys`` (a ViT's token count; a
causal decoder's context length) and used for the first N_k <= max_keys keys; more keys is a
one-line error. ``heads=1`` shares one operator across the heads; ``heads=h`` gives each head
its own (it must equal the model's number of heads).

Memory per head (float32 = 4 bytes):
  parameters   (2 G + 1) * max_keys * r          (G = 3, r = 8, 64 keys: 3,584 = 14 KiB)
  activations  about (2 G + 2) * Nq * Nk per sample saved for backward (the cos / sin of
               every harmonic, the mask product and p), plus r * Nq for z; the harmonics are
               summed one at a time, so the forward peak stays ~3 Nq * Nk above softmax's.
Softmax saves Nq * Nk per sample and head; Fourier-KArAt with G = 3 about 8x that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from actlab.layers._finite import due
from actlab.layers._kan_common import check_finite, check_finite_params
from actlab.layers._kan_ref import fourier_karat_ref
from actlab.layers._registry import register_layer

__all__ = ["FourierKArAt"]


@register_layer(
    "fourier_karat",
    kind="attn_score",
    formula="p_ij = M_ij sum_c U_cj (1/n_i) sum_k M_ik sum_m A_mkc cos(m s_ik) + B_mkc sin(m s_ik)",
    paper="Maity et al. 2025, arXiv 2503.10632",
    aliases=("karat",),
    reference=fourier_karat_ref,
)
class FourierKArAt(nn.Module):
    """Learnable low-rank Fourier-KAN operator over each attention row (see module doc)."""

    def __init__(
        self,
        terms: int = 3,
        rank: int = 8,
        max_keys: int = 64,
        heads: int = 1,
        omega: float = 1.0,
    ) -> None:
        super().__init__()
        for key, v in (("terms", terms), ("rank", rank), ("max_keys", max_keys), ("heads", heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"fourier_karat: {key} must be a whole number >= 1, got {v!r}")
        check_finite("fourier_karat", omega=omega)
        if omega <= 0:
            raise ValueError(f"fourier_karat: omega must be > 0, got {omega}")
        self.terms, self.rank, self.max_keys, self.heads, self.omega = (
            terms, rank, max_keys, heads, float(omega),
        )  # fmt: skip
        std = 1.0 / math.sqrt(2 * terms)
        shape = (heads, terms, max_keys, rank)
        self.cos_coef = nn.Parameter(torch.randn(shape) * std)
        self.sin_coef = nn.Parameter(torch.randn(shape) * std)
        # p starts at the scale of 1/sqrt(r): the rows are not normalised like softmax's
        self.up = nn.Parameter(torch.randn(heads, rank, max_keys) / rank)

    def _check(self, scores: Tensor, mask: Tensor | None) -> None:
        if scores.ndim != 4:
            raise ValueError(
                "fourier_karat expects scores of shape (B, heads, Nq, Nk), got "
                f"{tuple(scores.shape)}"
            )
        if not scores.is_floating_point():
            raise ValueError(f"fourier_karat expects floating-point scores, got {scores.dtype}")
        n_k = scores.shape[-1]
        if n_k > self.max_keys:
            raise ValueError(
                f"fourier_karat was built for at most {self.max_keys} keys, got {n_k}; "
                f"build it with max_keys={n_k} or more"
            )
        if self.heads != 1 and scores.shape[1] != self.heads:
            raise ValueError(
                f"fourier_karat has {self.heads} head operators but the scores have "
                f"{scores.shape[1]} heads; build it with heads={scores.shape[1]} or heads=1"
            )
        if mask is not None and mask.dtype != torch.bool:
            raise ValueError(
                f"fourier_karat: mask must be bool (True = may attend), got {mask.dtype}"
            )

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check(scores, mask)
        if due(self, list(self.parameters())):  # every call on the CPU (see actlab.layers._finite)
            check_finite_params("fourier_karat", self)
        n_k = scores.shape[-1]
        keep = None if mask is None else mask.to(scores.dtype)  # broadcast to (B, h, Nq, Nk)
        z = scores.new_zeros(())
        for m in range(self.terms):  # one harmonic at a time: bounded forward memory
            arg = scores * ((m + 1) * self.omega)
            c, s = torch.cos(arg), torch.sin(arg)  # (B, h, Nq, Nk)
            if keep is not None:
                c, s = c * keep, s * keep
            a = self.cos_coef[:, m, :n_k]  # (H, Nk, r); H = heads or 1 broadcasts over h
            b = self.sin_coef[:, m, :n_k]
            z = z + c @ a + s @ b  # (B, h, Nq, r)
        if keep is None:
            z = z / n_k
        else:
            z = z / keep.sum(-1, keepdim=True).clamp_min(1)
        p = z @ self.up[:, :, :n_k]  # (B, h, Nq, Nk)
        if mask is not None:
            p = p.masked_fill(~mask, 0.0)
        return p

    def extra_repr(self) -> str:
        return (
            f"terms={self.terms}, rank={self.rank}, max_keys={self.max_keys}, "
            f"heads={self.heads}, omega={self.omega}"
        )
