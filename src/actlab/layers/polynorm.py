"""PolyNorm (PolyCom): a polynomial activation with each power RMS-normalised over the features.

Zhuo et al. 2024, "Polynomial Composition Activations: Unleashing the Dynamics of Large
Language Models" (arXiv 2411.03884), checked against the authors' code:

    polynorm(x) = a3·N(x³) + a2·N(x²) + a1·N(x) + a0
    N(z)        = z / sqrt(mean(z², last axis) + eps)          eps = 1e-6, no gain

The coefficients are learnable scalars per layer, init a1 = a2 = a3 = 1/3, a0 = 0, stored as
the authors store them: ``weight = [a3, a2, a1]`` and ``bias = [a0]`` (so their checkpoints
load). PolyNorm is NOT elementwise: each output depends on the whole feature vector (the last
axis), so it is a layer of kind ``act`` here, not a zoo activation. It fits every activation
slot of a transformer MLP:

    create_layer("mlp(act='polynorm')", in_features=64, hidden_features=256)
    actlab compare gelu --task fashion-mnist --set model.mlp_layer="mlp(act='polynorm')"
    ViT(cfg, act_layer="polynorm")            # act_module resolves layers of kind "act"

``polynorm_mlp(width=1.5)`` is the paper's fair-comparison rule: a non-gated FFN (fc1 ->
PolyNorm -> fc2) widened x1.5 has the parameters of a gated MLP (SwiGLU: three D x H
matrices) with the same ``hidden_features``; ``width=1.0`` equals ``mlp(act='polynorm')``.

Kernels: on CPU float32/float64 the default path is the native kernel of
:mod:`actlab.layers._norm_native` (one C++ pass for the three row statistics and one for the
output, the backward likewise; saves x and three scalars per row). Elsewhere (CUDA, other
dtypes, no compiler) it is a custom autograd Function with the same hand-derived backward in
torch ops (Horner form; ~8 large kernels forward instead of ~20). ``fused=False`` (and any
outer ``torch.compile``) uses plain autograd through the formula, the twin both are tested
against together with a float64 reference.

Numerics: float16/bfloat16 inputs are computed in float32 (x³ overflows float16 from |x| > 40)
and returned in the input dtype. A non-finite coefficient is refused at forward with one line
(on the CPU at every forward; on a device at the first and every 50th, so that no forward
waits for it: :mod:`actlab.layers._finite`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers._finite import checked_finite
from actlab.layers._norm_native import ops_for
from actlab.layers._registry import check_flag, register_layer

__all__ = ["PolyNorm", "PolyNormMlp", "polynorm_reference"]

EPS = 1e-6  # the authors' eps


def polynorm_reference(x: Tensor, weight: Tensor, bias: Tensor, eps: float = EPS) -> Tensor:
    """Plain float64 PolyNorm (the twin the layer is tested against)."""
    x = x.double()

    def n(z: Tensor) -> Tensor:
        return z / torch.sqrt((z * z).mean(-1, keepdim=True) + eps)

    w, b = weight.double(), bias.double()
    return w[0] * n(x * x * x) + w[1] * n(x * x) + w[2] * n(x) + b[0]


def _reference(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return polynorm_reference(x, m.weight, m.bias, m.eps)


class _PolyNormFn(torch.autograd.Function):
    """PolyNorm with a hand-derived backward that saves only x and three scalars per row.

    With p_k = x^k, r_k = (mean(p_k²) + eps)^(-1/2), A_k = a_k·r_k (per row):
        y = x·(A1 + x·(A2 + x·A3)) + a0                                (Horner)
    and, with S_k = Σ_i g_i·p_k,i and B_k = a_k·r_k³·S_k / D:
        ∂L/∂x  = g·(A1 + x·(2A2 + 3A3·x)) - x·(B1 + x²·(2B2 + 3B3·x²))
        ∂L/∂a_k = Σ_rows r_k·S_k,   ∂L/∂a0 = Σ g
    (RMS normalisation's backward, dn/dp = r·(I - p pᵀ r² / D), chained through p_k = x^k).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        d = x.shape[-1]
        x2 = x * x
        x3 = x2 * x
        r = torch.cat(
            [
                torch.linalg.vector_norm(p, dim=-1, keepdim=True).square_().div_(d)
                for p in (x, x2, x3)
            ],
            dim=-1,
        )  # (..., 3) mean of p_k²
        r = r.add_(eps).rsqrt_()  # (..., 3): r1, r2, r3
        a = r * weight.flip(0)  # (..., 3): A1, A2, A3 (weight is [a3, a2, a1])
        y = torch.addcmul(a[..., 1:2], x, a[..., 2:3])
        y = torch.addcmul(a[..., 0:1], x, y)
        y = torch.addcmul(bias, x, y)
        ctx.save_for_backward(x, weight, r)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, r = ctx.saved_tensors
        d = x.shape[-1]
        x2 = x * x
        s = torch.stack(
            [torch.linalg.vecdot(g, p, dim=-1) for p in (x, x2, x2 * x)], dim=-1
        )  # (..., 3): S1, S2, S3
        w = weight.flip(0)  # a1, a2, a3
        a = r * w  # A_k
        b = a * r * r * s / d  # B_k
        gx = g * torch.addcmul(a[..., 0:1], x, torch.addcmul(2 * a[..., 1:2], x, 3 * a[..., 2:3]))
        inner = torch.addcmul(2 * b[..., 1:2], x2, 3 * b[..., 2:3])
        gx = gx.addcmul_(x, torch.addcmul(b[..., 0:1], x2, inner), value=-1.0)
        gw = (r * s).reshape(-1, 3).sum(0).flip(0)  # [a3, a2, a1]
        gb = g.sum().reshape(1)
        return gx, gw, gb, None


def _check_eps(eps: float) -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"polynorm: eps must be a finite number > 0, got {eps!r}")
    return float(eps)


