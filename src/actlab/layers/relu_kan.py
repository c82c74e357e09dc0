"""ReLU-KAN: a Kolmogorov-Arnold layer whose basis is a square of shifted ReLU products.

    u        = input_norm(x)                                       (..., in), in [-1, 1]
    R_i(u)   = [relu(u - low_i) relu(high_i - u) * 4 / (high_i - low_i)^2]^2     i < G
    layer(x) = W vec(R(u)) + b                                     W: (out, in * G)
    block    = layer_2(layer_1(x))                                 in -> hidden -> out

Qiu et al. 2024, "ReLU-KAN: New Kolmogorov-Arnold Networks that Only Need Matrix Addition,
Dot Multiplication, and Parallel Computing" (arXiv 2406.02075); the layer as in quiqi/relu_kan
and hoangthangta/All-KAN (``r = 4 g^2 / (k+1)^2``, one ``equal_size_conv`` = one Linear over
the flattened (G, in) features, trainable per-input phases).

Choices where the paper is silent or differs from the code (stated, not guessed):

- Normalisation: each R_i is scaled so that its peak, at (low_i + high_i) / 2, is exactly 1
  (the code's ``r`` does this for the initial phases; here the scale follows the current
  phases, so it stays 1 when the phases train).
- Domain: the grid is on [-1, 1] (the code's [0, 1] moved by x -> 2x - 1), with the
  family's input-range contract: ``input_norm="tanh"`` (default) or ``"none"`` (warns when
  inputs leave [-1, 1]); see :mod:`actlab.layers._kan_common`.
- The phases ``low``/``high`` are trainable per input (``train_phases=True``, as the code).
- As an ``mlp`` block (the model's MLP slot) it is two KAN layers, in -> hidden -> out,
  the KAN shape [in, hidden, out]; ``act_layer`` is not used (the basis is ReLU by definition).

Parameters per KAN layer: out * in * G + out (+ 2 * in * G phases). An MLP block of width H
has in * H + H + H * out + out; ``actlab.models.fit.match_hidden`` sizes blocks equally.
The basis is evaluated for all nodes and functions at once (no Python loop over nodes).

Speed: on CPU float32 / float64 a layer runs as one native op (``fused=True``, default;
:mod:`actlab.layers._kan_native`): the basis is written in the (in G, N) layout the GEMM reads
through its transpose flag, and the backward recomputes it with its derivatives in one pass,
saving only u. ``fused=False``, CUDA and other dtypes run the torch path below (the plain
twin the kernels are tested against).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers._kan_common import (
    InputRange,
    KANBlock,
    check_features,
    check_grid,
    grid_phases,
    relu_basis,
)
from actlab.layers._kan_native import ops_for
from actlab.layers._kan_ref import relu_kan_ref
from actlab.layers._registry import check_flag, register_layer

__all__ = ["ReLUKAN", "ReLUKANLayer"]


class ReLUKANLayer(nn.Module):
    """One ReLU-KAN layer (..., in) -> (..., out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid: int = 5,
        k: int = 3,
        input_norm: str = "tanh",
        train_phases: bool = True,
        bias: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        check_grid("relu_kan", grid, k)
        if in_features < 1 or out_features < 1:
            raise ValueError(f"relu_kan: features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features, self.grid, self.k = in_features, out_features, grid, k
        self.fused = check_flag("relu_kan", "fused", fused)
        # fused path: return y as the (N, out) view of the (out, N) GEMM result; set by a block
        # whose next layer reads it (no copy), never where in-place ops may follow
        self.out_t = False
        n = grid + k
        low, high = grid_phases(grid, k)
        dtype = torch.get_default_dtype()
        self.low = nn.Parameter(low.to(dtype).repeat(in_features, 1), requires_grad=train_phases)
        self.high = nn.Parameter(high.to(dtype).repeat(in_features, 1), requires_grad=train_phases)
        self.range = InputRange("relu_kan", input_norm)
        self.linear = nn.Linear(in_features * n, out_features, bias=bias)
        # the basis is in [0, 1] with about k+1 of G functions active: fan-in init of nn.Linear
        nn.init.kaiming_uniform_(self.linear.weight, a=math.sqrt(5))

    def basis(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., in, G) basis values of the normalised input."""
        u = self.range(x).unsqueeze(-1)  # (..., in, 1)
        return relu_basis(u, self.low, self.high)  # (..., in, G)

    def forward(self, x: Tensor) -> Tensor:
        check_features("relu_kan", x, self.in_features)
        lin = self.linear
        ops = ops_for(x, self.low, self.high, lin.weight, lin.bias) if self.fused else None
        if ops is not None:  # the fused native kernels (CPU float32 / float64)
            tanh = self.range.input_norm == "tanh"
            u = x if tanh else self.range(x)  # "none": the range check, u = x
            y: Tensor = ops.relu_kan_layer(
                u, self.low, self.high, lin.weight, lin.bias, tanh, self.out_t
            )
            return y  # (..., out)
        r = self.basis(x)  # (..., in, G)
        return self.linear(r.flatten(-2))  # (..., out)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, grid={self.grid}, k={self.k}"


@register_layer(
    "relu_kan",
    kind="mlp",
    formula="W vec([relu(u - l_i) relu(h_i - u) 4/(h_i - l_i)^2]^2) + b, u = tanh(x)",
    paper="Qiu et al. 2024, arXiv 2406.02075",
    aliases=("relukan",),
    reference=relu_kan_ref,
)
class ReLUKAN(KANBlock):
    """ReLU-KAN block [in, hidden, out] for a model's MLP slot (``act_layer`` unused)."""

    layer1: ReLUKANLayer
    layer2: ReLUKANLayer

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
        grid: int = 5,
        k: int = 3,
        input_norm: str = "tanh",
        train_phases: bool = True,
        fused: bool = True,
    ) -> None:
        kw: dict[str, Any] = dict(
            grid=grid, k=k, input_norm=input_norm, train_phases=train_phases, bias=bias,
            fused=fused,
        )  # fmt: skip
        super().__init__(
            "relu_kan", lambda i, o: ReLUKANLayer(i, o, **kw),
            in_features, hidden_features, out_features, drop,
        )  # fmt: skip
        self.layer1.out_t = True  # layer2 reads it (through a Dropout, not in place)
