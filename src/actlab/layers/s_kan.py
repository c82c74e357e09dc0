"""S-KAN: a Kolmogorov-Arnold layer whose nodes select their activation space from a pool.

    u          = input_norm(x)                                      (..., in), in [-1, 1]
    B^p(u_i)   = the G basis functions of space p at u_i            (..., in, P, G)
    alpha_i    = softmax(logits_i / tau)  |  one_hot(chosen_i)      (in, P) mixing weights
    phi(u_i)   = sum_p alpha_ip B^p(u_i)                            (..., in, G)
    layer(x)   = W vec(phi(u)) + b                                  W: (out, in * G)
    block      = layer_2(layer_1(x))                                in -> hidden -> out

Yang et al. 2024, "Selectable Kolmogorov-Arnold Networks" (S-KAN, arXiv 2408.08338): each
node holds a pool of activation spaces combined with learned weights and training runs
full -> selective -> prune, so every node ends with one space. The paper's exact pool, its
selection rule and its seven function-fitting tasks were not retrievable [paper only]; what
follows is this package's construction, stated in full:

Pool (``spaces``, comma-separated; each space has G = grid + k functions on [-1, 1]):

    bspline    order-k B-splines on the uniform knots -1 + (j - k) h, h = 2 / grid (pykan's)
    rbf        exp(-((u - c_j) / w)^2), c_j = linspace(-1, 1, G), w = 2 / (G - 1) (FastKAN)
    chebyshev  T_j(u), j = 0 .. G - 1 (T_0 = 1, T_1 = u, T_j+1 = 2 u T_j - T_j-1)
    relu       the ReLU-KAN basis with peak 1 (:func:`actlab.layers._kan_common.relu_basis`)

The basis coefficients W are shared by the spaces of a node (params: out * in * G + out +
in * P), so a pruned S-KAN layer has the size of a ReLU-KAN layer.

Schedule (counted in backward passes through the layer, i.e. training steps, until the layer
is pruned, when the count stops: nothing depends on it afterwards; the count and the choice
are buffers, so they survive ``state_dict`` round trips):

    full        step <  full_steps               tau = 1: all spaces mix, logits learn
    selective   full_steps <= step < + select    tau falls geometrically 1 -> tau_min, so the
                                                 softmax hardens towards each node's best space
    pruned      afterwards (or ``prune()``)      chosen_i = argmax_p logits_ip; alpha one-hot:
                                                 one space per node, reported by ``selection()``

Input range: the family's contract (``input_norm``; :mod:`actlab.layers._kan_common`).

Speed: on CPU float32 / float64 a layer runs as one native op (``fused=True``, default;
:mod:`actlab.layers._kan_native`): every node's spaces are evaluated in one pass, in the
(in G, N) layout the GEMM reads through its transpose flag (a space whose weight is 0 is
skipped, so a pruned layer evaluates one space per node), and the backward recomputes the
basis with its derivatives in one pass, saving only u. Before pruning the op takes the logits
and applies softmax(logits / tau) over the spaces itself, and its backward advances the
schedule (and prunes on the closing step) in place of the torch path's gradient hook; cubic
B-splines (grid 5, k 3) are evaluated in closed form, and the G Gaussians of rbf from three
exponentials (uniform centres: each is its neighbour times exp(+-2 z) of the middle one and a
constant). ``fused=False``, CUDA and other dtypes run the torch path below (the plain twin the
kernels are tested against).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers._kan_common import (
    InputRange,
    KANBlock,
    check_features,
    check_finite,
    check_grid,
    grid_phases,
    relu_basis,
)
from actlab.layers._kan_native import SPACE_CODES, ops_for
from actlab.layers._kan_ref import s_kan_ref
from actlab.layers._registry import check_flag, register_layer

__all__ = ["SKAN", "SKANLayer", "SPACES", "parse_spaces"]

DEFAULT_SPACES = "bspline,rbf,chebyshev,relu"


def _bspline(u: Tensor, grid: int, k: int) -> Tensor:
    """(..., 1) -> (..., G) order-k B-splines on uniform knots (Cox-de Boor, k steps)."""
    h = 2.0 / grid
    knots = -1.0 + (torch.arange(grid + 2 * k + 1, device=u.device, dtype=u.dtype) - k) * h
    b = ((u >= knots[:-1]) & (u < knots[1:])).to(u.dtype)  # (..., grid + 2k) order 0
    for p in range(1, k + 1):  # k iterations (the order), not a loop over nodes
        left = (u - knots[: -(p + 1)]) / (p * h) * b[..., :-1]
        right = (knots[p + 1 :] - u) / (p * h) * b[..., 1:]
        b = left + right  # (..., grid + 2k - p)
    return b


def _rbf(u: Tensor, grid: int, k: int) -> Tensor:
    n = grid + k
    centres = torch.linspace(-1.0, 1.0, n, device=u.device, dtype=u.dtype)
    width = 2.0 / (n - 1) if n > 1 else 2.0
    return torch.exp(-(((u - centres) / width) ** 2))


def _chebyshev(u: Tensor, grid: int, k: int) -> Tensor:
    n = grid + k
    t = [torch.ones_like(u), u]
    for _ in range(2, n):  # G - 2 iterations of the recurrence
        t.append(2 * u * t[-1] - t[-2])
    return torch.cat(t[:n], dim=-1)


def _relu(u: Tensor, grid: int, k: int) -> Tensor:
    low, high = grid_phases(grid, k)
    return relu_basis(u, low.to(u.device, u.dtype), high.to(u.device, u.dtype))


SPACES: dict[str, Callable[[Tensor, int, int], Tensor]] = {
    "bspline": _bspline,
    "rbf": _rbf,
    "chebyshev": _chebyshev,
    "relu": _relu,
}


def parse_spaces(spaces: str) -> tuple[str, ...]:
    """``"bspline,rbf"`` -> ("bspline", "rbf"); unknown or repeated names fail in one line."""
    names = tuple(s.strip().lower() for s in str(spaces).split(",") if s.strip())
    bad = [s for s in names if s not in SPACES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"s_kan: spaces must be distinct names from {', '.join(SPACES)} separated by "
            f"commas, got {spaces!r}"
        )
    return names


class SKANLayer(nn.Module):
    """One S-KAN layer (..., in) -> (..., out) with its full -> selective -> prune schedule."""

    step: Tensor  # int64 scalar buffer: backward passes seen
    chosen: Tensor  # (in,) int64 buffer: the space of each node, -1 before pruning

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spaces: str = DEFAULT_SPACES,
        grid: int = 5,
        k: int = 3,
        input_norm: str = "tanh",
        full_steps: int = 400,
        select_steps: int = 400,
        tau_min: float = 0.01,
        bias: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        check_grid("s_kan", grid, k)
        check_finite("s_kan", tau_min=tau_min)
        if not 0 < tau_min <= 1:
            raise ValueError(f"s_kan: tau_min must be in (0, 1], got {tau_min}")
        if min(full_steps, select_steps) < 0:
            raise ValueError("s_kan: full_steps and select_steps must be >= 0")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"s_kan: features must be >= 1, got {in_features}, {out_features}")
        self.spaces = parse_spaces(spaces)
        self.fused = check_flag("s_kan", "fused", fused)
        self._codes = [SPACE_CODES[s] for s in self.spaces]
        # fused path: return y as the (N, out) view of the (out, N) GEMM result; set by a block
        # whose next layer reads it (no copy), never where in-place ops may follow
        self.out_t = False
        self.in_features, self.out_features, self.grid, self.k = in_features, out_features, grid, k
        self.full_steps, self.select_steps, self.tau_min = full_steps, select_steps, tau_min
        n = grid + k
        self.logits = nn.Parameter(torch.zeros(in_features, len(self.spaces)))
        self.linear = nn.Linear(in_features * n, out_features, bias=bias)
        self.range = InputRange("s_kan", input_norm)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("chosen", torch.full((in_features,), -1, dtype=torch.int64))
        # after pruning: (space, node indices) groups, rebuilt when ``chosen`` changes (keyed
        # by its storage and version: prune, load_state_dict and the native op's backward all
        # write it in place)
        self._groups: list[tuple[str, Tensor]] | None = None
        self._inverse: Tensor | None = None
        self._groups_key: tuple[int, int] | None = None

    # ------------------------------------------------------------------ schedule
    def _is_pruned(self) -> bool:
        """Whether every node has chosen, remembered per version of the ``chosen`` buffer (an
        in-place change or a new tensor asks again; one check costs ~5 us)."""
        key = (self.chosen.data_ptr(), self.chosen._version, self.chosen.device)
        if getattr(self, "_pruned_key", None) != key:
            self._pruned_key = key
            self._pruned = bool((self.chosen >= 0).all())
        return self._pruned

    def _step_version(self) -> tuple[int, int, torch.device]:
        return (self.step.data_ptr(), self.step._version, self.step.device)

    def _steps(self) -> int:
        """``int(self.step)``, remembered per version of the buffer (``_advance`` keeps it
        current; reading the tensor costs a few us per call, a device sync on CUDA)."""
        key = self._step_version()
        if getattr(self, "_step_key", None) != key:
            self._step_key, self._step_val = key, int(self.step)
        return self._step_val

    @property
    def phase(self) -> str:
        """ "full", "selective" or "pruned"."""
        if self._is_pruned():
            return "pruned"
        return "full" if self._steps() < self.full_steps else "selective"

    def tau(self) -> float:
        """The softmax temperature of the current step (1 while full)."""
        s = self._steps() - self.full_steps
        if s <= 0 or self.select_steps == 0:
            return 1.0
        return float(self.tau_min ** min(s / self.select_steps, 1.0))

    @torch.no_grad()
    def prune(self) -> None:
        """Keep one space per node: the one with the largest logit (idempotent)."""
        if self.phase != "pruned":
            self.chosen.copy_(self.logits.argmax(-1))

    def selection(self) -> list[str]:
        """The space of every node (empty strings before pruning)."""
        return [self.spaces[i] if i >= 0 else "" for i in self.chosen.tolist()]

    def _advance(self, grad: Tensor) -> Tensor:
        n = self._steps() + 1
        self.step.add_(1)
        self._step_key, self._step_val = self._step_version(), n
        if n >= self.full_steps + self.select_steps:
            self.prune()
        return grad

    def alpha(self) -> Tensor:
        """(in, P) mixing weights of the spaces of every node."""
        if self.phase == "pruned":
            return nn.functional.one_hot(self.chosen, len(self.spaces)).to(self.logits.dtype)
        return torch.softmax(self.logits / self.tau(), dim=-1)

    def _kernel_alpha(self) -> Tensor:
        """:meth:`alpha` for the native op; after pruning the one-hot weights are built once per
        ``chosen`` version and dtype (private: never handed out)."""
        if not self._is_pruned():
            return self.alpha()
        key = (self._pruned_key, self.logits.dtype)
        if getattr(self, "_alpha_key", None) != key:
            self._alpha_key = key
            self._alpha = self.alpha()
        return self._alpha

    # ------------------------------------------------------------------ forward
    def basis(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., in, G): every node's basis, mixed over its spaces."""
        u = self.range(x).unsqueeze(-1)  # (..., in, 1)
        if self.phase == "pruned":
            return self._pruned_basis(u)
        alpha = self.alpha()  # (in, P)
        phi = u.new_zeros(())
        for p, s in enumerate(self.spaces):  # P spaces, each for all nodes at once
            phi = phi + SPACES[s](u, self.grid, self.k) * alpha[:, p : p + 1]  # (..., in, G)
        return phi

    def _pruned_basis(self, u: Tensor) -> Tensor:
        """One space per node: each space is evaluated only on the nodes that chose it (the
        groups are rebuilt whenever ``chosen`` changes, also in place, as the native op's
        backward does when it prunes)."""
        key = (self.chosen.data_ptr(), self.chosen._version)
        if self._groups is None or self._groups_key != key:
            self._groups_key = key
            self._groups = [
                (s, (self.chosen == p).nonzero().flatten()) for p, s in enumerate(self.spaces)
            ]
            self._groups = [(s, idx) for s, idx in self._groups if idx.numel()]
            order = torch.cat([idx for _, idx in self._groups])
            self._inverse = torch.argsort(order)  # node i sits at _inverse[i] in the parts
        parts = [
            SPACES[s](u.index_select(-2, idx.to(u.device)), self.grid, self.k)
            for s, idx in self._groups
        ]  # each (..., n_s, G)
        inverse = self._inverse
        assert inverse is not None
        return torch.cat(parts, -2).index_select(-2, inverse.to(u.device))  # (..., in, G)

    def forward(self, x: Tensor) -> Tensor:
        check_features("s_kan", x, self.in_features)
        lin = self.linear
        pruned = self._is_pruned()
        ops = ops_for(x, self.logits, lin.weight, lin.bias) if self.fused else None
        if ops is not None:  # the fused native kernels (CPU float32 / float64)
            tanh = self.range.input_norm == "tanh"
            u = x if tanh else self.range(x)  # "none": the range check, u = x
            clock = None
            if pruned:  # one-hot weights: one space per node
                mix, tau = self._kernel_alpha(), 0.0
            else:  # the kernel takes the logits: softmax(logits / tau) over the spaces inside
                mix, tau = self.logits, self.tau()
                if self.training:  # the op's backward advances the clock (and prunes at the end)
                    clock = self.step
            y = ops.s_kan_layer(
                u, mix, self._codes, self.grid, self.k, lin.weight, lin.bias, tanh, self.out_t,
                tau, clock, self.chosen, self.full_steps + self.select_steps,
            )  # fmt: skip
            return y
        y = self.linear(self.basis(x).flatten(-2))  # (..., out)
        if self.training and y.requires_grad and not pruned:
            # one call per backward pass = one training step; a pruned layer's schedule is
            # over, so its clock stops (the native op does the same in its backward)
            y.register_hook(self._advance)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, spaces={','.join(self.spaces)}, "
            f"grid={self.grid}, k={self.k}, full_steps={self.full_steps}, "
            f"select_steps={self.select_steps}"
        )


