"""Models: small readable reference models and loaders for real pretrained models.

Reference models (each takes an activation spec, one instance per activation site):

    build_model(name, act, num_classes=..., in_chans=..., img_size=...)   named presets
    ViT, ResNetCifar, MLP, CharGPT, FitNet (+ their *Config dataclasses)  see list_models()

Pretrained models installed offline: see :mod:`.pretrained`. ``export_gguf(model, path)``
writes a HF Llama / Gemma-3 model as a float GGUF file for llama.cpp.
"""

from __future__ import annotations

from actlab.models._gguf_export import GGUFExportError, export_gguf
from actlab.models.char_gpt import CharGPT, GPTConfig
from actlab.models.factory import (
    ModelPreset,
    UnknownModelError,
    build_model,
    get_model_preset,
    list_models,
)
from actlab.models.fit import FitConfig, FitNet, match_hidden
from actlab.models.mlp import MLP, MLPConfig
from actlab.models.pretrained import (
    ModelUnavailableError,
    embed_sentences,
    gemma3_gguf_path,
    load_gemma3,
    load_minilm,
    load_smollm2,
)
from actlab.models.resnet import ResNetCifar, ResNetConfig
from actlab.models.vit import ViT, ViTConfig

__all__ = [
    "CharGPT",
    "FitConfig",
    "FitNet",
    "GGUFExportError",
    "GPTConfig",
    "MLP",
    "MLPConfig",
    "ModelPreset",
    "ModelUnavailableError",
    "ResNetCifar",
    "ResNetConfig",
    "UnknownModelError",
    "ViT",
    "ViTConfig",
    "build_model",
    "embed_sentences",
    "export_gguf",
    "gemma3_gguf_path",
    "get_model_preset",
    "list_models",
    "load_gemma3",
    "load_minilm",
    "load_smollm2",
    "match_hidden",
]
