"""``build_model(name, act, ...)``: the named presets of the reference models.

    build_model("vit_mini_28", "crrelu", num_classes=10, in_chans=1, img_size=28)
    build_model("resnet20", "relu", num_classes=100)
    build_model("gpt_char_mini", "gelu", vocab_size=65, block_size=128)
    build_model("vit_tiny_patch4_32", "gelu", depth=6)      # any config field can be overridden

Image presets receive ``num_classes``, ``in_chans`` and ``img_size``; text presets receive
``vocab_size`` (required) and optionally ``block_size``. Extra keyword arguments override
fields of the preset's config dataclass; unknown names fail listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from actlab._names import did_you_mean
from actlab.models.char_gpt import CharGPT, GPTConfig
from actlab.models.mlp import MLP, MLPConfig
from actlab.models.resnet import ResNetCifar, ResNetConfig
from actlab.models.vit import ViT, ViTConfig
from actlab.registry import ActivationSpec

__all__ = ["ModelPreset", "UnknownModelError", "build_model", "list_models", "get_model_preset"]


class UnknownModelError(KeyError):
    """No model preset has this name."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelPreset:
    """A named model configuration: ``kind`` is "image" or "text"."""

    name: str
    kind: str
    description: str
    config_cls: type
    model_cls: type[nn.Module]
    defaults: dict[str, Any]


_PRESETS: dict[str, ModelPreset] = {}


def _add(name: str, kind: str, description: str, config_cls: type, model_cls: type[nn.Module], **defaults: Any) -> None:
    _PRESETS[name] = ModelPreset(name, kind, description, config_cls, model_cls, defaults)


_add("vit_tiny_patch4_32", "image", "ViT-Tiny, the EAFO authors' CIFAR config (5.4M params)", ViTConfig, ViT,
     patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, drop_path=0.1)
_add("vit_small_28", "image", "ViT patch 4, dim 96, depth 6 (for 28x28; ~0.5M params)", ViTConfig, ViT,
     patch_size=4, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0, drop_path=0.1)
_add("vit_mini_28", "image", "ViT patch 7, dim 64, depth 4 (for 28x28; trains in minutes on 2 cores)",
     ViTConfig, ViT, patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, drop_path=0.0)
_add("vit_micro", "image", "ViT patch 4, dim 32, depth 2 (smoke tests)", ViTConfig, ViT,
     patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, drop_path=0.0)
_add("resnet20", "image", "CIFAR ResNet-20 (He et al. 2016, option A shortcuts, 0.27M params)",
     ResNetConfig, ResNetCifar, depth=20)
_add("resnet8", "image", "CIFAR ResNet-8 (smoke tests)", ResNetConfig, ResNetCifar, depth=8, width=8)
_add("mlp", "image", "MLP 256-256 on flattened pixels", MLPConfig, MLP, hidden=(256, 256))
_add("mlp_small", "image", "MLP 64 on flattened pixels", MLPConfig, MLP, hidden=(64,))
_add("gpt_char_small", "text", "nanoGPT shakespeare-char config: 6 layers, 6 heads, 384 dim",
     GPTConfig, CharGPT, n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2)
_add("gpt_char_mini", "text", "char GPT: 4 layers, 4 heads, 128 dim, context 64 (~0.8M params)",
     GPTConfig, CharGPT, n_layer=4, n_head=4, n_embd=128, block_size=64)
_add("gpt_char_micro", "text", "char GPT: 2 layers, 2 heads, 32 dim, context 32 (smoke tests)",
     GPTConfig, CharGPT, n_layer=2, n_head=2, n_embd=32, block_size=32)


def list_models(kind: str | None = None) -> list[str]:
    """Sorted preset names, optionally only those of ``kind`` ("image" or "text")."""
    return sorted(n for n, p in _PRESETS.items() if kind is None or p.kind == kind)


def get_model_preset(name: str) -> ModelPreset:
    """The preset called ``name``; unknown names fail with the closest matches."""
    key = name.strip().lower().replace("-", "_")
    if key not in _PRESETS:
        hint = did_you_mean(key, _PRESETS, cutoff=0.4)
        raise UnknownModelError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}")
    return _PRESETS[key]


def _config(preset: ModelPreset, values: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(preset.config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TypeError(
            f"model {preset.name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(fields))}"
        )
    return preset.config_cls(**values)


def build_model(
    name: str,
    act: ActivationSpec = "gelu",
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,
    vocab_size: int | None = None,
    block_size: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build preset ``name`` with activation ``act`` in every MLP block / activation site."""
    preset = get_model_preset(name)
    values = dict(preset.defaults)
    if preset.kind == "text":
        if vocab_size is None:
            raise TypeError(f"{preset.name} is a text model: pass vocab_size=")
        values["vocab_size"] = vocab_size
        if block_size is not None:
            values["block_size"] = block_size
    elif preset.config_cls is ViTConfig:
        values.update(num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    elif preset.config_cls is ResNetConfig:
        values.update(num_classes=num_classes, in_chans=in_chans)
    else:
        values.update(num_classes=num_classes, in_features=in_chans * img_size * img_size)
    values.update(overrides)
    builder: Callable[..., nn.Module] = preset.model_cls
    return builder(_config(preset, values), act)
