"""A multilayer perceptron classifier on flattened inputs (Rumelhart et al. 1986).

    x = flatten(img)                                     (B, C*H*W)
    for each hidden width h:  x = drop(act(Linear(x)))    (B, h)
    logits = Linear(x)                                   (B, num_classes)

One activation instance per hidden layer, built through :func:`actlab.create_activation`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from actlab.models._act import make_act
from actlab.registry import ActivationSpec

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


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, act: ActivationSpec = "relu") -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        d = cfg.in_features
        for h in cfg.hidden:
            layers += [nn.Linear(d, h), make_act(act)]
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