@register_layer(
    "s_kan",
    kind="mlp",
    formula="W vec(sum_p alpha_p B^p(u)) + b, alpha = softmax(logits / tau) -> one-hot",
    paper="Yang et al. 2024, arXiv 2408.08338",
    aliases=("skan",),
    reference=s_kan_ref,
)
class SKAN(KANBlock):
    """S-KAN block [in, hidden, out] for a model's MLP slot (``act_layer`` unused)."""

    layer1: SKANLayer
    layer2: SKANLayer

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
        spaces: str = DEFAULT_SPACES,
        grid: int = 5,
        k: int = 3,
        input_norm: str = "tanh",
        full_steps: int = 400,
        select_steps: int = 400,
        tau_min: float = 0.01,
        fused: bool = True,
    ) -> None:
        kw: dict[str, Any] = dict(
            spaces=spaces, grid=grid, k=k, input_norm=input_norm, full_steps=full_steps,
            select_steps=select_steps, tau_min=tau_min, bias=bias, fused=fused,
        )  # fmt: skip
        super().__init__(
            "s_kan", lambda i, o: SKANLayer(i, o, **kw),
            in_features, hidden_features, out_features, drop,
        )  # fmt: skip
        self.layer1.out_t = True  # layer2 reads it (through a Dropout, not in place)

    def prune(self) -> None:
        """Prune both layers now (one space per node)."""
        self.layer1.prune(), self.layer2.prune()

    def selection(self) -> dict[str, dict[str, int]]:
        """Per layer: how many nodes chose each space (after pruning)."""
        return {
            name: dict(Counter(layer.selection()))
            for name, layer in (("layer1", self.layer1), ("layer2", self.layer2))
        }
