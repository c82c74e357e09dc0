"""The function-fitting network: one MLP-slot block from d_in inputs to d_out outputs.

    y = block(x)        x: (B, d_in) in [-1, 1]^d_in,  y: (B, d_out)
    block = mlp_layer(in_features=d_in, hidden_features=H, out_features=d_out, act_layer=act)

With the default ``mlp_layer="mlp"`` this is the two-layer perceptron [d_in, H, d_out]
(Linear -> act -> Linear); with ``af_kan``, ``relu_kan`` or ``s_kan`` it is the two-layer
KAN of shape [d_in, H, d_out], the shape of the KAN papers' function-fitting networks.

Equal parameter counts. ``FitConfig.params > 0`` picks H so that the block has about that
many parameters (:func:`match_hidden`: every block here has a parameter count affine in H,
measured on the meta device at H = 1 and 2, then solved and rounded, H >= 1); the model's
``num_params`` says what it got. So ``--set model.params=400`` gives MLP and KANs the same
budget, each with its own width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers import LayerSpec
from actlab.models._act import ActLayer, make_layer

__all__ = ["FitConfig", "FitNet", "block_params", "match_hidden"]

_KINDS = ("mlp",)


@dataclass
class FitConfig:
    in_features: int = 2
    out_features: int = 1
    hidden: int = 32
    params: int = 0  # > 0: choose hidden so the block has about this many parameters

    def __post_init__(self) -> None:
        for key in ("in_features", "out_features", "hidden"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"fit_net: {key} must be >= 1, got {getattr(self, key)}")
        if self.params < 0:
            raise ValueError(f"fit_net: params must be >= 0 (0 = use hidden), got {self.params}")


def _block(spec: LayerSpec, d_in: int, hidden: int, d_out: int, act: ActLayer) -> nn.Module:
    return make_layer(
        spec, "mlp_layer", _KINDS, in_features=d_in, hidden_features=hidden,
        out_features=d_out, act_layer=act, drop=0.0, bias=True,
    )  # fmt: skip


def block_params(
    spec: LayerSpec, in_features: int, hidden: int, out_features: int, act: ActLayer = "silu"
) -> int:
    """Parameters of the block ``spec`` of shape [in, hidden, out] (built on the meta device)."""
    with torch.device("meta"):
        block = _block(spec, in_features, hidden, out_features, act)
    return sum(p.numel() for p in block.parameters())


def match_hidden(
    spec: LayerSpec, in_features: int, out_features: int, params: int, act: ActLayer = "silu"
) -> int:
    """The width H >= 1 whose block [in, H, out] has the parameter count closest to ``params``."""
    if params < 1:
        raise ValueError(f"params must be >= 1, got {params}")
    p1 = block_params(spec, in_features, 1, out_features, act)
    p2 = block_params(spec, in_features, 2, out_features, act)
    slope = p2 - p1
    if slope <= 0:
        raise ValueError(f"the parameter count of {spec!r} does not grow with its width")
    guess = max(1, round((params - p1) / slope) + 1)
    # the count is affine in H; check the neighbours in case rounding picked the wrong side
    best = min(
        range(max(1, guess - 1), guess + 2),
        key=lambda h: abs(p1 + (h - 1) * slope - params),
    )
    return int(best)


class FitNet(nn.Module):
    """One ``mlp_layer`` block [d_in, H, d_out]; ``act_layer`` and ``mlp_layer`` are slots."""

    layer_slots = ("mlp_layer",)

    def __init__(
        self, cfg: FitConfig, act_layer: ActLayer = "silu", *, mlp_layer: LayerSpec | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        spec: Any = mlp_layer if mlp_layer is not None else "mlp"
        hidden = cfg.hidden
        if cfg.params > 0:
            hidden = match_hidden(spec, cfg.in_features, cfg.out_features, cfg.params, act_layer)
        self.hidden = hidden
        self.block = _block(spec, cfg.in_features, hidden, cfg.out_features, act_layer)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.cfg.in_features:
            raise ValueError(
                f"fit_net expects inputs of shape (B, {self.cfg.in_features}), got "
                f"{tuple(x.shape)}; build it with matching in_features"
            )
        return self.block(x)  # (B, d_out)
