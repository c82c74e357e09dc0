"""Sparsified modules and their installation: :class:`SparseLinear`, :class:`SparseGatedMLP`.

- ``SparseLinear``: ``y = W s_t(x) + b`` with ``s_t(x)_i = x_i if |x_i| > t else 0`` (TEAL's
  magnitude sparsification of a projection's input). It *is* an ``nn.Linear`` sharing the
  original ``weight`` and ``bias`` parameters, so the model's ``state_dict`` keys do not
  change (``save_pretrained`` and weight tying keep working) and the threshold lives in the
  :class:`~actlab.sparse.SparsityState`, not in the weights.
- ``SparseGatedMLP``: ``down(m ⊙ act(gate(x)) ⊙ up(x))`` with ``m_i = |act(gate(x))_i| > t``
  (CATS): the up and down channels whose gated activation is zeroed are skipped (here
  multiplied by zero; a kernel would not read them). Holds the original ``gate_proj``,
  ``up_proj``, ``down_proj`` and ``act_fn`` under the same names.

A negative threshold means *dense*: the forward is exactly the original one (bit-identical).
``mode`` picks the evaluation protocol (``"all"``, ``"decode"``: prefill dense and decode
sparse, ``"last-half"``: TEAL's); see :class:`_Site`. Each module counts the entries it saw
and zeroed (``seen``, ``zeroed``; ``realised``) while ``counting`` is True.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from actlab.sparse._state import SparseError, Threshold

__all__ = [
    "MODES",
    "SparseGatedMLP",
    "SparseLinear",
    "check_mode",
    "exact_quantile",
    "show_threshold",
]

_GATED = ("gate_proj", "up_proj", "down_proj", "act_fn")


MODES = ("all", "decode", "last-half")


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`; a one-line :class:`SparseError` otherwise."""
    if mode not in MODES:
        raise SparseError(f"sparsity mode must be one of {', '.join(MODES)}; got {mode!r}")
    return str(mode)


def _threshold(value: Threshold) -> Threshold:
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or not value.is_floating_point():
            raise SparseError("channel thresholds must be a 1-D float tensor")
        return value.detach().float()
    return float(value)


def show_threshold(t: Threshold) -> str:
    if isinstance(t, torch.Tensor):
        return f"[{t.numel()} channels, median {float(t.median()):.4g}]"
    return f"{t:.4g}"


