"""``build_model(name, act, ...)``: the named presets of the reference models.

    build_model("vit_mini_28", "crrelu", num_classes=10, in_chans=1, img_size=28)
    build_model("resnet20", "relu", num_classes=100)
    build_model("gpt_char_mini", "gelu", vocab_size=65, block_size=128)
    build_model("vit_tiny_patch4_32", "gelu", depth=6)      # any config field can be overridden

    build_model("vit_micro", "gelu", norm_layer="rmsnorm", mlp_layer="glu")  # layer slots

Image presets receive ``num_classes``, ``in_chans`` and ``img_size``; text presets receive
``vocab_size`` (required) and optionally ``block_size``. Extra keyword arguments override
fields of the preset's config dataclass or fill its layer slots; unknown names fail listing
the valid ones. The presets are one :class:`~actlab.registry.Registry` (``MODELS``); a new one
is one :func:`register_model` call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from actlab.layers import LayerSpecError, canonical_layer_spec
from actlab.models._act import check_slot_spec
from actlab.models.char_gpt import CharGPT, GPTConfig
from actlab.models.fit import FitConfig, FitNet
from actlab.models.mlp import MLP, MLPConfig
from actlab.models.resnet import ResNetCifar, ResNetConfig
from actlab.models.vit import ViT, ViTConfig
from actlab.registry import ActivationSpec, Registry, RegistryError

__all__ = [
    "MODELS",
    "ModelPreset",
    "UnknownModelError",
    "build_model",
    "check_model_overrides",
    "get_model_preset",
    "list_models",
    "model_override_keys",
    "register_model",
]


class UnknownModelError(RegistryError):
    """No model preset has this name (a KeyError and a ValueError)."""


@dataclass(frozen=True)
class ModelPreset:
    """A named model configuration: ``kind`` is "image" or "text"."""

    name: str
    kind: str
    description: str
    config_cls: type
    model_cls: type[nn.Module]
    defaults: dict[str, Any]

    @property
    def slots(self) -> tuple[str, ...]:
        """The model's layer slots besides the activation (``norm_layer``, ...)."""
        return tuple(getattr(self.model_cls, "layer_slots", ()))


MODELS: Registry[ModelPreset] = Registry("model", error=UnknownModelError, cutoff=0.4)


def register_model(
    name: str,
    kind: str,
    description: str,
    config_cls: type,
    model_cls: type[nn.Module],
    **defaults: Any,
) -> ModelPreset:
    """Register the preset ``name``: ``model_cls(config_cls(**defaults, ...), act, **slots)``."""
    preset = ModelPreset(name, kind, description, config_cls, model_cls, defaults)
    return MODELS.add(name, preset, kind=kind)


# fmt: off
register_model("vit_tiny_patch4_32", "image",
               "ViT-Tiny, the EAFO authors' CIFAR config (5.4M params)",
               ViTConfig, ViT, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
               drop_path=0.1)
register_model("vit_small_28", "image", "ViT patch 4, dim 96, depth 6 (for 28x28; ~0.5M params)",
               ViTConfig, ViT, patch_size=4, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0,
               drop_path=0.1)
register_model("vit_mini_28", "image",
               "ViT patch 7, dim 64, depth 4 (for 28x28; trains in minutes on 2 cores)",
               ViTConfig, ViT, patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
               drop_path=0.0)
register_model("vit_micro", "image", "ViT patch 4, dim 32, depth 2 (smoke tests)", ViTConfig, ViT,
               patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, drop_path=0.0)
register_model("resnet20", "image",
               "CIFAR ResNet-20 (He et al. 2016, option A shortcuts, 0.27M params)",
               ResNetConfig, ResNetCifar, depth=20)
register_model("resnet8", "image", "CIFAR ResNet-8 (smoke tests)", ResNetConfig, ResNetCifar,
               depth=8, width=8)
register_model("mlp", "image", "MLP 256-256 on flattened pixels", MLPConfig, MLP, hidden=(256, 256))
register_model("mlp_small", "image", "MLP 64 on flattened pixels", MLPConfig, MLP, hidden=(64,))
register_model("fit_net", "regression",
               "one MLP-slot block [d_in, 32, d_out] for function fitting (mlp or a KAN block)",
               FitConfig, FitNet, hidden=32)
register_model("gpt_char_small", "text",
               "nanoGPT shakespeare-char config: 6 layers, 6 heads, 384 dim",
               GPTConfig, CharGPT, n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2)
register_model("gpt_char_mini", "text",
               "char GPT: 4 layers, 4 heads, 128 dim, context 64 (~0.8M params)",
               GPTConfig, CharGPT, n_layer=4, n_head=4, n_embd=128, block_size=64)
register_model("gpt_char_micro", "text",
               "char GPT: 2 layers, 2 heads, 32 dim, context 32 (smoke tests)",
               GPTConfig, CharGPT, n_layer=2, n_head=2, n_embd=32, block_size=32)
# fmt: on


def list_models(kind: str | None = None) -> list[str]:
    """Sorted preset names, optionally only those of ``kind`` ("image" or "text")."""
    return MODELS.names(**({} if kind is None else {"kind": kind}))


