"""Normalisation layers: LayerNorm, RMSNorm, BatchNorm (eager torch classes, lazily sizable).

    layernorm  y = (x - mean(x)) / sqrt(var(x) + eps) * w + b      over the last axis
               Ba, Kiros & Hinton 2016, "Layer Normalization" (arXiv 1607.06450)
    rmsnorm    y = x / sqrt(mean(x^2) + eps) * w                   over the last axis
               Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (arXiv 1910.07467)
    batchnorm  y = (x - E[x]) / sqrt(Var[x] + eps) * w + b         per channel (dim 1) over
               batch and space of (B, C, H, W); running statistics at eval (momentum 0.1)
               Ioffe & Szegedy 2015, "Batch Normalization" (arXiv 1502.03167)

With ``num_features`` given, the factories return the plain torch modules (``nn.LayerNorm``,
``nn.RMSNorm``, ``nn.BatchNorm2d``), so models built through the ``norm_layer`` slot hold the
same modules, parameter names and numerics as before. Without it they return a lazy module
(``LazyModuleMixin``) that takes its size from the first input and then becomes that class.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from actlab.layers._registry import register_layer

__all__ = ["LazyLayerNorm", "LazyRMSNorm", "batchnorm", "layernorm", "rmsnorm"]


def _lazy() -> nn.Parameter:
    return cast(nn.Parameter, UninitializedParameter())


def _materialize(p: Any, n: int) -> None:
    cast(UninitializedParameter, p).materialize((n,))


class _LazyLastAxis(LazyModuleMixin):
    """Sizing shared by the lazy norms: ``normalized_shape`` and the affine parameters take
    the size of the input's last axis (or of weights loaded from a state_dict)."""

    normalized_shape: tuple[int, ...]

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.normalized_shape != (0,):  # type: ignore[misc]
            super().reset_parameters()  # type: ignore[misc]

    def initialize_parameters(self, x: Tensor, *args: Any, **kwargs: Any) -> None:
        n = int(x.shape[-1])
        weight = getattr(self, "weight", None)
        if self.has_uninitialized_params():  # type: ignore[misc]
            self.normalized_shape = (n,)
            with torch.no_grad():
                for p in (weight, getattr(self, "bias", None)):
                    if p is not None:
                        _materialize(p, n)
                self.reset_parameters()
        elif weight is not None:  # loaded from a state_dict before the first input
            self.normalized_shape = tuple(weight.shape)
        else:
            self.normalized_shape = (n,)


class LazyLayerNorm(_LazyLastAxis, nn.LayerNorm):  # type: ignore[misc]
    """``nn.LayerNorm`` over the last axis whose size is read from the first input."""

    cls_to_become = nn.LayerNorm  # type: ignore[assignment]

    def __init__(
        self, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True
    ) -> None:
        super().__init__(0, eps, elementwise_affine, bias)
        if elementwise_affine:
            self.register_parameter("weight", _lazy())
            if bias:
                self.register_parameter("bias", _lazy())


class LazyRMSNorm(_LazyLastAxis, nn.RMSNorm):  # type: ignore[misc]
    """``nn.RMSNorm`` over the last axis whose size is read from the first input."""

    cls_to_become = nn.RMSNorm  # type: ignore[assignment]

    def __init__(self, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__(0, eps, elementwise_affine)
        if elementwise_affine:
            self.register_parameter("weight", _lazy())


def _check(eps: float) -> None:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


@register_layer(
    "layernorm",
    kind="norm",
    lazy=("num_features",),
    aliases=("ln", "layer_norm"),
    formula="(x - mean(x)) / sqrt(var(x) + eps) * w + b (last axis)",
    paper="Ba, Kiros & Hinton 2016, arXiv 1607.06450",
)
def layernorm(
    num_features: int | None = None, eps: float = 1e-5, affine: bool = True, bias: bool = True
) -> nn.Module:
    """``nn.LayerNorm(num_features)`` (lazy when ``num_features`` is None)."""
    _check(eps)
    if num_features is None:
        return LazyLayerNorm(eps, affine, bias)
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine, bias=bias)


@register_layer(
    "rmsnorm",
    kind="norm",
    lazy=("num_features",),
    aliases=("rms_norm",),
    formula="x / sqrt(mean(x^2) + eps) * w (last axis)",
    paper="Zhang & Sennrich 2019, arXiv 1910.07467",
)
def rmsnorm(num_features: int | None = None, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    """``nn.RMSNorm(num_features, eps)`` (lazy when ``num_features`` is None)."""
    _check(eps)
    if num_features is None:
        return LazyRMSNorm(eps, affine)
    return nn.RMSNorm(num_features, eps=eps, elementwise_affine=affine)


@register_layer(
    "batchnorm",
    kind="norm",
    layout="first",
    lazy=("num_features",),
    aliases=("bn", "batchnorm2d"),
    formula="(x - E[x]) / sqrt(Var[x] + eps) * w + b per channel of (B, C, H, W)",
    paper="Ioffe & Szegedy 2015, arXiv 1502.03167",
)
def batchnorm(
    num_features: int | None = None,
    eps: float = 1e-5,
    momentum: float = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """``nn.BatchNorm2d(num_features)`` (``nn.LazyBatchNorm2d`` when it is None)."""
    _check(eps)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    kw: dict[str, Any] = dict(
        eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )
    if num_features is None:
        return nn.LazyBatchNorm2d(**kw)
    return nn.BatchNorm2d(num_features, **kw)
