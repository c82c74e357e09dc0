"""AF-KAN: a Kolmogorov-Arnold layer from activation-function phases and global attention.

    u       = input_norm(x)                                          (..., in), in [-1, 1]
    x1      = act(u - low_i),  x2 = act(high_i - u)                  (..., in, G)
    f       = (x1 * x2)^2                                            func="quad1" (default)
    f       = (f - min f) / (max f - min f)                          func_norm (see below)
    a       = softmax((f @ w_g + b_g) / max(T, 1), over the in axis)   (..., in, 1)
    z       = sum_i' f[..., i'] * a                                  (..., in): sum over G
    layer   = W act(LayerNorm(z))                                    W: (out, in), no bias
    block   = layer_2(layer_1(x))                                    in -> hidden -> out

Hoang Thang Ta et al. 2025, "AF-KAN: Activation Function-Based Kolmogorov-Arnold Networks
for Efficient Representation Learning" (arXiv 2503.06112); checked against
hoangthangta/All-KAN ``models/af_kan.py`` (method ``global_attn``, the default):
phases low = arange(-k, g) / g, high = low + (k + 1) / g, trainable and shared by all
inputs; ``gk_linear``: Linear(G -> 1); temperature init sqrt(in) clamped >= 1; LayerNorm over
the reduced features; then ``F.linear(act(x), base_weight)`` without bias. Defaults
act = SiLU, grid 5, k 3.

Choices (stated):

- The code normalises f by its L2 norm over the whole tensor and then min-max scales it to
  [0, 1]; min-max is invariant to the positive L2 scale, so only min-max is computed here.
  ``func_norm="batch"`` (default, as the code) takes min and max over the whole input tensor,
  so an output depends on the other rows of its batch; ``"sample"`` takes them over each
  row's (in, G) values (batch-independent); ``"none"`` skips it. min == max gives 0.
- Domain [-1, 1] (the code's phases moved by x -> 2x - 1) with the family's input-range
  contract (``input_norm``; :mod:`actlab.layers._kan_common`).
- ``act`` is the model's ``act_layer`` (SiLU by default; the ``act`` parameter overrides it);
  one module serves both uses. The ``bias`` slot is ignored: the code's output has no bias.
- bfloat16 / float16 inputs: the features, min-max, softmax and LayerNorm run in float32
  (they normalise near-equal values, which half precision cannot resolve); the output
  projection runs in the input dtype.
- ``norm``: the LayerNorm over the reduced features (``"layer"``, the code's default) is
  constant for a single input feature, which would make a layer on 1-D inputs output a
  constant; ``"auto"`` (default) uses it when in_features > 1 and skips it otherwise;
  ``"none"`` always skips it (the code's ``norm_type=None``).
- Combinations ``func``: quad1 (x1 x2)^2, quad2 x1 x2 + x1^2 + x2^2, sum x1 + x2, prod x1 x2,
  sum_prod x1 + x2 + x1 x2, cubic1 (x1 + x2)(x1^2 + x2^2), cubic2 (x1 x2)^3 (the code's list).

Parameters per layer: out * in + 2 in (LayerNorm) + G + 1 + 2 G + 1: about an MLP layer's.

Speed: on CPU float32 / float64 with act SiLU or GELU (``fused=True``, default;
:mod:`actlab.layers._kan_native`) the whole layer is one native op, ``af_kan_layer``: the
two contractions over G and the min / max of f without writing f (N, in, G); then one pass
over (in, N) for the min-max scale, the softmax with its temperature, the LayerNorm and the
act; then the projection (one GEMM; a block's first layer writes y^T (out, N) and returns y as
its (N, out) view, which the second layer reads without a transposing copy). When a backward
can follow, the forward keeps the act's output (for the weight gradient) and the tail's values
a, s0n, s1n and act'(q) per input value (with the LayerNorm's mean and 1 / std per row), so
the backward's tail pass evaluates no series, exp or act; it then recomputes f with its
derivatives in one pass (exact kernels) or sums the moments (series path, whose backward also
takes the sums weighted by s0n, for the low / high and temperature gradients, from those
moments, so its forward keeps no s0n). Autograd keeps u, those and the min / max: 6 floats per
input value on the exact kernels, 5 on the series path (2.9x the GELU MLP's saved bytes in the
D 64 transformer slot), never f (N, in, G). The phase pairs share one
exp: SiLU's two sigmoids come from exp(-(u - l)) and the constant exp(-(h - l)), float GELU's
phi from its erf's exp. In float32 on AVX2 / AVX-512 the phases' exps and the tail's softmax
exp are ATen's 20-ulp exp and the divisions a reciprocal estimate with one Newton step (float64
keeps the 1-ulp exp and true division). The forward keeps only the running min / max of f; the
backward, which recomputes f anyway, finds the values tied with them and shares their gradient.

Series path (``series=True``, default; ``csrc/kan_af_series.cpp``): a float32 call with
``input_norm="tanh"``, ``func_norm`` "batch" or "none" and at least 8,192 inputs evaluates no
phase per input. The contractions s0(u) = f(u) . w and s1(u) = sum_G f(u) are functions of the
scalar u in [-1, 1], analytic for SiLU and GELU, so each forward fits their Chebyshev series in
double (33 nodes; cut where the dropped coefficients fall below 1e-9 of the series' scale:
degree ~15 at the default phases; with gradients to come also the backward's series, kept for
it, the phase gradients' cut at 1e-7, below their float32 sums) and the tail evaluates them
where it would read them (AVX-512 / AVX2 builds: from per-cell polynomials fitted to the
series, 32 cells of degree 5 / 8 of degree 7, coefficients picked per lane by a register
permute; kept only within 1e-8 of the series' scale; the input gradient's slopes on AVX2:
degree 5, within 1e-6); the phase gradients come from moments sum gs T_d(u) of the same pass.
Once the min / max are known, the softmax's numerators E(u) = exp(e(u) - c) (as E - 1, whose
pieces' rounding is small where E is near 1) and s1n(u) get pieces of their own where e's
range over [-1, 1] is at most 2 (measured: 0.05-0.08 for the default layers of the D 64 slot,
0.1-0.3 for the tests' perturbed ones), so the tail evaluates no exp, max or min-max scale per
value; wider ranges take the exp.
The min / max of f stay exact: a table of f and f' per phase bounds each cell of [-1, 1] (from
512 cells on, only where a coarser table says the extremes can lie), and only the inputs in
cells that can reach the extremes are evaluated exactly (their min / max equal the exact
kernel's bit for bit; tested, also fuzzed). float32 outputs and gradients are as close to the
float64 torch path as the exact kernels' (within 4x or 2e-4 of each output's scale; measured
6e-8 to 8e-4, the larger ones where the exact kernels' error is as large). A NaN input,
non-converging series and everything else take the exact kernels; ``series=False`` forces them.
``fused=False``, CUDA, half dtypes and other acts run the torch path (the plain twin the op is
tested against); ``af_kan_reduce`` (the reduction alone) stays an op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers._kan_common import (
    InputRange,
    KANBlock,
    check_features,
    check_grid,
    grid_phases,
)
from actlab.layers._kan_native import FUNC_CODES, NORM_CODES, act_code, ops_for
from actlab.layers._kan_ref import af_kan_ref
from actlab.layers._registry import act_module, check_flag, register_layer

__all__ = ["AFKAN", "AFKANLayer", "FUNCS", "FUNC_NORMS", "minmax", "minmax_range"]

FUNCS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "quad1": lambda a, b: (a * b) ** 2,
    "quad2": lambda a, b: a * b + a * a + b * b,
    "sum": lambda a, b: a + b,
    "prod": lambda a, b: a * b,
    "sum_prod": lambda a, b: a + b + a * b,
    "cubic1": lambda a, b: (a + b) * (a * a + b * b),
    "cubic2": lambda a, b: (a * b) ** 3,
}
FUNC_NORMS = ("batch", "sample", "none")
SERIES_KNOTS = 1024  # cells of the series path's min / max bounds (csrc/kan_af_series.cpp)
NORMS = ("auto", "layer", "none")
_HALF = (torch.bfloat16, torch.float16)


def minmax_range(f: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """``lo`` and ``span`` (1 where the values are all equal) of ``f`` (..., in, G) over the
    whole tensor ("batch") or each row's (in, G) values ("sample"), broadcastable to f."""
    if mode == "batch":
        lo, hi = f.amin(), f.amax()
    else:
        flat = f.flatten(-2)  # (..., in * G)
        lo = flat.amin(-1).unsqueeze(-1).unsqueeze(-1)  # (..., 1, 1)
        hi = flat.amax(-1).unsqueeze(-1).unsqueeze(-1)
    span = hi - lo
    return lo, torch.where(span > 0, span, torch.ones_like(span))