def get_model_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (``-`` reads as ``_``); unknown names get close matches."""
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    return MODELS.get(key)


# fields a task sets from its data: not overridable through model_kwargs / --set
_DATA_FIELDS = (
    "num_classes", "in_chans", "img_size", "in_features", "out_features", "vocab_size"
)  # fmt: skip
_SLOT_KINDS: dict[str, tuple[str, ...]] = {
    "norm_layer": ("norm", "basic"),
    "mlp_layer": ("mlp", "basic"),
    "attn_score": ("attn_score",),
}


def model_override_keys(name: str) -> list[str]:
    """The keys ``check_model_overrides`` accepts for preset ``name`` (slots, config fields)."""
    preset = get_model_preset(name)
    fields = [f.name for f in dataclasses.fields(preset.config_cls) if f.name not in _DATA_FIELDS]
    return sorted({*fields, *preset.slots})


def _field_value(preset: ModelPreset, key: str, value: Any) -> Any:
    default = preset.defaults.get(key, getattr(preset.config_cls(), key, None))
    where = f"model.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
        if isinstance(default, int):
            if value != int(value):
                raise ValueError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
    elif isinstance(default, tuple):
        if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{where} must be a tuple of whole numbers, got {value!r}")
        value = list(value)  # JSON-stable (a run's config is stored as JSON)
    return value


def check_model_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Validated, canonical keyword overrides of preset ``name`` (for a run's config and key).

    Keys are the preset's layer slots (``norm_layer``, ``mlp_layer``, ``attn_score``) and its
    config fields (``depth``, ``mlp_ratio``, ...) except those the task sets from its data.
    Slot values are layer spec strings, written canonically (:func:`canonical_layer_spec`)
    after a check that the layer fits the slot; field values are checked against the type of
    the field's default. Unknown keys and bad values raise ``ValueError`` with one line.
    """
    preset = get_model_preset(name)
    valid = model_override_keys(preset.name)
    out: dict[str, Any] = {}
    for key in sorted(overrides):
        value = overrides[key]
        if key in ("act", "act_layer"):
            raise ValueError(
                f"model.{key}: the activation is what compare compares; list it as an ACT argument"
            )
        if key not in valid:
            raise ValueError(
                f"model {preset.name!r} has no option model.{key}; valid keys: "
                + ", ".join(f"model.{k}" for k in valid)
            )
        if key in preset.slots:
            if not isinstance(value, str):
                raise ValueError(f"model.{key} must be a layer spec string, got {value!r}")
            layout = "first" if preset.config_cls is ResNetConfig else "last"
            try:
                check_slot_spec(value, key, _SLOT_KINDS[key], layout)
                out[key] = canonical_layer_spec(value)
            except LayerSpecError as e:
                raise ValueError(f"model.{key}={value}: {e}") from None
        else:
            out[key] = _field_value(preset, key, value)
    _dry_build(preset, out)
    return out


def _stand_in(preset: ModelPreset, values: dict[str, Any]) -> dict[str, Any]:
    """Small data fields (the task sets the real ones) that fit the preset's config."""
    names = {f.name for f in dataclasses.fields(preset.config_cls)}
    data = {"num_classes": 2, "in_chans": 1, "in_features": 4, "vocab_size": 8}
    if "img_size" in names:
        patch = values.get("patch_size", 1)
        data["img_size"] = 2 * patch if isinstance(patch, int) and patch > 0 else 8
    return {k: v for k, v in data.items() if k in names}


def _dry_build(preset: ModelPreset, overrides: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory) so bad values fail before training.

    Data fields get small stand-ins; if the preset's defaults alone do not build that way,
    nothing is concluded (the task's real data decides).
    """
    import torch

    slots = {k: v for k, v in overrides.items() if k in preset.slots}
    fields = {k: v for k, v in overrides.items() if k not in preset.slots}

    def build(extra: dict[str, Any], slot_args: dict[str, Any]) -> None:
        values = {**preset.defaults, **extra}
        cfg = preset.config_cls(**{**values, **_stand_in(preset, values)})
        with torch.device("meta"):
            preset.model_cls(cfg, "relu", **slot_args)

    try:
        build({}, {})
    except Exception:  # noqa: BLE001 -- the defaults need the real data: nothing to conclude
        return
    try:
        build(fields, slots)
    except Exception as e:  # noqa: BLE001 -- any construction error is the overrides' fault
        given = ", ".join(f"model.{k}={v!r}" for k, v in overrides.items())
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"model {preset.name!r} cannot be built with {given}: {why}") from None


def _config(preset: ModelPreset, values: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(preset.config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TypeError(
            f"model {preset.name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(fields | set(preset.slots)))}"
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
    """Build preset ``name`` with activation ``act`` in every MLP block / activation site.

    ``overrides`` set fields of the preset's config and its layer slots (``norm_layer``,
    ``mlp_layer``, ``attn_score``: specs or factories, see :mod:`actlab.layers`).
    """
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
    elif preset.kind == "regression":
        pass  # in_features / out_features come from the task's data (in overrides)
    else:
        values.update(num_classes=num_classes, in_features=in_chans * img_size * img_size)
    slots = {k: overrides.pop(k) for k in list(overrides) if k in preset.slots}
    values.update(overrides)
    builder: Callable[..., nn.Module] = preset.model_cls
    return builder(_config(preset, values), act, **slots)
