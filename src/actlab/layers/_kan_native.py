"""Native CPU kernels for the KAN layers: the basis expansion fused with its backward.

ReLU-KAN and S-KAN layers are ``y = W vec(B(u)) + b`` with ``u = tanh(x)`` (or ``x``) and G
basis functions per input node (every KAN op transposes x in tiles with the kernels' own float
tanh, within 1.23 ulp, not ATen's: MKL's kernel for it is its SSE one on AMD CPUs;
``kan_input`` exposes that step for tests). The ops ``torch.ops.actlab_kan.relu_kan_layer`` and
``s_kan_layer`` compute the basis in the transposed layout ``(in G, N)`` (one contiguous row
per (node, function), vector lanes along the rows N) and contract it with one GEMM; their
backward is ``torch::autograd::Function`` in C++ (no Python per call): one GEMM for the basis
gradient, one kernel pass that recomputes the basis and its derivatives (input gradient,
ReLU-KAN phase sums, S-KAN mixing-weight sums), one GEMM for the weight gradient. Only
``u`` (in, N) is saved between forward and backward, never the expanded basis; with
``tau > 0`` ``s_kan_layer`` takes the mixing logits and applies softmax(logits / tau) over the
spaces itself, and with ``clock`` (the layer's ``step`` buffer, while it trains unpruned) its
backward advances the schedule and prunes into ``chosen`` at ``prune_at``. AF-KAN's
``af_kan_reduce`` returns the two contractions over G (``f . w``, ``sum_G f``) and the min /
max of f without writing f (N, in, G); its backward recomputes f with its derivatives in one
pass and finds the values tied with the min / max there (acts SiLU and GELU:
:func:`act_code`).
``af_kan_layer`` is the whole AF-KAN layer: that reduction, one pass for the min-max scale,
softmax with temperature, LayerNorm and act, and the projection (``csrc/kan_af.cpp``); for
float32 tanh inputs from 8,192 values it takes the contractions from per-call Chebyshev
series instead (``csrc/kan_af_series.cpp``, its argument ``knots`` > 0: the most cells of
the table that bounds the min / max; 0 turns the path off), and ``af_series_extremes``
exposes that path's exact min / max search for tests. The GEMMs are MKL's (ATen), except
products of at most 32,768 multiply-adds (a function-fitting net's layers), which run as one
serial loop of the library's own (``gemm_out``; MKL's fixed cost per call dominates there;
``small_gemm`` exposes it for tests).
Formulas and numerical notes are in ``csrc/kan_kernels.cpp``.

They apply to CPU float32 / float64 inputs with parameters of the same dtype, outside
``torch.compile``, TorchScript and autocast (:func:`ops_for`); CUDA, other dtypes and machines
where the library cannot be built use the layers' torch paths, which stay the tested plain
twins (``fused=False`` on a layer selects that path). Build, cache, ISA
(``ACTLAB_NATIVE_ISA``) and fallback are :mod:`actlab._ext`'s: without a C++ compiler the
first use warns once and the torch paths run; ``ACTLAB_NATIVE=0`` turns the kernels off
without a warning. The kernels have no second derivative: a backward with
``create_graph=True`` through them raises one line naming ``fused=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from actlab._ext import Extension, loaded, try_load
from actlab.layers._native_common import status_functions

__all__ = [
    "FUNC_CODES",
    "KERNELS",
    "NORM_CODES",
    "SPACE_CODES",
    "act_code",
    "available",
    "kernel_isa",
    "ops_for",
    "release_kept_buffers",
    "unavailable_reason",
]

KERNELS = Extension(
    name="actlab_kan",
    package="actlab.layers",
    sources=(
        "csrc/kan_kernels.cpp",
        "csrc/kan_relu_s.cpp",
        "csrc/kan_af.cpp",
        "csrc/kan_af_series.cpp",
    ),
    headers=("csrc/kan_common.h", "csrc/kan_af.h"),
    namespace="actlab_kan",
    ops=(
        "relu_basis_t",
        "relu_basis_t_bwd",
        "s_basis_t",
        "s_basis_t_bwd",
        "relu_kan_layer",
        "s_kan_layer",
        "af_reduce_t",
        "af_kan_reduce",
        "af_kan_layer",
        "af_series_extremes",
        "isa",
    ),
    openmp=True,
    title="native KAN kernels",
    fallback="ReLU-KAN, S-KAN and AF-KAN use their torch paths",
)

SPACE_CODES = {"bspline": 0, "rbf": 1, "chebyshev": 2, "relu": 3}  # csrc/kan_kernels.cpp Space
FUNC_CODES = {"quad1": 0, "quad2": 1, "sum": 2, "prod": 3, "sum_prod": 4, "cubic1": 5, "cubic2": 6}
NORM_CODES = {"batch": 0, "sample": 1, "none": 2}  # AF-KAN func_norm
_DTYPES = (torch.float32, torch.float64)


available, unavailable_reason, kernel_isa = status_functions(KERNELS)


def ops_for(x: Tensor, *params: Tensor | None) -> Any | None:
    """``torch.ops.actlab_kan`` when the kernels apply to input ``x`` and ``params`` (CPU,
    float32 / float64, one dtype; outside ``torch.compile``, TorchScript and CPU autocast;
    library loaded), else None."""
    dtype = x.dtype
    if not x.is_cpu or dtype not in _DTYPES:  # is_cpu: ~50 ns; device.type: ~300 ns
        return None
    for p in params:  # a loop, not any(...): this runs at every layer call
        if p is not None and (p.dtype != dtype or not p.is_cpu):
            return None
    if torch.compiler.is_compiling() or torch.jit.is_scripting():
        return None
    if torch.is_autocast_enabled("cpu"):
        return None
    lib = try_load(KERNELS)
    return None if lib is None else lib.ops


def release_kept_buffers() -> int:
    """Free the blocks the KAN ops hold for reuse and return their bytes.

    AF-KAN's forward keeps its tail values for the backward in buffers that are recycled
    between steps (a fresh multi-MB allocation per step costs page faults); up to 1 GiB of
    freed ones stay held by the process for the next step. Call this after training (say,
    before long inference) to give them back; buffers still in use return to the pool when
    their graphs are freed. 0 when the kernels were never loaded (nothing is built here)."""
    lib = loaded(KERNELS)
    return 0 if lib is None else int(lib.ops.release_kept())


def act_code(act: torch.nn.Module) -> int | None:
    """0 if ``act`` computes SiLU, 1 if exact (erf) GELU, None otherwise (the AF-KAN kernel
    knows these two): a module without parameters or buffers, probed in float64 on a grid."""
    if any(True for _ in act.parameters()) or any(True for _ in act.buffers()):
        return None
    z = torch.linspace(-8.0, 8.0, 161, dtype=torch.float64)
    try:
        with torch.no_grad():
            out = act(z.clone())
    except Exception:  # noqa: BLE001 -- an activation that cannot take this input: no kernel
        return None
    if not isinstance(out, Tensor) or out.shape != z.shape or out.dtype != z.dtype:
        return None
    for code, ref in ((0, torch.nn.functional.silu(z)), (1, torch.nn.functional.gelu(z))):
        if torch.allclose(out, ref, rtol=1e-12, atol=1e-14):
            return code
    return None
