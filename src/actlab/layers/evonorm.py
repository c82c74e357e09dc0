"""EvoNorm-B0 and EvoNorm-S0: normalisation and activation in one layer, for conv nets (NCHW).

Liu, Brock, Simonyan & Le 2020, "Evolving Normalization-Activation Layers" (arXiv 2004.02967),
checked against the authors' TensorFlow code (tensorflow/tpu ``resnet_model.evonorm``) and
timm's port. Input x (B, C, H, W); v, γ, β per channel; ε = 1e-5.

    evonorm_b0  y = x / max( sqrt(var_{B,H,W}(x) + ε), v·x + sqrt(var_{H,W}(x) + ε) ) · γ + β
    evonorm_s0  y = x · sigmoid(v·x) / sqrt(var_{H,W,C/G}(x) + ε) · γ + β

Variances are the biased (population) ones of ``tf.nn.moments``. B0's batch variance is per
channel; in eval mode a running variance replaces it (init 1, updated in training as
``running = (1 - momentum)·running + momentum·batch_var``; ``momentum = 0.1`` is the TF code's
decay 0.9; timm stores the unbiased n/(n-1) variance instead, we follow TF). S0 is batch
independent: G groups of C/G channels (G = min(groups, C), default 32; C must be a multiple of
G). Init v = 1, γ = 1, β = 0.

``apply_act=False`` is the layer the authors put where a BatchNorm is *not* followed by a ReLU
(the last norm of a residual branch): v is dropped and ``y = x·γ + β`` (as in the TF code and
timm). The layers carry ``includes_act = True``: a model that builds one at a BN+ReLU site drops
its own ReLU there (ResNet's ``norm_layer`` slot does; ``actlab.surgery.replace_bn_act`` does it
for any model). float16/bfloat16 inputs are computed in float32 and returned in their dtype.
Kernels: on CPU float32/float64 both layers run the native kernels of
:mod:`actlab.layers._norm_native` (one C++ kernel forward, one backward: statistics and output
in two passes over data in cache; saves x and the per-row / per-group moments). Elsewhere
(CUDA, other dtypes, no compiler) B0 uses a custom autograd Function with the same
hand-derived backward in torch ops and S0 plain autograd. ``fused=False`` is the
plain-autograd torch path, the twin they are tested against with float64 references.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers._finite import checked_finite
from actlab.layers._norm_native import ops_for
from actlab.layers._registry import check_flag, register_layer

__all__ = ["EvoNorm2dB0", "EvoNorm2dS0", "evonorm_b0_reference", "evonorm_s0_reference"]


def _var(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Biased variance over ``dims`` (kept), as ``tf.nn.moments``."""
    return x.var(dim=dims, unbiased=False, keepdim=True)