class _Site:
    """Threshold, protocol mode and counters shared by the sparse modules.

    ``mode`` says which token positions are sparsified in a forward over ``[..., T, d]``:
    ``"all"`` every position; ``"decode"`` only single-position forwards (prefill dense,
    decode sparse: what real decoding does); ``"last-half"`` positions ``T // 2`` onwards
    of a multi-position forward (TEAL's evaluation) and single-position forwards. A 1-D or
    2-D input ``[tokens, d]`` is treated as single positions. Counts cover the sparsified
    positions only.
    """

    threshold: Threshold
    mode: str
    seen: int
    zeroed: int
    counting: bool
    # the fused CPU kernel (actlab.sparse.use_kernels): called first; None = torch path
    _kernel: Callable[[Any, torch.Tensor], torch.Tensor | None] | None = None

    def _init_site(self, threshold: Threshold) -> None:
        self.threshold = _threshold(threshold)
        self.mode = "all"
        self.counting = True
        self.reset_counts()

    def _keep(self, v: torch.Tensor) -> torch.Tensor | None:
        """The mask of entries of ``v`` kept, or None when this forward stays dense."""
        t = self.threshold
        if isinstance(t, float) and t < 0:
            if self.counting:
                self.seen += v.numel()  # dense: seen, none zeroed
            return None
        positions = v.shape[-2] if v.ndim >= 3 else 1
        if self.mode == "decode" and positions > 1:
            return None
        keep = self._criterion(v)
        if self.mode == "last-half" and positions > 1:
            keep[..., : positions // 2, :] = True
            counted = keep[..., positions // 2 :, :]
        else:
            counted = keep
        if self.counting:
            self.seen += counted.numel()
            self.zeroed += counted.numel() - int(counted.sum().item())
        return keep

    def _criterion(self, v: torch.Tensor) -> torch.Tensor:
        """The mask of entries kept by this site's rule (here ``|v| > threshold``)."""
        t = self.threshold
        if isinstance(t, torch.Tensor):
            if t.shape[-1] != v.shape[-1]:
                raise SparseError(f"{t.shape[-1]} channel thresholds for {v.shape[-1]} channels")
            if t.device != v.device:
                t = self.threshold = t.to(v.device)
        return v.abs() > t

    @property
    def realised(self) -> float:
        """Fraction of the entries seen that were zeroed (nan before any forward)."""
        return self.zeroed / self.seen if self.seen else float("nan")

    def reset_counts(self) -> None:
        """Forget the counts (``seen = zeroed = 0``)."""
        self.seen = 0
        self.zeroed = 0


class SparseLinear(_Site, nn.Linear):
    """An ``nn.Linear`` whose input entries with ``|x| <= threshold`` are zeroed first.

    Build it from an existing linear with :meth:`wrap` (the parameters are shared, not
    copied). ``threshold < 0`` leaves the layer dense and bit-identical.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_site(-1.0)

    # a term added to the output from the input the linear read (entries dropped), in the
    # torch path: the low-rank corrections while they are tuned (actlab.sparse.tune_gains)
    correction: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def wrap(cls, linear: nn.Linear, threshold: Threshold = -1.0) -> SparseLinear:
        """A SparseLinear sharing ``linear``'s weight and bias (no copy, ties kept)."""
        if not isinstance(linear, nn.Linear) or isinstance(linear, SparseLinear):
            what = "already sparse" if isinstance(linear, SparseLinear) else type(linear).__name__
            raise SparseError(f"SparseLinear.wrap needs a plain nn.Linear, got {what}")
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        new.weight = linear.weight
        new.bias = linear.bias
        new._init_site(threshold)
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and (y := self._kernel(self, x)) is not None:
            return y
        keep = self._keep(x)
        used = x if keep is None else x * keep
        y = super().forward(used)
        return y if self.correction is None else y + self.correction(used)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={show_threshold(self.threshold)}"


class SparseGatedMLP(_Site, nn.Module):
    """A gated MLP ``down(act(gate(x)) * up(x))`` whose gated channels with ``|act| <= t`` are
    skipped in up and down (CATS; a 1-D ``threshold`` gives one per channel, CHESS). Holds
    the original submodules under their names."""

    gate_proj: nn.Module
    up_proj: nn.Module
    down_proj: nn.Module
    act_fn: nn.Module

    def __init__(self, mlp: nn.Module, threshold: Threshold = -1.0) -> None:
        super().__init__()
        for name in _GATED:
            if not isinstance(getattr(mlp, name, None), nn.Module):
                raise SparseError(
                    f"{type(mlp).__name__} has no {name}; CATS needs a gated MLP "
                    "(gate_proj, up_proj, down_proj, act_fn)"
                )
        for name in _GATED:  # the same modules under the same names: state_dict keys kept
            setattr(self, name, getattr(mlp, name))
        self.original_class = type(mlp).__name__
        self._init_site(threshold)
        self.train(mlp.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and (y := self._kernel(self, x)) is not None:
            return y
        a = self.act_fn(self.gate_proj(x))
        keep = self._keep(a)
        if keep is None:
            return self.down_proj(a * self.up_proj(x))
        return self.down_proj((a * keep) * self.up_proj(x))

    def extra_repr(self) -> str:
        return f"was={self.original_class}, threshold={show_threshold(self.threshold)}"


def exact_quantile(values: torch.Tensor, q: float) -> float:
    """The ``q``-quantile of ``values`` (any shape), linear interpolation as ``torch.quantile``.

    Works on any number of elements (``torch.quantile`` stops at 2**24); computed in float64.
    """
    v = values.detach().reshape(-1).double()
    if v.numel() == 0:
        raise SparseError("cannot take a quantile of no values (calibration captured nothing)")
    if not 0.0 <= q <= 1.0:
        raise SparseError(f"quantile level must be in [0, 1], got {q}")
    pos = q * (v.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, v.numel() - 1)
    # kthvalue is 1-based; two order statistics are all that is needed
    a = torch.kthvalue(v, lo + 1).values.item()
    b = torch.kthvalue(v, hi + 1).values.item() if hi != lo else a
    return float(a + (b - a) * (pos - lo))
