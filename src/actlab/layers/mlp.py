"""Transformer MLP blocks: the plain two-layer MLP and the gated linear unit (GLU) family.

    mlp   y = drop(fc2(drop(act(fc1(x)))))                       fc1: D -> H, fc2: H -> D_out
          Vaswani et al. 2017, "Attention Is All You Need" (position-wise FFN); the ViT MLP
    glu   y = drop(fc2(drop(act(fc1_g(x)) * fc1_x(x))))          fc1_g, fc1_x: D -> H
          Shazeer 2020, "GLU Variants Improve Transformer" (arXiv 2002.05202): SwiGLU with
          act = SiLU, GeGLU with GELU; Dauphin et al. 2017 for the GLU

Slot arguments (passed by the model): ``in_features``, ``hidden_features`` (default 4x in),
``out_features`` (default in), ``act_layer`` (the model's activation: a spec, class, instance
or factory; one instance per block), ``drop``, ``bias``. The parameter ``act`` (a spec) fixes
the block's activation whatever the model passes, e.g. ``glu(act='silu')``. A GLU with the
same ``hidden_features`` has 1.5x the parameters of an MLP; for equal size set the model's
``mlp_ratio`` to 2/3 of the MLP's.

With ``in_features`` left out the input projections are ``nn.LazyLinear`` (sized from the
first input); then ``hidden_features`` and ``out_features`` must be given.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from actlab.layers._registry import act_module, register_layer

__all__ = ["GluMlp", "Mlp"]


def _sizes(
    in_features: int | None, hidden: int | None, out: int | None, what: str
) -> tuple[int, int]:
    if in_features is None:
        if hidden is None or out is None:
            raise ValueError(
                f"{what}: give hidden_features and out_features when in_features is inferred "
                "from the input"
            )
        return hidden, out
    return hidden or 4 * in_features, out or in_features


def _linear(in_features: int | None, out: int, bias: bool) -> nn.Module:
    if in_features is None:
        return nn.LazyLinear(out, bias=bias)
    return nn.Linear(in_features, out, bias=bias)


@register_layer(
    "mlp",
    kind="mlp",
    lazy=("in_features",),
    aliases=("ffn",),
    formula="fc2(act(fc1(x)))",
    paper="Vaswani et al. 2017, arXiv 1706.03762",
)
class Mlp(nn.Module):
    """fc1 -> act -> dropout -> fc2 -> dropout; the activation is built once per block."""

    def __init__(
        self,
        in_features: int | None = None,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = "gelu",
        drop: float = 0.0,
        bias: bool = True,
        act: str | None = None,
    ) -> None:
        super().__init__()
        hidden, out = _sizes(in_features, hidden_features, out_features, "mlp")
        self.fc1 = _linear(in_features, hidden, bias)
        self.act = act_module(act if act is not None else act_layer)
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


@register_layer(
    "glu",
    kind="mlp",
    lazy=("in_features",),
    aliases=("swiglu_mlp", "gated_mlp"),
    formula="fc2(act(fc1_g(x)) * fc1_x(x))",
    paper="Shazeer 2020, arXiv 2002.05202",
)
class GluMlp(nn.Module):
    """Gated MLP: the activated gate multiplies a linear value, then the output projection."""

    def __init__(
        self,
        in_features: int | None = None,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = "silu",
        drop: float = 0.0,
        bias: bool = True,
        act: str | None = None,
    ) -> None:
        super().__init__()
        hidden, out = _sizes(in_features, hidden_features, out_features, "glu")
        self.fc1_g = _linear(in_features, hidden, bias)
        self.fc1_x = _linear(in_features, hidden, bias)
        self.act = act_module(act if act is not None else act_layer)
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc1_g(x)) * self.fc1_x(x)  # (..., H)
        return self.drop(self.fc2(self.drop(h)))
