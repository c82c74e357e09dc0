"""The activation zoo. Importing this package registers every family.

Families live one per file; composite elementwise ones share the lean/fused machinery in
:mod:`actlab.activations._fused`.
"""

from __future__ import annotations

from actlab.activations import classic, eafo, polycom, swish  # noqa: F401  (registration)
from actlab.activations._base import Activation, scalar
from actlab.activations._fused import (
    MODES as KERNEL_MODES,
)
from actlab.activations._fused import (
    check_kernel_mode,
    fuse_min_numel,
    get_kernel_mode,
    kernel_mode,
    kernel_unavailable,
    set_kernel_mode,
)
from actlab.activations.classic import (
    CELU,
    ELU,
    GELU,
    SELU,
    FATReLU,
    GELUTanh,
    Hardswish,
    LeakyReLU,
    Mish,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from actlab.activations.eafo import EAFO, WAFBC, CRReLU
from actlab.activations.polycom import PolyReLU, ReLU2
from actlab.activations.swish import Swish

__all__ = [
    "Activation",
    "CELU",
    "CRReLU",
    "EAFO",
    "ELU",
    "FATReLU",
    "GELU",
    "GELUTanh",
    "Hardswish",
    "LeakyReLU",
    "Mish",
    "PReLU",
    "PolyReLU",
    "ReLU",
    "ReLU2",
    "SELU",
    "Sigmoid",
    "SiLU",
    "Softplus",
    "Swish",
    "Tanh",
    "WAFBC",
    "KERNEL_MODES",
    "check_kernel_mode",
    "fuse_min_numel",
    "get_kernel_mode",
    "kernel_mode",
    "kernel_unavailable",
    "scalar",
    "set_kernel_mode",
]
