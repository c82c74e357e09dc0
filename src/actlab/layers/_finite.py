"""The finiteness checks layers run at every forward: the parameters of MoE, EvoNorm, PolyNorm
and Fourier-KArAt (a NaN or inf there raises one line naming the layer), and the output of a
KAN block (which checks its parameters only when the output is not finite).

**CPU.** :func:`finite_now` answers in one native call for float32 / float64 tensors
(``csrc/finite.cpp``: the sum of ``v * 0`` over the values is 0 unless one is inf or NaN; one
read of each value, no overflow): MoE's 17 parameter tensors at D 64 take ~8 us where
``isfinite(p).all()`` per tensor took ~126 us (AVX-512 Xeon, 1 thread). Other dtypes, or a
machine without a C++ compiler: torch's ``isfinite``.

**CUDA and other devices.** There the answer is a device value, and reading it (``bool``) makes
the host wait until the device has run everything queued, once per layer per forward; the
per-tensor check also costs two kernel launches a tensor. So off the CPU a layer checks on its
first call, every :data:`CHECK_EVERY`-th call after it, and whenever a watched tensor was
replaced (another data pointer or device: new weights assigned, the module moved): a parameter
that turns non-finite in training raises the same one-line error within :data:`CHECK_EVERY`
forwards, its NaN outputs showing in the loss meanwhile. Under ``torch.compile`` every call
checks, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from actlab._ext import Extension, try_load
from actlab.layers._native_common import status_functions

__all__ = [
    "CHECK_EVERY",
    "KERNELS",
    "all_finite",
    "available",
    "checked_finite",
    "due",
    "finite_now",
    "kernel_isa",
    "unavailable_reason",
]

KERNELS = Extension(
    name="actlab_finite",
    package="actlab.layers",
    sources=("csrc/finite.cpp",),
    namespace="actlab_finite",
    ops=("all_finite", "isa"),
    openmp=False,
    title="native finiteness check",
    fallback="the layers check their parameters with torch's isfinite",
)

CHECK_EVERY = 50  # off the CPU: calls between two checks of a layer (see the module docstring)
_DTYPES = (torch.float32, torch.float64)

available, unavailable_reason, kernel_isa = status_functions(KERNELS)


def all_finite(tensors: Sequence[Tensor]) -> bool | None:
    """Whether every value of ``tensors`` is finite, in one native call (CPU float32 / float64
    tensors), or None when the native check does not apply (another device or dtype, inside
    ``torch.compile`` or TorchScript, no library, no tensors)."""
    if not tensors:
        return None
    for t in tensors:  # a loop, not any(...): this runs at every layer call
        if not t.is_cpu or t.dtype not in _DTYPES:
            return None
    if torch.compiler.is_compiling() or torch.jit.is_scripting():
        return None
    lib = try_load(KERNELS)
    return None if lib is None else bool(lib.ops.all_finite(list(tensors)))


def finite_now(tensors: Sequence[Tensor]) -> bool:
    """Whether every value of ``tensors`` is finite, answered now (natively on the CPU where
    :func:`all_finite` applies, else with torch: a host sync on a device)."""
    ok = all_finite(tensors)
    if ok is None:
        ok = not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
    return ok


def _on_cpu(tensors: Sequence[Tensor]) -> bool:
    for t in tensors:  # a loop, not all(...): this runs at every layer call
        if not t.is_cpu:
            return False
    return True


def due(module: nn.Module, tensors: Sequence[Tensor], *, watch: bool = True) -> bool:
    """Whether ``module`` checks ``tensors`` at this call: always when they are all on the CPU
    (or inside ``torch.compile``); on a device at its first call, every :data:`CHECK_EVERY`-th
    call after it and, with ``watch``, when one of them was replaced since the last check (its
    data pointer or device changed; pass ``watch=False`` for tensors that are new every call,
    such as an output). The count lives in the module's ``__dict__``, outside its state_dict."""
    if _on_cpu(tensors) or torch.compiler.is_compiling():
        return True
    state = module.__dict__
    calls = state.get("_finite_calls", 0)
    state["_finite_calls"] = calls + 1
    key = tuple((t.data_ptr(), t.device) for t in tensors) if watch else None
    if calls % CHECK_EVERY == 0 or key != state.get("_finite_key"):
        state["_finite_key"] = key
        return True
    return False


def checked_finite(module: nn.Module, tensors: Sequence[Tensor], *, watch: bool = True) -> bool:
    """False only when ``module`` checks ``tensors`` at this call (:func:`due`) and finds a NaN
    or inf (:func:`finite_now`): what a layer's forward asks before raising its one-line error."""
    return not due(module, tensors, watch=watch) or finite_now(tensors)
