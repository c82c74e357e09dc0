"""CIFAR ResNet-20 (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

    conv3x3(16) -> BN -> act                                        (B, 16, H, W)
    3 stages x n BasicBlocks, widths 16 / 32 / 64, stride 2 at stages 2 and 3
        BasicBlock: act(BN(conv3x3(act(BN(conv3x3(x))))) + shortcut(x))
    global average pool -> linear                                   (B, num_classes)

depth = 6n + 2 (n = 3 gives ResNet-20, 0.27M parameters). Shortcuts are the paper's option A
(identity with stride-2 subsampling and zero-padded channels), so they add no parameters.
Every activation site builds its own instance through :func:`actlab.create_activation`.

Layer slots (timm-style): ``act_layer`` (default relu) and ``norm_layer`` (default
``batchnorm``, every BN above; a norm over channels, dim 1, such as ``identity``). A
normalisation-activation layer (``evonorm_b0``, ``evonorm_s0``: ``includes_act``) replaces
each BN -> act pair, whose act becomes ``nn.Identity``; the BN before the residual add gets
its affine part only (``apply_act=False``, as in the EvoNorm authors' ResNet), and the act
after the add stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers import LayerSpec
from actlab.models._act import ActLayer, make_act, make_layer

__all__ = ["ResNetCifar", "ResNetConfig"]


@dataclass
class ResNetConfig:
    depth: int = 20
    in_chans: int = 3
    num_classes: int = 10
    width: int = 16

    def __post_init__(self) -> None:
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, ...), got {self.depth}"
            )


def _norm(spec: LayerSpec, channels: int, act: bool = True) -> nn.Module:
    layer = make_layer(spec, "norm_layer", ("norm", "basic"), "first", num_features=channels)
    if not act and getattr(layer, "includes_act", False):
        without_act: Any = layer.without_act  # a norm-activation (EvoNorm) before the add
        layer = without_act()
    return layer


def _act(norm: nn.Module, act: ActLayer) -> nn.Module:
    """The activation after ``norm``: none when the norm includes it (EvoNorm)."""
    return nn.Identity() if getattr(norm, "includes_act", False) else make_act(act)


class BasicBlock(nn.Module):
    def __init__(
        self, c_in: int, c_out: int, stride: int, act: ActLayer, norm: LayerSpec = "batchnorm"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.act1 = _act(self.bn1, act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, c_out, act=False)
        self.act2 = make_act(act)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        if self.pad > 0:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))  # (B, C_out, ...)
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet; ``act_layer`` and ``norm_layer`` are the layer slots (see above)."""

    layer_slots = ("norm_layer",)

    def __init__(
        self,
        cfg: ResNetConfig,
        act_layer: ActLayer = "relu",
        *,
        norm_layer: LayerSpec | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        act = act_layer
        norm = norm_layer if norm_layer is not None else "batchnorm"
        n, w = (cfg.depth - 2) // 6, cfg.width
        self.conv = nn.Conv2d(cfg.in_chans, w, 3, 1, 1, bias=False)
        self.bn = _norm(norm, w)
        self.act = _act(self.bn, act)
        blocks: list[nn.Module] = []
        c_in = w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, act, norm))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, img: Tensor) -> Tensor:
        if img.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"ResNet expects {self.cfg.in_chans} input channels, got {img.shape[1]}; "
                "build it with matching in_chans"
            )
        x = self.act(self.bn(self.conv(img)))  # (B, 16, H, W)
        x = self.blocks(x)  # (B, 64, H/4, W/4)
        return self.fc(x.mean(dim=(2, 3)))  # (B, num_classes)
