"""A multilayer perceptron classifier on flattened inputs (Rumelhart et al. 1986).

    x = flatten(img)                                     (B, C*H*W)
    for each hidden width h:  x = drop(act(Linear(x)))    (B, h)
    logits = Linear(x)                                   (B, num_classes)

One activation instance per hidden layer, built through :func:`actlab.create_activation`.

Layer slots: ``act_layer`` (default relu) and ``norm_layer`` (default ``identity``: no norm
and no module; a norm such as ``layernorm`` goes between each Linear and its activation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from actlab.layers import LayerSpec, get_layer_info
from actlab.models._act import ActLayer, make_act, make_layer

__all__ = ["MLP", "MLPConfig"]


@dataclass
class MLPConfig:
    in_features: int = 784
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"MLP needs at least one hidden width >= 1, got {self.hidden}")


def _is_identity(spec: LayerSpec | None) -> bool:
    if spec is None:
        return True
    if isinstance(spec, str):
        from actlab.registry import parse_spec

        try:
            name, kwargs = parse_spec(spec)
            return not kwargs and get_layer_info(name).name == "identity"
        except ValueError:  # make_layer says what is wrong, worded for layers
            return False
    return False


class MLP(nn.Module):
    """MLP classifier; ``act_layer`` and ``norm_layer`` are the layer slots (see above)."""

    layer_slots = ("norm_layer",)

    def __init__(
        self, cfg: MLPConfig, act_layer: ActLayer = "relu", *, norm_layer: LayerSpec | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        d = cfg.in_features
        no_norm = _is_identity(norm_layer)  # no module: parameter names stay as before
        for h in cfg.hidden:
            layers.append(nn.Linear(d, h))
            if not no_norm:
                assert norm_layer is not None
                layers.append(
                    make_layer(norm_layer, "norm_layer", ("norm", "basic"), num_features=h)
                )
            layers.append(make_act(act_layer))
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, cfg.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        if x.shape[1] != self.cfg.in_features:
            raise ValueError(
                f"MLP expects {self.cfg.in_features} input features, got {x.shape[1]}; "
                "build it with matching in_chans/img_size"
            )
        return self.head(self.body(x))  # (B, num_classes)
