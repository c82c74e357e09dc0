"""Native CPU kernels for PolyNorm and EvoNorm-B0/S0: C++ with ATen's vectorised math.

Each layer's forward is one fused kernel (row / channel / group statistics and the output in
two passes over data that stays in cache) and so is its backward (the sums, then the input
gradient; parameter gradients reduced in a fixed order, so results do not depend on the
thread count). The differentiable ops ``torch.ops.actlab_norm.polynorm`` / ``evonorm_b0`` /
``evonorm_s0`` are ``torch::autograd::Function`` s in C++ (no Python per call); formulas and
numerical notes are in ``csrc/norm_polynorm.cpp``, ``csrc/norm_evonorm.cpp`` and
``csrc/norm_common.h``.

They apply to CPU float32 / float64 tensors (:func:`ops_for`); other dtypes, CUDA, and a
machine where the library cannot be built use the layers' torch paths, which stay the tested
plain twins. Build, cache, ISA (``ACTLAB_NATIVE_ISA``) and fallback are :mod:`actlab._ext`'s:
without a C++ compiler the first use warns once and the torch paths run; ``ACTLAB_NATIVE=0``
turns the kernels off without a warning. The kernels have no second derivative: a backward
with ``create_graph=True`` through them raises one line naming ``fused=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from actlab._ext import Extension, try_load
from actlab.layers._native_common import status_functions

__all__ = ["KERNELS", "available", "kernel_isa", "ops_for", "unavailable_reason"]

KERNELS = Extension(
    name="actlab_norm",
    package="actlab.layers",
    sources=("csrc/norm_polynorm.cpp", "csrc/norm_evonorm.cpp"),
    headers=("csrc/norm_common.h",),
    namespace="actlab_norm",
    ops=tuple(
        k + suffix
        for k in ("polynorm", "evonorm_b0", "evonorm_s0")
        for suffix in ("_fwd", "_bwd", "")
    )
    + ("isa",),
    openmp=True,
    title="native PolyNorm / EvoNorm kernels",
    fallback="PolyNorm and EvoNorm use their torch paths",
)

_DTYPES = (torch.float32, torch.float64)


available, unavailable_reason, kernel_isa = status_functions(KERNELS)


def ops_for(x: Tensor) -> Any | None:
    """``torch.ops.actlab_norm`` when the kernels apply to ``x`` (a non-empty CPU float32 /
    float64 tensor, outside ``torch.compile`` and TorchScript, library loaded), else None."""
    if (
        not x.is_cpu
        or x.dtype not in _DTYPES
        or x.numel() == 0
        or torch.compiler.is_compiling()
        or torch.jit.is_scripting()
    ):
        return None
    lib = try_load(KERNELS)
    return None if lib is None else lib.ops
