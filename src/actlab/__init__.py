"""actlab: design, evaluate, search, probe and sparsify neural-network activation functions.

Public API (everything else is an implementation detail):

    create_activation, register_activation, list_activations, get_activation_info
    swap_activations, SwapReport          model surgery on any nn.Module
    identify_activation                   what kind of activation a module is
    probe                                 streaming activation statistics from hooks
    param_groups                          weight-decay groups honouring activation options
    set_kernel_mode, kernel_mode          choose auto / compiled / eager / reference kernels

Importing actlab computes nothing and touches no GPU; heavy optional dependencies
(transformers, matplotlib, ...) are imported lazily where they are used.
"""

from __future__ import annotations

from typing import Any

from actlab.activations import get_kernel_mode, kernel_mode, set_kernel_mode
from actlab.optim import param_groups
from actlab.registry import (
    ActivationInfo,
    ActivationSpecError,
    create_activation,
    get_activation_info,
    list_activations,
    register_activation,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationInfo",
    "ActivationSpecError",
    "SwapReport",
    "create_activation",
    "get_activation_info",
    "get_kernel_mode",
    "identify_activation",
    "kernel_mode",
    "list_activations",
    "param_groups",
    "probe",
    "register_activation",
    "set_kernel_mode",
    "swap_activations",
]

_LAZY = {
    "swap_activations": "actlab.surgery",
    "SwapReport": "actlab.surgery",
    "identify_activation": "actlab.surgery",
    "probe": "actlab.probes",
}


def __getattr__(name: str) -> Any:  # lazy re-exports keep `import actlab` cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actlab' has no attribute {name!r}")
