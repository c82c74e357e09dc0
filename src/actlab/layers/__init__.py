"""Shaped layers: norms, MLP blocks, attention-score functions, one registry (``LAYERS``).

    create_layer("rmsnorm", num_features=64)              # a registered name
    create_layer("glu(act='silu')", in_features=64, hidden_features=128, out_features=64)
    create_layer("layernorm")                             # sized from the first input
    list_layers(kind="norm")                              # ['batchnorm', 'layernorm', 'rmsnorm']

A layer family is one module of this package with a docstring giving its formula and paper;
adding a module registers its layers (``LAYERS`` imports every module of the package before
the first lookup) and opts them into tests/layers/test_layer_matrix.py. The reference models
take these through their ``norm_layer``, ``mlp_layer`` and ``attn_score`` slots.
"""

from __future__ import annotations

from actlab.layers._kan_native import release_kept_buffers
from actlab.layers._registry import (
    KINDS,
    LAYERS,
    LayerInfo,
    LayerSpec,
    LayerSpecError,
    act_module,
    canonical_layer_spec,
    create_layer,
    get_layer_info,
    list_layers,
    register_layer,
)
from actlab.layers.attn_score import ReLUAttn, SigmoidAttn, Softmax
from actlab.layers.basic import identity
from actlab.layers.mlp import GluMlp, Mlp
from actlab.layers.norm import LazyLayerNorm, LazyRMSNorm, batchnorm, layernorm, rmsnorm

__all__ = [
    "KINDS",
    "LAYERS",
    "GluMlp",
    "LayerInfo",
    "LayerSpec",
    "LayerSpecError",
    "LazyLayerNorm",
    "LazyRMSNorm",
    "Mlp",
    "ReLUAttn",
    "SigmoidAttn",
    "Softmax",
    "act_module",
    "batchnorm",
    "canonical_layer_spec",
    "create_layer",
    "get_layer_info",
    "identity",
    "layernorm",
    "list_layers",
    "register_layer",
    "release_kept_buffers",
    "rmsnorm",
]
