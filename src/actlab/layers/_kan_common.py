"""What the KAN-family layers share: the grid, the input-range contract, shape checks and the
two-layer block of a model's MLP slot (:class:`KANBlock`).

Grid. Every KAN layer here works on the domain [-1, 1] split into ``grid`` intervals of width
``h = 2 / grid``; a basis of order ``k`` has ``G = grid + k`` functions, function ``i``
supported on [low_i, high_i] with

    low_i = -1 + (i - k) h,   high_i = low_i + (k + 1) h,   i = 0 .. G - 1

(the ReLU-KAN / AF-KAN phases ``arange(-k, g) / g`` of the authors' code, moved from [0, 1]
to [-1, 1] by x -> 2x - 1, so that the same contract holds for the whole family).

Input-range contract. A KAN layer's basis only resolves inputs inside [-1, 1]; beyond it the
splines vanish or blow up and the layer silently loses its resolution (a known complaint about
KAN code). Each layer therefore takes ``input_norm``:

    "tanh"   u = tanh(x)           (default) every input lands inside (-1, 1); near 0 it is the
                                   identity, so inputs already in range are barely changed
    "none"   u = x                 the caller guarantees x in [-1, 1]; inputs outside are
                                   counted on the device (no synchronisation per step) and a
                                   warning naming the fraction outside is raised on the first
                                   call and every ``CHECK_EVERY`` calls after it
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers._finite import checked_finite, finite_now

__all__ = [
    "CHECK_EVERY",
    "INPUT_NORMS",
    "InputRange",
    "KANBlock",
    "check_features",
    "check_finite",
    "check_finite_params",
    "check_grid",
    "grid_phases",
    "relu_basis",
]

INPUT_NORMS = ("tanh", "none")
CHECK_EVERY = 50  # calls between two range checks with input_norm="none"


def check_finite(name: str, **values: float) -> None:
    """One-line ``ValueError`` for a non-finite constructor value."""
    for key, v in values.items():
        if not math.isfinite(float(v)):
            raise ValueError(f"{name}: {key} must be finite, got {v!r}")


def check_finite_params(name: str, module: nn.Module) -> None:
    """One-line ``ValueError`` if a parameter of ``module`` holds NaN or inf (checked at every
    forward where it applies: a diverged or corrupted checkpoint must not turn into silent NaN
    outputs; KANBlock calls it when its output is not finite)."""
    if not finite_now(list(module.parameters())):
        raise ValueError(
            f"{name}: non-finite parameters (NaN or inf); reload finite weights or rebuild it"
        )


class KANBlock(nn.Module):
    """Two KAN layers in -> hidden -> out (each size defaults to in), dropout after each: the
    family's block for a model's MLP slot. ``make(i, o)`` builds a layer (..., i) -> (..., o);
    ``name`` heads the errors. Non-finite parameters are caught where they reach the output:
    every forward checks the output (one native pass over it on CPU), and a NaN or inf there
    checks the parameters, which raises if one is non-finite (a non-finite input alone passes
    through, as in the layers). A parameter the output does not use (a pruned S-KAN's
    logits, an unused LayerNorm) is not reported. Off the CPU the output is checked on the
    first forward and every ``CHECK_EVERY``-th after it (:func:`actlab.layers._finite.due`: no
    host sync per forward)."""

    def __init__(
        self,
        name: str,
        make: Callable[[int, int], nn.Module],
        in_features: int,
        hidden_features: int | None,
        out_features: int | None,
        drop: float,
    ) -> None:
        super().__init__()
        self._kan_name = name
        hidden = hidden_features or in_features
        self.layer1 = make(in_features, hidden)
        self.layer2 = make(hidden, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        mods = self._modules  # (nn.Module.__getattr__ costs ~0.4 us a name)
        drop = mods["drop"]
        assert isinstance(drop, nn.Dropout)
        on = drop.p > 0  # Dropout(0) returns its input (ATen's _dropout): not called (~2.5 us)
        y = mods["layer1"](x)  # type: ignore[misc]
        y = mods["layer2"](drop(y) if on else y)  # type: ignore[misc]
        y = drop(y) if on else y
        # ~3 us on CPU (a walk over the parameters costs ~17 us); not finite: from a parameter
        # (raises here) or from the input (returned as it is)
        if not checked_finite(self, [y], watch=False):
            check_finite_params(self._kan_name, self)
        return y


def check_grid(name: str, grid: int, k: int) -> None:
    """``grid`` >= 1 intervals, order ``k`` >= 0 (whole numbers)."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"{name}: grid must be a whole number >= 1, got {grid!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{name}: k must be a whole number >= 0, got {k!r}")


def check_features(name: str, x: Tensor, in_features: int) -> None:
    """One-line errors for an input that is not (..., in_features) floating point."""
    if x.ndim < 1:
        raise ValueError(f"{name} expects an input of shape (..., {in_features}), got a scalar")
    if x.shape[-1] != in_features:
        raise ValueError(
            f"{name} expects {in_features} features on the last axis, got shape "
            f"{tuple(x.shape)}; build it with in_features={x.shape[-1]} or fix the input"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point input, got {x.dtype}")


def grid_phases(grid: int, k: int) -> tuple[Tensor, Tensor]:
    """The (G,) float64 ``low`` and ``high`` ends of the G = grid + k basis supports."""
    h = 2.0 / grid
    low = -1.0 + (torch.arange(grid + k, dtype=torch.float64) - k) * h
    return low, low + (k + 1) * h


def _relu_r(x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """a = relu(x - low), b = relu(high - x), c = 4 / (high - low)^2 and r = a b c."""
    width = high - low
    c = 4.0 / (width * width)
    a, b = torch.relu(x - low), torch.relu(high - x)
    return a, b, c, a * b * c


class _ReLUBasis(torch.autograd.Function):
    """R = r^2 with a hand-written backward that saves only the inputs and recomputes r.

    With w = high - low and where r > 0 (elsewhere every derivative of R = r^2 is 0):
    dr/dx = c (b - a),  dr/dlow = 2 r / w - c b,  dr/dhigh = c a - 2 r / w,  dR = 2 r dr.
    Autograd's own graph would keep a, b, c r and r^2 alive (about 5x the (..., in, G) basis).
    """

    @staticmethod
    def forward(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        r = _relu_r(x, low, high)[3]
        return r * r

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, low, high = ctx.saved_tensors
        a, b, c, r = _relu_r(x, low, high)
        g2r = 2 * grad * r  # dL/dR * dR/dr
        gx = gl = gh = None
        if ctx.needs_input_grad[0]:
            gx = (g2r * c * (b - a)).sum_to_size(x.shape)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            t = r * (2.0 / (high - low))
            if ctx.needs_input_grad[1]:
                gl = (g2r * (t - c * b)).sum_to_size(low.shape)
            if ctx.needs_input_grad[2]:
                gh = (g2r * (c * a - t)).sum_to_size(high.shape)
        return gx, gl, gh


def relu_basis(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """ReLU-KAN basis [relu(x - low) relu(high - x) * 4 / (high - low)^2]^2, peak 1.

    ``x`` (..., in, 1) against ``low``/``high`` broadcastable to (..., in, G). The peak is at
    (low + high) / 2, where the product is ((high - low) / 2)^2, so the scale makes it 1.
    Backward recomputes the basis from the inputs (:class:`_ReLUBasis`) instead of keeping
    its intermediates.
    """
    out: Tensor = _ReLUBasis.apply(x, low, high)
    return out


class InputRange(nn.Module):
    """The explicit input normalisation of a KAN layer (see the module docstring)."""

    def __init__(self, owner: str, input_norm: str = "tanh") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(
                f"{owner}: input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}"
            )
        self.owner = owner
        self.input_norm = input_norm
        self._calls = 0
        self._outside: Tensor | None = None  # device counters: [outside, total]

    def forward(self, x: Tensor) -> Tensor:
        if self.input_norm == "tanh":
            return torch.tanh(x)
        self._count(x.detach())
        return x

    def _count(self, x: Tensor) -> None:
        out = (x.abs() > 1.0).sum().to(torch.float64)
        total = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
        now = torch.stack([out, total])
        self._outside = (
            now
            if self._outside is None or self._outside.device != x.device
            else (self._outside + now)
        )
        if self._calls % CHECK_EVERY == 0:
            outside, seen = (float(v) for v in self._outside)
            self._outside = None
            if outside > 0:
                warnings.warn(
                    f"{self.owner}: {outside / seen:.1%} of the inputs seen lie outside the grid "
                    "range [-1, 1], where the basis loses resolution; scale the inputs into "
                    "[-1, 1] or build the layer with input_norm='tanh'",
                    RuntimeWarning,
                    stacklevel=4,
                )
        self._calls += 1

    def extra_repr(self) -> str:
        return f"input_norm={self.input_norm!r}"
