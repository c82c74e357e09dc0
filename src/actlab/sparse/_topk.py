"""WINA's top-k linear: per token, keep the k input entries of largest ``|x_i| * ||W[:, i]||_2``.

:class:`SparseTopKLinear` *is* a :class:`~actlab.sparse.SparseLinear` (same shared ``weight`` and
``bias``, same ``mode`` protocol and counters) whose "threshold" is the fraction ``s`` of input
entries to zero per token: ``round(s * in_features)`` of them, those with the smallest score
``|x_i| * ||W[:, i]||_2`` (the column norms of this projection's own weight). A negative
value means dense (bit-identical). The column norms are recomputed from the weight whenever
the weight changes (in place or replaced), so a transform applied after installation is seen.
While the site is tuned (:func:`~actlab.sparse.tune_gains` with row factors or low-rank
corrections), the weight it will be deployed with is ``diag(r) (W + U V)``, not ``W``: the
tuning pins that weight's norms (:meth:`SparseTopKLinear.pin_norms`), so the masks it trains
through are the masks the merged model computes.
"""

from __future__ import annotations

import torch

from actlab.sparse._modules import SparseLinear
from actlab.sparse._state import SparseError, Threshold

__all__ = ["SparseTopKLinear", "column_norms", "topk_keep"]


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """``||W[:, i]||_2`` for each input channel i of an ``[out, in]`` weight (float32)."""
    return torch.linalg.vector_norm(weight.detach().float(), dim=0)


def topk_keep(x: torch.Tensor, norms: torch.Tensor, zero: int) -> torch.Tensor:
    """Boolean mask over ``x`` (``[..., d]``): per row, all but the ``zero`` entries of
    smallest ``|x_i| * norms_i`` (ties: ``torch.topk``'s choice)."""
    d = x.shape[-1]
    keep = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    if zero <= 0:
        return keep.fill_(True)
    if zero >= d:
        return keep
    score = x.detach().abs().float() * norms.to(x.device)
    idx = torch.topk(score, d - zero, dim=-1, sorted=False).indices
    return keep.scatter_(-1, idx, True)


class SparseTopKLinear(SparseLinear):
    """A :class:`SparseLinear` keeping, per token, the top ``1 - s`` of ``|x_i| ||W[:, i]||``.

    ``threshold`` holds ``s`` (the fraction zeroed per token, in [0, 1)); negative: dense.
    """

    _norms: torch.Tensor | None
    _norms_key: tuple[int, int, str] | None
    _pinned: torch.Tensor | None = None

    def _init_site(self, threshold: Threshold) -> None:
        if isinstance(threshold, torch.Tensor):
            raise SparseError("a top-k site takes one sparsity fraction, not channel thresholds")
        t = float(threshold)
        if not t < 1.0:
            raise SparseError(f"a top-k site's sparsity must be below 1; got {t!r}")
        super()._init_site(t)
        self._norms = None
        self._norms_key = None

    @property
    def zero_count(self) -> int:
        """Input entries zeroed per sparsified token: ``round(s * in_features)``."""
        t = float(self.threshold)
        return 0 if t < 0 else round(t * self.in_features)

    def pin_norms(self, norms: torch.Tensor | None) -> None:
        """Rank inputs by ``norms`` (``[in_features]``) instead of the weight's own column
        norms, until unpinned with ``None``: the tuning's way to score with the norms of the
        weight it will merge (module docstring)."""
        if norms is not None and tuple(norms.shape) != (self.in_features,):
            raise SparseError(
                f"pinned column norms must have shape ({self.in_features},); "
                f"got {tuple(norms.shape)}"
            )
        self._pinned = None if norms is None else norms.detach().float()

    def norms(self) -> torch.Tensor:
        """The weight's column norms, cached until the weight changes (or the pinned ones)."""
        if self._pinned is not None:
            return self._pinned
        w = self.weight
        key = (w.data_ptr(), w._version, str(w.device))
        if self._norms is None or self._norms_key != key:
            self._norms = column_norms(w)
            self._norms_key = key
        return self._norms

    def _criterion(self, v: torch.Tensor) -> torch.Tensor:
        return topk_keep(v, self.norms(), self.zero_count)

    def extra_repr(self) -> str:
        t = float(self.threshold)
        what = "dense" if t < 0 else f"top-k by |x|*||W[:, i]||, zero {self.zero_count}/token"
        return f"in_features={self.in_features}, out_features={self.out_features}, {what}"
