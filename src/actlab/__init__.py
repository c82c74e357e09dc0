"""actlab: design, evaluate, search, probe and sparsify neural-network activation functions.

Public API (everything else is an implementation detail):

    create_activation, register_activation, list_activations, get_activation_info
    swap_activations, SwapReport          model surgery on any nn.Module
    replace_modules, ReplacementReport    the primitive: replace any modules, all or nothing
    identify_activation                   what kind of activation a module is
    probe                                 streaming activation statistics from hooks
    param_groups                          weight-decay groups honouring activation options
    set_kernel_mode, kernel_mode          choose auto / compiled / eager / reference kernels

Importing actlab computes nothing and touches no GPU; heavy optional dependencies
(transformers, matplotlib, ...) are imported lazily where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actlab._lazy import lazy_exports
from actlab._version import __version__ as __version__
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

if TYPE_CHECKING:
    from actlab.probes import probe
    from actlab.surgery import (
        ReplacementReport,
        SwapReport,
        identify_activation,
        replace_modules,
        swap_activations,
    )


__all__ = [
    "ActivationInfo",
    "ActivationSpecError",
    "ReplacementReport",
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
    "replace_modules",
    "set_kernel_mode",
    "swap_activations",
]

# lazy re-exports keep `import actlab` cheap (surgery and probes load on first use)
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "swap_activations": "actlab.surgery",
        "SwapReport": "actlab.surgery",
        "replace_modules": "actlab.surgery",
        "ReplacementReport": "actlab.surgery",
        "identify_activation": "actlab.surgery",
        "probe": "actlab.probes",
    },
)