def minmax(f: Tensor, mode: str) -> Tensor:
    """Min-max scale ``f`` (..., in, G) to [0, 1] over the tensor or each row (0 if flat)."""
    if mode == "none":
        return f
    lo, span = minmax_range(f, mode)
    return (f - lo) / span


class AFKANLayer(nn.Module):
    """One AF-KAN layer (..., in) -> (..., out) with the ``global_attn`` reduction."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        act: nn.Module,
        grid: int = 5,
        k: int = 3,
        func: str = "quad1",
        func_norm: str = "batch",
        input_norm: str = "tanh",
        norm: str = "auto",
        fused: bool = True,
        series: bool = True,
    ) -> None:
        super().__init__()
        check_grid("af_kan", grid, k)
        if norm not in NORMS:
            raise ValueError(f"af_kan: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if func not in FUNCS:
            raise ValueError(f"af_kan: func must be one of {', '.join(FUNCS)}, got {func!r}")
        if func_norm not in FUNC_NORMS:
            raise ValueError(
                f"af_kan: func_norm must be one of {', '.join(FUNC_NORMS)}, got {func_norm!r}"
            )
        if in_features < 1 or out_features < 1:
            raise ValueError(f"af_kan: features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.grid, self.k, self.func, self.func_norm = grid, k, func, func_norm
        n = grid + k
        low, high = grid_phases(grid, k)
        dtype = torch.get_default_dtype()
        self.low = nn.Parameter(low.to(dtype))
        self.high = nn.Parameter(high.to(dtype))
        self.temperature = nn.Parameter(torch.tensor(math.sqrt(in_features), dtype=dtype))
        self.attn = nn.Linear(n, 1)  # the code's gk_linear
        self.use_norm = norm == "layer" or (norm == "auto" and in_features > 1)
        self.norm = nn.LayerNorm(in_features)  # kept (unused) without use_norm: fixed keys
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.act = act
        self.range = InputRange("af_kan", input_norm)
        self.fused = check_flag("af_kan", "fused", fused)
        # fused path: return y as the (N, out) view of the (out, N) GEMM result; set by a block
        # whose next layer reads it (no copy), never where in-place ops may follow
        self.out_t = False
        # the native series path (0: off)
        self.series_knots = SERIES_KNOTS if check_flag("af_kan", "series", series) else 0
        self._act_id: tuple[int, int | None] = (0, None)  # (id of act, its kernel code)

    def forward(self, x: Tensor) -> Tensor:
        check_features("af_kan", x, self.in_features)
        dtype = x.dtype
        if dtype in _HALF:  # min-max, softmax and LayerNorm of near-equal values: in float32
            with torch.autocast(x.device.type, enabled=False):
                return F.linear(self._reduce(x.float()).to(dtype), self.weight)
        p = self._params(dtype)
        ops = self._ops(x, p)
        if ops is not None:  # the whole layer as one native op
            rng = self._modules["range"]
            assert isinstance(rng, InputRange)
            tanh = rng.input_norm == "tanh"
            u = x if tanh else rng(x)  # "none": the range check, u = x
            nw, nb = (p["norm_w"], p["norm_b"]) if self.use_norm else (None, None)
            y: Tensor = ops.af_kan_layer(
                u, p["low"], p["high"], p["attn_w"], p["attn_b"], p["temperature"],
                p["weight"], nw, nb, self._act_id[1], FUNC_CODES[self.func],
                NORM_CODES[self.func_norm], tanh, self.norm.eps, self.series_knots, self.out_t,
            )  # fmt: skip
            return y
        return F.linear(self._reduce(x), self.weight)  # (..., out)

    def _reduce(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., in): act(LayerNorm(attention-weighted sum of the features))."""
        p = self._params(x.dtype)
        s0, s1 = self._contract(x, p)  # (..., in) each
        t = p["temperature"].clamp(min=1.0)
        a = torch.softmax((s0 + p["attn_b"][0]) / t, dim=-1)  # (..., in) over inputs
        z = a * s1  # (..., in)
        if self.use_norm:
            z = F.layer_norm(z, (self.in_features,), p["norm_w"], p["norm_b"], self.norm.eps)
        return self.act(z)

    def _contract(self, x: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The min-max scaled contractions over G of f: f . w and sum_G f, each (..., in).

        f is only contracted over G (with the attention weights w and with ones), and the
        min-max scale is affine, so it is applied to the two contractions instead of to every
        element of f: (f - lo) / span . v = (f . v - lo sum v) / span."""
        w = p["attn_w"][0]  # (G,)
        u = self.range(x).unsqueeze(-1)  # (..., in, 1)
        f = FUNCS[self.func](self.act(u - p["low"]), self.act(p["high"] - u))  # (..., in, G)
        v = torch.stack([w, torch.ones_like(w)], -1)  # (G, 2)
        s = f @ v  # (..., in, 2): f . w and sum_G f
        if self.func_norm != "none":
            lo, span = minmax_range(f, self.func_norm)  # scalars or (..., 1, 1)
            s = (s - lo * v.sum(0)) / span
        return s[..., 0], s[..., 1]

    def _ops(self, x: Tensor, p: dict[str, Tensor]) -> Any | None:
        """The native ops when they apply (fused, CPU float32 / float64, act SiLU or GELU)."""
        if not self.fused:
            return None
        if self._act_id[0] != id(self.act):  # probed once per act module (surgery may swap it)
            self._act_id = (id(self.act), act_code(self.act))
        if self._act_id[1] is None:
            return None
        return ops_for(x, p["weight"], p["low"], p["high"], p["attn_w"], p["attn_b"],
                       p["temperature"], p["norm_w"])  # fmt: skip

    def _params(self, dtype: torch.dtype) -> dict[str, Tensor]:
        """The parameters by name, in ``dtype`` (all but the output weight), read from the
        parameter dicts themselves: ``nn.Module.__getattr__`` costs ~0.4 us a name, ~5 us of
        every call here."""
        own, mods = self._parameters, self._modules
        attn, norm = mods["attn"], mods["norm"]
        assert attn is not None and norm is not None
        pa, pn = attn._parameters, norm._parameters
        p = cast(dict[str, Tensor], {
            "low": own["low"], "high": own["high"], "temperature": own["temperature"],
            "attn_w": pa["weight"], "attn_b": pa["bias"],
            "norm_w": pn["weight"], "norm_b": pn["bias"],
        })  # fmt: skip
        if p["low"].dtype != dtype:
            p = {k: v.to(dtype) for k, v in p.items()}
        p["weight"] = cast(Tensor, own["weight"])
        return p

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, grid={self.grid}, k={self.k}, "
            f"func={self.func!r}, func_norm={self.func_norm!r}"
        )


@register_layer(
    "af_kan",
    kind="mlp",
    formula="W act(LN(sum_G f * softmax(f w / T))), f = minmax((act(u - l) act(h - u))^2)",
    paper="Ta et al. 2025, arXiv 2503.06112",
    aliases=("afkan",),
    reference=af_kan_ref,
)
class AFKAN(KANBlock):
    """AF-KAN block [in, hidden, out] for a model's MLP slot; ``act_layer`` is its act."""

    layer1: AFKANLayer
    layer2: AFKANLayer

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = "silu",
        drop: float = 0.0,
        bias: bool = True,
        act: str | None = None,
        grid: int = 5,
        k: int = 3,
        func: str = "quad1",
        func_norm: str = "batch",
        input_norm: str = "tanh",
        norm: str = "auto",
        fused: bool = True,
        series: bool = True,
    ) -> None:
        kw: dict[str, Any] = dict(
            grid=grid, k=k, func=func, func_norm=func_norm, input_norm=input_norm, norm=norm,
            fused=fused, series=series,
        )  # fmt: skip
        a = act if act is not None else (act_layer if act_layer is not None else "silu")
        super().__init__(
            "af_kan", lambda i, o: AFKANLayer(i, o, act_module(a), **kw),  # an act per layer
            in_features, hidden_features, out_features, drop,
        )  # fmt: skip
        self.layer1.out_t = True  # layer2 reads it (through a Dropout, not in place)