@register_layer(
    "polynorm",
    kind="act",
    aliases=("poly_norm",),
    formula="a3*N(x^3) + a2*N(x^2) + a1*N(x) + a0, N(z) = z / sqrt(mean(z^2, last) + 1e-6)",
    paper="Zhuo et al. 2024, Polynomial Composition Activations (PolyCom), arXiv 2411.03884",
    reference=_reference,
)
class PolyNorm(nn.Module):
    """PolyNorm over the last axis; ``weight = [a3, a2, a1]``, ``bias = [a0]`` (learnable)."""

    def __init__(self, eps: float = EPS, fused: bool = True, inplace: bool = False) -> None:
        super().__init__()
        self.eps = _check_eps(eps)
        # native kernel, else the lean Function; False: plain autograd
        self.fused = check_flag("polynorm", "fused", fused)
        self.weight = nn.Parameter(torch.full((3,), 1.0 / 3.0))
        self.bias = nn.Parameter(torch.zeros(1))
        self.inplace = bool(inplace)  # accepted like every activation's; never applied

    def _norm(self, z: Tensor) -> Tensor:
        return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(
                f"polynorm normalises over the last axis and needs at least one feature there, "
                f"got shape {tuple(x.shape)}"
            )
        if not checked_finite(self, [self.weight, self.bias]):  # one native call on the CPU
            raise ValueError(
                "polynorm: non-finite coefficients (weight/bias); reload finite weights or "
                "lower the learning rate"
            )
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if self.fused and not torch.compiler.is_compiling():
            ops = ops_for(x)  # the native kernels (CPU float32/float64), else None
            if ops is not None:
                return ops.polynorm(x, w, b, self.eps).to(dtype)  # type: ignore[no-any-return]
            return _PolyNormFn.apply(x, w, b, self.eps).to(dtype)
        x2 = x * x
        y = w[0] * self._norm(x2 * x) + w[1] * self._norm(x2) + w[2] * self._norm(x) + b
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}" + ("" if self.fused else ", fused=False")


def _mlp_reference(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    x = x.double()
    h = x @ m.fc1.weight.double().T + m.fc1.bias.double()
    h = polynorm_reference(h, m.act.weight, m.act.bias, m.act.eps)
    return h @ m.fc2.weight.double().T + m.fc2.bias.double()


@register_layer(
    "polynorm_mlp",
    kind="mlp",
    lazy=("in_features",),
    formula="fc2(polynorm(fc1(x))), hidden = width * hidden_features",
    paper="Zhuo et al. 2024, arXiv 2411.03884 (x1.5 width vs gated FFNs)",
    reference=_mlp_reference,
)
class PolyNormMlp(nn.Module):
    """fc1 -> PolyNorm -> dropout -> fc2 -> dropout, hidden width ``width * hidden_features``.

    ``act_layer`` (the model's activation) is ignored: PolyNorm is this block's activation.
    ``width=1.5`` matches a gated MLP (``glu``) of the same ``hidden_features`` in parameters.
    """

    def __init__(
        self,
        in_features: int | None = None,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
        width: float = 1.0,
        eps: float = EPS,
    ) -> None:
        super().__init__()
        if not (math.isfinite(width) and 0 < width <= 64):
            raise ValueError(f"polynorm_mlp: width must be in (0, 64], got {width!r}")
        if in_features is None and (hidden_features is None or out_features is None):
            raise ValueError(
                "polynorm_mlp: give hidden_features and out_features when in_features is "
                "inferred from the input"
            )
        base = hidden_features or 4 * int(in_features or 0)
        hidden = max(1, round(width * base))
        out = out_features or int(in_features or 0)
        self.fc1: nn.Module = (
            nn.LazyLinear(hidden, bias=bias)
            if in_features is None
            else nn.Linear(in_features, hidden, bias=bias)
        )
        self.act = PolyNorm(eps)
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        d = int(getattr(self.fc1, "in_features", 0))  # 0 while lazily unsized
        if x.ndim < 1 or (d and x.shape[-1] != d):
            raise ValueError(
                f"polynorm_mlp was built for {d} input features (last axis), got shape "
                f"{tuple(x.shape)}"
            )
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