def evonorm_b0_reference(
    x: Tensor, v: Tensor | None, gamma: Tensor, beta: Tensor, var: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """Plain float64 EvoNorm-B0; ``var`` (C,) is the running variance (eval) or None (train)."""
    x = x.double()
    c = (1, -1, 1, 1)
    g, b = gamma.double().view(c), beta.double().view(c)
    if v is None:
        return x * g + b
    batch_var = ((x - x.mean((0, 2, 3), keepdim=True)) ** 2).mean((0, 2, 3), keepdim=True)
    bv = batch_var if var is None else var.double().view(c)
    inst = ((x - x.mean((2, 3), keepdim=True)) ** 2).mean((2, 3), keepdim=True)
    den = torch.maximum(torch.sqrt(bv + eps), v.double().view(c) * x + torch.sqrt(inst + eps))
    return x / den * g + b


def evonorm_s0_reference(
    x: Tensor, v: Tensor | None, gamma: Tensor, beta: Tensor, groups: int, eps: float = 1e-5
) -> Tensor:
    """Plain float64 EvoNorm-S0 with ``groups`` groups (one loop per group)."""
    x = x.double()
    c = (1, -1, 1, 1)
    g, b = gamma.double().view(c), beta.double().view(c)
    if v is None:
        return x * g + b
    per = x.shape[1] // groups
    stds = []
    for k in range(groups):
        xg = x[:, k * per : (k + 1) * per]  # (B, C/G, H, W)
        var = ((xg - xg.mean((1, 2, 3), keepdim=True)) ** 2).mean((1, 2, 3), keepdim=True)
        stds.append(torch.sqrt(var + eps).expand(-1, per, 1, 1))
    std = torch.cat(stds, dim=1)  # (B, C, 1, 1)
    return x * torch.sigmoid(v.double().view(c) * x) / std * g + b


class _B0Fn(torch.autograd.Function):
    """EvoNorm-B0 on x (B, C, n) with a hand-derived backward; saves x and per-row moments.

    Forward: μ, σ² per (b, c) over n; V = mean_b σ² + var_b μ (the batch variance, or the
    running one in eval: ``var`` given); L = sqrt(V + ε), s = sqrt(σ² + ε), R = v·x + s,
    D = max(R, L), y = x/D·γ + β. Backward with h = g·γ, a = h/D, ∂D = -a·x/D, m = [R > L]:
        ∂x = a + v·m·∂D + (2/n)·∂σ²·(x - μ) + (2/(B·n))·∂V·(x - μ_c)
        ∂σ² = Σ_n m·∂D / (2s),  ∂V = Σ_{b,n} (1 - m)·∂D / (2L)   (0 in eval)
        ∂v = Σ m·∂D·x,  ∂γ = Σ g·x/D,  ∂β = Σ g
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, v: Tensor, w: Tensor, b: Tensor, var: Tensor | None, eps: float
    ) -> tuple[Tensor, Tensor]:
        ivar, imean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)  # (B, C, 1)
        batch = var is None
        if var is None:
            var = ivar.mean(0) + imean.var(0, unbiased=False)  # (C, 1) total variance
        left = torch.sqrt(var + eps)  # (C, 1)
        s = torch.sqrt(ivar + eps)  # (B, C, 1)
        den = torch.addcmul(s, v, x).clamp_min_(left)  # (B, C, n)
        y = torch.addcmul(b, x / den, w)
        ctx.save_for_backward(x, v, w, imean, s, left)
        ctx.batch = batch
        ctx.mark_non_differentiable(var)
        return y, var

    @staticmethod
    def backward(ctx: Any, g: Tensor, _gvar: Tensor | None) -> tuple[Tensor | None, ...]:
        x, v, w, imean, s, left = ctx.saved_tensors
        B, _, n = x.shape
        right = torch.addcmul(s, v, x)
        m = right > left  # (B, C, n): where the instance term is the larger one
        inv = right.clamp_min_(left).reciprocal_()  # 1/D
        q = x * inv  # x/D
        gw = (g * q).sum((0, 2)).unsqueeze(-1)  # (C, 1)
        gb = g.sum((0, 2)).unsqueeze(-1)
        a = g * w * inv  # the direct term
        dden = -a * q  # ∂L/∂D
        dright = dden * m
        gv = (dright * x).sum((0, 2)).unsqueeze(-1)
        ds = dright.sum(-1, keepdim=True)  # (B, C, 1)
        coef = ds / s / n  # (2/n)·∂σ² with ∂σ² = ∂s / (2s)
        shift = coef * imean
        if ctx.batch:
            dleft = (dden.sum((0, 2)) - dright.sum((0, 2))).unsqueeze(-1)  # (C, 1)
            cv = dleft / left / (B * n)  # (2/(B n))·∂V with ∂V = ∂L / (2L)
            coef = coef + cv
            shift = shift + cv * imean.mean(0)
        gx = torch.addcmul(a, v, dright).addcmul_(x, coef).sub_(shift)
        return gx, gv, gw, gb, None, None


def _check_args(name: str, num_features: int, eps: float) -> None:
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name}: eps must be a finite number > 0, got {eps!r}")


class _EvoNorm(nn.Module):
    """Shared parts: parameters, input checks, the half-precision upcast (``forward``; each
    layer's own math is its ``_normalise``)."""

    includes_act = True  # the layer is its site's activation too (see the module docstring)
    # each layer's math with its act (``v``) on a float32 / float64 input (B, C, H, W)
    _normalise: Callable[[Tensor, Tensor], Tensor]
    name = "evonorm"
    v: nn.Parameter | None

    def __init__(self, num_features: int, eps: float, apply_act: bool) -> None:
        super().__init__()
        _check_args(self.name, num_features, eps)
        apply_act = check_flag(self.name, "apply_act", apply_act)
        self.num_features, self.eps, self.apply_act = num_features, float(eps), apply_act
        self.weight = nn.Parameter(torch.ones(num_features))  # γ
        self.bias = nn.Parameter(torch.zeros(num_features))  # β
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def without_act(self) -> _EvoNorm:
        """This layer with ``apply_act=False`` (v dropped: ``y = x·γ + β``), in place."""
        self.v = None
        self.apply_act = False
        return self

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"{self.name} expects (B, C, H, W) input, got {x.ndim}-D shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self.name} was built for {self.num_features} channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); build it with num_features={x.shape[1]}"
            )
        if not checked_finite(self, list(self.parameters())):  # one native call on the CPU
            raise ValueError(
                f"{self.name}: non-finite parameters (v/weight/bias); reload finite weights"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        y = self._affine(x) if self.v is None else self._normalise(x, self.v)
        return y.to(dtype)

    def _affine(self, y: Tensor) -> Tensor:
        return y * self.weight.to(y.dtype).view(1, -1, 1, 1) + self.bias.to(y.dtype).view(
            1, -1, 1, 1
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, apply_act={self.apply_act}"


def _b0_ref(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return evonorm_b0_reference(
        x, m.v, m.weight, m.bias, None if m.training else m.running_var, m.eps
    )


@register_layer(
    "evonorm_b0",
    kind="norm",
    layout="first",
    formula="x / max(sqrt(var_BHW(x) + eps), v*x + sqrt(var_HW(x) + eps)) * g + b",
    paper="Liu et al. 2020, Evolving Normalization-Activation Layers, arXiv 2004.02967",
    reference=_b0_ref,
)
class EvoNorm2dB0(_EvoNorm):
    """EvoNorm-B0 (batch variance; running variance at eval)."""

    name = "evonorm_b0"
    running_var: Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        apply_act: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__(num_features, eps, apply_act)
        # native kernel, else the lean Function; False: plain autograd
        self.fused = check_flag(self.name, "fused", fused)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"evonorm_b0: momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("running_var", torch.ones(num_features))

    @torch.no_grad()
    def _update_running(self, var: Tensor) -> None:
        """running_var <- (1 - momentum) running_var + momentum var (var: (C, 1))."""
        new = var.detach().view(-1).to(self.running_var.dtype)
        self.running_var.mul_(1 - self.momentum).add_(self.momentum * new)

    def _normalise(self, x: Tensor, v: Tensor) -> Tensor:
        B, C, H, W = x.shape
        xv = x.reshape(B, C, H * W)  # (B, C, HW): contiguous reductions over space
        ops = ops_for(x) if self.fused else None  # the native kernels (CPU float32/float64)
        if ops is not None:
            run = None if self.training else self.running_var.to(x.dtype)
            v, w, b = (p.to(x.dtype) for p in (v, self.weight, self.bias))  # (C,)
            y, var = ops.evonorm_b0(xv, v, w, b, run, self.eps)  # (B, C, HW), (C,)
            if self.training:
                self._update_running(var)
            return y.view(B, C, H, W)  # type: ignore[no-any-return]
        w, b = self.weight.to(x.dtype).view(C, 1), self.bias.to(x.dtype).view(C, 1)
        v = v.to(x.dtype).view(C, 1)
        if self.fused and not torch.compiler.is_compiling():
            run = None if self.training else self.running_var.to(x.dtype).view(C, 1)
            y, var = _B0Fn.apply(xv, v, w, b, run, self.eps)
            if self.training:
                self._update_running(var)
            return y.view(B, C, H, W)
        ivar, imean = torch.var_mean(xv, dim=-1, unbiased=False, keepdim=True)  # (B, C, 1)
        if self.training:
            # law of total variance: the batch variance per channel from instance moments
            var = ivar.mean(0) + imean.var(0, unbiased=False)  # (C, 1)
            self._update_running(var)
        else:
            var = self.running_var.to(x.dtype).view(C, 1)
        left = torch.sqrt(var + self.eps)  # (C, 1)
        right = torch.addcmul(torch.sqrt(ivar + self.eps), v, xv)  # (B, C, HW)
        y = xv / right.clamp_min(left)  # max(right, left); cheaper backward than maximum
        return torch.addcmul(b, y, w).view(B, C, H, W)


def _s0_ref(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return evonorm_s0_reference(x, m.v, m.weight, m.bias, m.groups, m.eps)


@register_layer(
    "evonorm_s0",
    kind="norm",
    layout="first",
    formula="x * sigmoid(v*x) / sqrt(var_{HW,C/G}(x) + eps) * g + b",
    paper="Liu et al. 2020, Evolving Normalization-Activation Layers, arXiv 2004.02967",
    reference=_s0_ref,
)
class EvoNorm2dS0(_EvoNorm):
    """EvoNorm-S0 (group standard deviation, batch independent)."""

    name = "evonorm_s0"

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        eps: float = 1e-5,
        apply_act: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__(num_features, eps, apply_act)
        # the native kernel where it applies; False: plain autograd
        self.fused = check_flag(self.name, "fused", fused)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"evonorm_s0: groups must be a positive int, got {groups!r}")
        g = min(groups, num_features)
        if num_features % g:
            raise ValueError(
                f"evonorm_s0: {num_features} channels do not split into {g} groups; "
                f"choose groups dividing {num_features}"
            )
        self.groups = g

    def _normalise(self, x: Tensor, v: Tensor) -> Tensor:
        B, C, H, W = x.shape
        G = self.groups
        ops = ops_for(x) if self.fused else None  # the native kernel (CPU float32/float64)
        if ops is not None:
            v, w, b = (p.to(x.dtype) for p in (v, self.weight, self.bias))
            y = ops.evonorm_s0(x.reshape(B, C, H * W), v, w, b, G, self.eps)  # (B, C, HW)
            return y.view(B, C, H, W)  # type: ignore[no-any-return]
        var = x.reshape(B, G, -1).var(-1, unbiased=False, keepdim=True)  # (B, G, 1)
        inv = torch.rsqrt(var + self.eps).repeat_interleave(C // G, dim=1)  # (B, C, 1)
        xv = x.reshape(B, C, H * W)  # (B, C, HW)
        v = v.to(x.dtype).view(C, 1)
        w, b = self.weight.to(x.dtype).view(C, 1), self.bias.to(x.dtype).view(C, 1)
        y = xv * torch.sigmoid(xv * v)
        return torch.addcmul(b, y, inv * w).view(B, C, H, W)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", groups={self.groups}"
            + ("" if self.fused else ", fused=False")
        )
